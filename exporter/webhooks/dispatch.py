"""After the answer: each accepted delivery is routed (not configured → ignored; another shard's
repository → forwarded; else queued) and recorded by worker threads — a repository's events in
the order they arrived, through the same poller that reconciles it."""

from __future__ import annotations

import contextlib
import queue
import threading
import time
import zlib
from collections.abc import Callable, Mapping
from typing import Protocol

from pydantic import ValidationError

from exporter.config import Config, ShardingConfig
from exporter.logging import get_logger
from exporter.payloads.github import WorkflowJobEvent, WorkflowRunEvent
from exporter.sources.errors import SourceError
from exporter.store import StateWriteError
from exporter.webhooks.receiver import Delivery, action_label, event_label

log = get_logger(__name__)
Count = Callable[[str, str, str], None]


class EventHandler(Protocol):
    """A repository's poller: it records what an event says, and runs the enrichments a
    completed run left pending."""

    def on_job(self, event: WorkflowJobEvent) -> str: ...

    def on_run(self, event: WorkflowRunEvent) -> str: ...

    def enrich(self) -> int: ...


# Only what recording needs: the parsed event (the fields the exporter reads), the delivery's
# event and action for the count — not the raw body or payload, which can be many KB each.
_Item = tuple[EventHandler, WorkflowJobEvent | WorkflowRunEvent, str, str] | None


