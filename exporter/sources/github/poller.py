"""One repository's poll: list the runs in the window, record each newly completed attempt exactly
once (facts → observations → store), then run the enrichment tasks those attempts started, and
track pending and executing runs."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pydantic import BaseModel, Field

from exporter.analysis.pipeline import IncompleteError, RunFacts, job_facts
from exporter.config import GitHubConfig, RepositoryConfig
from exporter.logging import get_logger
from exporter.observations import (
    RepositoryPolicy,
    attempt_key,
    attempt_units,
    job_key,
    job_unit,
    skipped_attempt_unit,
    task_done_unit,
)
from exporter.payloads.github import WorkflowJobEvent, WorkflowRun, WorkflowRunEvent
from exporter.sources.errors import (
    ClientError,
    MalformedResponse,
    NotFound,
    RateLimited,
    SourceError,
    Stopping,
    TooLarge,
)
from exporter.sources.github.actions_cache import ActionsCacheStorage
from exporter.sources.github.client import GitHubClient
from exporter.sources.github.enrichers import Enricher
from exporter.sources.github.live import LiveState
from exporter.sources.github.runs import AttemptFetcher, RunLister, RunWindow, attempts_to_observe
from exporter.sources.github.workflows import WorkflowLabels
from exporter.store import PendingTask, StateRecord, Store
from exporter.store.db import StateWriteError

log = get_logger(__name__)

# Tries of an attempt whose payload is malformed, and of an enrichment task, across polls.
MAX_TRIES = 3
# Enrichment tasks run per poll, and the seconds they may take (a poll holds its repository:
# a backlog of slow downloads must not hold it for hours); the rest wait for the next poll.
TASKS_PER_POLL = 200
# Open jobs of runs the listing does not show are checked by id after this long, a few per poll.
UNLISTED_AFTER = 600.0
UNLISTED_PER_POLL = 10
TASK_SECONDS = 120.0
_PERMANENT = ("not_found", "too_large", "redirect_refused", "malformed")


class SuccessRef(BaseModel):
    head_sha: str
    completed_at: float


class LatestSuccess(StateRecord):
    """The latest successful run per workflow and branch: its head_sha fills image tag templates."""

    NAME = "latest_success"
    latest_success: dict[str, SuccessRef] = Field(default_factory=dict)


class AttemptTries(StateRecord):
    """Malformed attempts tried so far (key → tries); bounded, oldest dropped."""

    NAME = "attempt_tries"
    tries: dict[str, int] = Field(default_factory=dict)


def latest_success_key(workflow: str, branch: str) -> str:
    return f"{workflow}|{branch}"


@dataclass
class PollResult:
    runs_listed: int = 0
    attempts_observed: int = 0
    skipped: int = 0
    pages: int = 0
    pages_cached: int = 0
    tasks_done: int = 0


class RepositoryPoller:
    def __init__(
        self,
        repo: RepositoryConfig,
        github: GitHubConfig,
        client: GitHubClient,
        store: Store,
        policy: RepositoryPolicy,
        *,
        clock: Callable[[], float] = time.time,
        enrichers: Sequence[Enricher] = (),
        cache_storage: ActionsCacheStorage | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.repo = repo
        self.github = github
        self.client = client
        self.store = store
        self.policy = policy
        self.clock = clock
        self.source = policy.source
        self.lister = RunLister(repo.name, github, client, clock)
        self.fetcher = AttemptFetcher(repo.name, github, client, store, clock)
        self.enrichers = {e.kind: e for e in enrichers}
        self.cache_storage = cache_storage
        self.stop = stop or threading.Event()
        self.live = LiveState(store, repo.name, policy.limits)
        self.workflows = WorkflowLabels(
            store,
            self.source,
            (policy.max_workflows, policy.series_ttl),
            policy.named_workflows,
            lambda source: client.skip(source, "workflow_folded"),
            clock=clock,
        )
        # Held by a poll and by a workflow_run webhook of this repository (which fetches and
        # records an attempt): one at a time.
        self.lock = threading.RLock()
        # Held while enrichments run (by a poll, or by the webhook side's enrichment thread, which
        # must not hold the poll's lock for minutes of downloads): one runner at a time, the
        # other skips them.
        self._tasks = threading.Lock()

    # -- the poll -----------------------------------------------------------------------------------
    def poll(self) -> PollResult:
        with self.lock:
            result = self._poll()
        # Enrichments (minutes of downloads at worst) run outside the poll's lock: this
        # repository's run events don't wait for them.
        result.tasks_done = self.run_tasks()
        return result

    def _poll(self) -> PollResult:
        result = PollResult()
        now = self.clock()
        window = self.store.records.get(self.source, RunWindow)
        start = self.lister.window_start(window, now)
        listing = self.lister.list(start)
        result.runs_listed, result.skipped = len(listing.runs), listing.malformed
        result.pages, result.pages_cached = listing.pages, listing.pages_cached
        runs = [self.workflows.run(r) for r in listing.runs if self.wanted(r)]
        self.live.listed(runs, now, start, self.github.lookback)
        self.live.close_jobs(runs, now, self.github.lookback)
        oldest_open = self.live.oldest_open_run(now - self.github.lookback)
        for run in sorted(runs, key=lambda r: (r.created_at or 0.0, r.id)):
            if self.stop.is_set():
                break
            self._observe_run(run, result)
        self._check_unlisted({run.id for run in runs}, now, result)
        watermark = min(
            oldest_open if oldest_open is not None else now, now - self.github.rerun_window
        )
        self.store.records.put(
            self.source, RunWindow(watermark=watermark, last_poll=now, window_start=start)
        )
        if self.cache_storage is not None:
            self.cache_storage.poll_if_due(now)
        return result

    def _check_unlisted(self, listed: set[int], now: float, result: PollResult) -> None:
        """Jobs still open for a while whose run the listing does not show: a re-run of an old
        run whose completion webhook was lost would otherwise stay open (and unrecorded) until
        the lookback. Their run attempts are asked for by id, a few per poll; a completed one is
        recorded and its jobs closed."""
        stale = self.live.unlisted(listed, now - UNLISTED_AFTER)
        # A different few each poll when there are more: none waits for ever behind the others.
        for run_id, number in random.sample(stale, min(len(stale), UNLISTED_PER_POLL)):
            if self.stop.is_set():
                return
            try:
                run = self.workflows.run(self.fetcher.run_attempt(run_id, number))
            except NotFound:
                self.live.close_run(run_id, now)
                continue
            except SourceError as exc:
                # Never the poll's failure: the listed runs are recorded already; asked again
                # next poll (a rate limit or a stop ends this pass).
                self._skip(exc.reason, str(exc), run_id=run_id, attempt=number)
                if isinstance(exc, RateLimited | Stopping):
                    return
                continue
            if run.status != "completed":
                continue
            self._observe_run(run, result)
            # Closed only once recorded: an attempt the API still shows open (or answered
            # malformed) keeps its jobs open, so it is asked for again.
            if self.store.is_observed(*attempt_key(self.repo.name, run.id, run.run_attempt)):
                self.live.close_jobs([run], now, self.github.lookback)

    def wanted(self, run: WorkflowRun) -> bool:
        return self.repo.workflows is None or run.workflow in self.repo.workflows

    # -- attempts -----------------------------------------------------------------------------------------
    def _observe_run(self, run: WorkflowRun, result: PollResult) -> None:
        for number in attempts_to_observe(run):
            kind, key = attempt_key(self.repo.name, run.id, number)
            if self.store.is_observed(kind, key):
                continue
            try:
                facts = self.fetcher.facts(run, number)
            except IncompleteError as exc:
                log.debug(
                    "attempt not complete yet",
                    source=self.source,
                    run_id=run.id,
                    attempt=number,
                    detail=str(exc),
                )
                continue
            except NotFound:
                # Deleted run or expired data: never observable; remember it so it costs no more.
                self._skip("not_found", "run attempt vanished", run_id=run.id, attempt=number)
                self.store.commit(skipped_attempt_unit(self.repo.name, run.id, number, self.source))
                result.skipped += 1
                continue
            except (MalformedResponse, TooLarge, ClientError) as exc:
                # Deterministic answers (a bad body, a jobs page over its cap, a 4xx): retrying
                # this attempt on every poll would hold back the repository forever.
                self._malformed(key, run.id, number, str(exc), exc.reason)
                result.skipped += 1
                continue
            except SourceError:
                raise  # transient (5xx, transport, rate limit, auth): the poll fails, retried
            except Exception as exc:
                # A payload nothing anticipated: the same bounded tries, never a blocked repository.
                self._malformed(key, run.id, number, _detail(exc), "internal")
                result.skipped += 1
                continue
            if self.record(facts):
                result.attempts_observed += 1

    def record(self, facts: RunFacts) -> bool:
        """The attempt's unit, committed once; the latest success remembered for image tags."""
        applied = self.store.commit_many(attempt_units(facts, self.policy))[0]
        if applied and facts.result == "success":
            self._remember_success(facts)
        return applied

    def _malformed(
        self, key: str, run_id: int, number: int, detail: str, reason: str = "malformed"
    ) -> None:
        """A deterministic error: tried on a few polls (it might be a passing glitch), then given up."""
        self._skip(reason, detail, run_id=run_id, attempt=number)
        record = self.store.records.get(self.source, AttemptTries)
        tries = record.tries.get(key, 0) + 1
        if tries >= MAX_TRIES:
            record.tries.pop(key, None)
            self._skip(
                "attempt_given_up", f"malformed {tries} times", run_id=run_id, attempt=number
            )
            self.store.commit(skipped_attempt_unit(self.repo.name, run_id, number, self.source))
        else:
            record.tries[key] = tries
            for old in list(record.tries)[:-1000]:
                del record.tries[old]
        self.store.records.put(self.source, record)

    def _remember_success(self, facts: RunFacts) -> None:
        if not facts.head_sha:
            return
        record = self.store.records.get(self.source, LatestSuccess)
        key = latest_success_key(facts.workflow, facts.branch)
        current = record.latest_success.get(key)
        if current is None or current.completed_at <= facts.completed_at:
            record.latest_success[key] = SuccessRef(
                head_sha=facts.head_sha, completed_at=facts.completed_at
            )
            self.store.records.put(self.source, record)

    # -- webhooks -----------------------------------------------------------------------------------------
    def on_job(self, event: WorkflowJobEvent) -> str:
        """A workflow_job event: the live gauges, and a completed job recorded at once (exactly
        once per job and attempt, whoever sees it first). Returns the outcome."""
        # Not under the poll's lock: a long poll of this repository (a catch-up) must not hold
        # back job events, the latency-critical path; the store commits each unit once.
        job = self.workflows.job(event.workflow_job)
        key = job_key(self.repo.name, job.id, job.run_attempt)
        if job.status != "completed":
            if self.store.is_observed(*key):
                return "duplicate"  # a late event of a job already recorded
            self.live.job_event(job, self.clock())
            return "recorded"
        unit = job_unit(
            job_facts(job),
            job.workflow_name or "",
            job.head_branch or "",
            job.run_attempt,
            self.policy,
        )
        applied = self.store.commit(unit)
        self.live.job_event(job, self.clock())
        return "recorded" if applied else "duplicate"

    def on_run(self, event: WorkflowRunEvent) -> str:
        """A workflow_run event: the run gauge; a completed attempt recorded with its jobs (one
        jobs request, the workflow file when its cached graph can't map them); its enrichments
        become pending tasks (see `enrich`)."""
        run = self.workflows.run(event.workflow_run)
        with self.lock:
            self.live.run_event(run, self.clock())
            if run.status != "completed":
                return "recorded"
            if self.store.is_observed(*attempt_key(self.repo.name, run.id, run.run_attempt)):
                return "duplicate"
            try:
                facts = self.fetcher.facts(run, run.run_attempt)
            # Right after the event the API may still show a job open, or not know the run:
            # nothing to record now (the interface's `ignored`); the reconciler records it.
            except IncompleteError:
                return "ignored"
            except NotFound:
                log.warning("webhook for a run the API does not know (yet)", run_id=run.id)
                return "ignored"
            applied = self.record(facts)
            # Its enrichments (downloads of logs and reports) are run by `enrich`, called after
            # this returns, off the thread that records this repository's job events.
            return "recorded" if applied else "duplicate"

    def enrich(self) -> int:
        """The pending enrichments, now (after a run's webhook) rather than at the next poll;
        after the pass a poll may have in progress (which may not include the newest tasks)."""
        return self.run_tasks(wait=True)

    # -- enrichment tasks --------------------------------------------------------------------------------
    def run_tasks(
        self, limit: int = TASKS_PER_POLL, seconds: float = TASK_SECONDS, *, wait: bool = False
    ) -> int:
        """Pending enrichments of this repository, oldest first, for at most `seconds`; failures
        are counted and retried on later polls, at most MAX_TRIES times. One runner at a time
        (a poll, the webhook side's enrichment thread): a poll finding them running returns 0
        at once; with `wait`, after that pass."""
        held = self._tasks.acquire(timeout=seconds + 10) if wait else self._tasks.acquire(False)
        if not held:
            return 0
        try:
            return self._run_tasks(limit, seconds)
        finally:
            self._tasks.release()

    def _run_tasks(self, limit: int, seconds: float) -> int:
        done = 0
        deadline = self.clock() + seconds
        for pending in self.store.pending(self.source)[:limit]:
            if self.stop.is_set():
                break
            if self.clock() >= deadline:
                log.info("enrichments continue next poll", source=self.source, done=done)
                break
            enricher = self.enrichers.get(pending.task.kind)
            if enricher is None:
                continue  # that enrichment was switched off: the task waits
            try:
                applied = self.store.commit(enricher.run(pending.task))
            except (RateLimited, Stopping, StateWriteError):
                raise
            except Exception as exc:
                # Anything a hostile upstream provokes counts as a failed try: a task that can
                # never succeed must not block the rest.
                self._task_failed(pending, exc)
                continue
            if applied:
                enricher.count_skips()  # once, with the unit: a failed try counts none
            done += applied
        return done

    def _task_failed(self, pending: PendingTask, exc: Exception) -> None:
        task = pending.task
        cause = exc.reason if isinstance(exc, SourceError) else "internal"
        reason = f"{task.kind}_{cause}"
        permanent = cause in _PERMANENT
        tries = self.store.task_failed(task)
        self._skip(reason, _detail(exc), task=task.key, tries=tries)
        if permanent or tries >= MAX_TRIES:
            if not permanent:
                self._skip(f"{task.kind}_given_up", f"failed {tries} times", task=task.key)
            self.store.commit(task_done_unit(task))

    def _skip(self, reason: str, detail: str, **fields: object) -> None:
        self.client.skip(self.source, reason)
        log.warning("skipped", source=self.source, reason=reason, detail=detail, **fields)


def _detail(exc: Exception) -> str:
    return str(exc) if isinstance(exc, SourceError) else f"{type(exc).__name__}: {exc}"
