"""The `workflow` label of one repository, bounded: the names configured (the `workflows`
allowlist, targets) always stand; beyond them the first `limits.max_workflows` names seen are kept
(in the state store, so a restart keeps the same ones; a name not seen for `limits.series_ttl`
frees its slot) and later names fold into `other`. Workflow names come from payloads: a pull
request can add workflows, and each name costs series in every run, job and step metric."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

from pydantic import Field

from exporter.logging import get_logger
from exporter.payloads.github import WebhookJob, WorkflowRun
from exporter.store import StateRecord, Store

log = get_logger(__name__)
OTHER = "other"
# Folded names remembered so each is counted and logged once (beyond, counted again: harmless).
MAX_FOLDED_REMEMBERED = 1000


class WorkflowNames(StateRecord):
    NAME = "workflow_names"
    # name → when it was last seen (refreshed at most hourly): a name not seen for the series
    # TTL frees its slot (a renamed workflow, a pull request's one-off).
    seen: dict[str, float] = Field(default_factory=dict)


# How stale a name's last-seen moment may get before it is written again.
REFRESH = 3600.0


class WorkflowLabels:
    def __init__(
        self,
        store: Store,
        source: str,
        limits: tuple[int, float],
        configured: Iterable[str],
        on_fold: Callable[[str], None],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.source = source
        self.limit, self.ttl = limits
        self.configured = frozenset(configured)
        self.on_fold = on_fold
        self.clock = clock
        self._lock = threading.Lock()
        self._seen = dict(store.records.get(source, WorkflowNames).seen)
        self._folded: set[str] = set()

    def label(self, name: str) -> str:
        if name in self.configured or not name:  # "" (a job event without it) takes no slot
            return name
        with self._lock:
            now = self.clock()
            if name in self._seen:
                if now - self._seen[name] >= REFRESH:
                    self._remember(name, now)
                return name
            if len(self._seen) >= self.limit:
                self._expire(now)
            if len(self._seen) < self.limit:
                self._remember(name, now)
                return name
            self._fold(name)
            return OTHER

    def _remember(self, name: str, now: float) -> None:
        self._seen[name] = now
        self.store.records.put(self.source, WorkflowNames(seen=dict(self._seen)))

    def _expire(self, now: float) -> None:
        for name, seen in list(self._seen.items()):
            if seen < now - self.ttl:
                del self._seen[name]

    def _fold(self, name: str) -> None:
        if name not in self._folded and len(self._folded) < MAX_FOLDED_REMEMBERED:
            self._folded.add(name)
            log.warning(
                "workflow beyond limits.max_workflows folded into other",
                source=self.source,
                workflow=name,
                limit=self.limit,
            )
            self.on_fold(self.source)

    def run(self, run: WorkflowRun) -> WorkflowRun:
        label = self.label(run.workflow)
        return run if label == run.workflow else run.model_copy(update={"name": label})

    def job(self, job: WebhookJob) -> WebhookJob:
        name = job.workflow_name or ""
        label = self.label(name)
        return job if label == name else job.model_copy(update={"workflow_name": label})