class Dispatcher:
    """Bounded queues and their workers: job events on some, run events on others, a repository
    always on the same one of each (so its events are handled in arrival order). A run event may
    wait for a poll of its repository in progress; a job event never does, so job events never
    queue behind run events. A completed run's enrichments (downloads that can take minutes) run
    on a thread of their own. A full queue drops the event, counted: the reconciler catches up."""

    # A parsed completed job with its steps is ~14 KB in memory: 8 queues of 1,000 stay near
    # 100 MB at worst (the chart's memory limit is 300 Mi); beyond, the reconciler catches up.
    def __init__(self, count: Count, workers: int = 4, capacity: int = 1_000) -> None:
        self.count = count
        self._jobs: list[queue.Queue[_Item]] = [queue.Queue(capacity) for _ in range(workers)]
        self._runs: list[queue.Queue[_Item]] = [queue.Queue(capacity) for _ in range(workers)]
        self._stopping = threading.Event()
        self._threads = [
            threading.Thread(target=self._work, args=(q,), name=f"webhook-{kind}-{i}", daemon=True)
            for kind, queues in (("jobs", self._jobs), ("runs", self._runs))
            for i, q in enumerate(queues)
        ]
        self._enrichments = Enrichments(self._stopping)
        self._threads.append(self._enrichments.thread)

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Events still queued are dropped (the reconciler records them after the restart); the
        event in hand finishes, all workers within one `timeout`."""
        self._stopping.set()
        for q in (*self._jobs, *self._runs):
            with contextlib.suppress(queue.Full):
                q.put_nowait(None)
        self._enrichments.wake()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            if thread.is_alive():
                thread.join(max(0.0, deadline - time.monotonic()))

    def submit(
        self,
        repository: str,
        handler: EventHandler,
        event: WorkflowJobEvent | WorkflowRunEvent,
        delivery: Delivery,
    ) -> bool:
        queues = self._jobs if isinstance(event, WorkflowJobEvent) else self._runs
        index = zlib.crc32(repository.encode()) % len(queues)
        try:
            queues[index].put_nowait((handler, event, delivery.event, delivery.action))
        except queue.Full:
            return False
        return True

    def _work(self, items: queue.Queue[_Item]) -> None:
        while (item := items.get()) is not None and not self._stopping.is_set():
            handler, event, name, action = item
            outcome = self._handle(handler, event)
            self.count(name, action, outcome)
            if outcome == "recorded" and _completed_run(event):
                self._enrichments.submit(handler)

    @staticmethod
    def _handle(handler: EventHandler, event: WorkflowJobEvent | WorkflowRunEvent) -> str:
        try:
            if isinstance(event, WorkflowJobEvent):
                return handler.on_job(event)
            return handler.on_run(event)
        except SourceError as exc:
            log.warning(
                "webhook not recorded; the reconciler will", reason=exc.reason, error=str(exc)
            )
        except Exception as exc:  # a worker must survive anything a payload can provoke
            log.exception("webhook crashed; the reconciler will record it", error=str(exc))
        return "failed"


def _completed_run(event: WorkflowJobEvent | WorkflowRunEvent) -> bool:
    return isinstance(event, WorkflowRunEvent) and event.workflow_run.status == "completed"


class Enrichments:
    """Repositories with a newly recorded run, each queued once until its enrichments ran."""

    def __init__(self, stopping: threading.Event) -> None:
        self._stopping = stopping
        self._queued: list[EventHandler] = []
        self._ready = threading.Condition()
        self.thread = threading.Thread(target=self._work, name="webhook-enrich", daemon=True)

    def submit(self, handler: EventHandler) -> None:
        with self._ready:
            if not any(queued is handler for queued in self._queued):
                self._queued.append(handler)
                self._ready.notify()

    def wake(self) -> None:
        with self._ready:
            self._ready.notify_all()

    def _work(self) -> None:
        while True:
            with self._ready:
                self._ready.wait_for(lambda: self._queued or self._stopping.is_set())
                if self._stopping.is_set():
                    return
                handler = self._queued.pop(0)
            try:
                handler.enrich()
            except (SourceError, StateWriteError) as exc:
                log.warning("enrichments left for the next poll", error=str(exc))
            except Exception as exc:  # the thread must survive anything an upstream provokes
                log.exception("enrichments crashed; the next poll retries them", error=str(exc))


class Router:
    """Decides, for a verified delivery, what happens to it (the answer's outcome)."""

    def __init__(
        self,
        config: Config,
        handlers: Mapping[str, EventHandler],
        dispatcher: Dispatcher,
        forward: Callable[[int, Delivery], bool] | None = None,
    ) -> None:
        self.clock_skew = config.github.clock_skew if config.github else 300.0
        # Every repository of every shard: an event for one owned elsewhere is forwarded.
        github = config.github
        self.workflows = {r.name: r.workflows for r in github.repositories} if github else {}
        # GitHub's names ignore case: an event's name is matched to the configured spelling,
        # which keys the handlers, the series and the shard.
        self.names = {name.casefold(): name for name in self.workflows}
        self.unknown = UnknownNames()
        self.sharding: ShardingConfig = config.sharding
        self.handlers = handlers
        self.dispatcher = dispatcher
        self.forward = forward

    def __call__(self, delivery: Delivery) -> str:
        if delivery.event not in ("workflow_job", "workflow_run"):
            return "ignored"  # ping and anything not subscribed to
        try:
            event = _parse(delivery, self.clock_skew)
        except ValidationError as exc:
            log.warning(
                "webhook payload malformed",
                github_event=event_label(delivery.event),
                error=_first_error(exc),
            )
            return "rejected"
        repository = self._configured(event)
        if repository is None:
            return "ignored"
        handler = self.handlers.get(repository)
        if handler is None:
            return self._elsewhere(repository, delivery)
        if not self.dispatcher.submit(repository, handler, event, delivery):
            log.warning(
                "webhook queue full; the reconciler will record it",
                action=action_label(delivery.action),
            )
            return "failed"
        return "queued"

    def _configured(self, event: WorkflowJobEvent | WorkflowRunEvent) -> str | None:
        """The configured name of the event's repository, if its workflow is wanted too."""
        repository = self.names.get(event.repository.full_name.casefold())
        if repository is None:
            self.unknown.ignored(event.repository.full_name)
            return None
        return repository if self._wanted(repository, event) else None

    def _wanted(self, repository: str, event: WorkflowJobEvent | WorkflowRunEvent) -> bool:
        workflows = self.workflows[repository]
        if workflows is None:
            return True
        if isinstance(event, WorkflowJobEvent):
            return event.workflow_job.workflow_name in workflows
        return event.workflow_run.workflow in workflows

    def _elsewhere(self, repository: str, delivery: Delivery) -> str:
        """Another shard's repository: queued for forwarding to its owner once (never a forwarded
        event); the forwarder counts it `forwarded` or `failed` when the owner has answered."""
        if self.forward is None or delivery.forwarded:
            return "ignored"
        owner = self.sharding.shard_of(f"repo:{repository}")
        if not self.forward(owner, delivery):
            log.warning("webhook forward queue full; the owner's reconciler will record it")
            return "failed"
        return "queued"


class UnknownNames:
    """Logs the first event of each repository that is not configured (a typo in the config shows
    up at once); the names remembered are capped, since anyone with the secret chooses them."""

    def __init__(self, cap: int = 1000) -> None:
        self._seen: set[str] = set()
        self._cap = cap
        self._lock = threading.Lock()

    def ignored(self, repository: str) -> None:
        name = repository.casefold()
        with self._lock:
            if name in self._seen or len(self._seen) >= self._cap:
                return
            self._seen.add(name)
            full = len(self._seen) == self._cap
        log.info(
            "webhook ignored: repository not in github.repositories",
            repository=repository[:200],
            **({"note": f"the first {self._cap} such names logged, no more"} if full else {}),
        )


def _parse(delivery: Delivery, skew: float) -> WorkflowJobEvent | WorkflowRunEvent:
    """The typed event; timestamps beyond now + clock_skew are malformed, as in the API."""
    context = {"now": time.time(), "skew": skew}
    if delivery.event == "workflow_job":
        return WorkflowJobEvent.model_validate(delivery.payload, context=context)
    return WorkflowRunEvent.model_validate(delivery.payload, context=context)


def _first_error(exc: ValidationError) -> str:
    """The first failing field and why, as the poller logs a malformed payload."""
    errors = exc.errors()
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"])
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {first['msg']}{more}"
