"""One repository's poll: list runs in the watermark window, fetch the jobs of each newly completed
attempt, and record run, job and step facts exactly once; track pending and executing runs."""

from __future__ import annotations

import base64
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from exporter import metrics as m
from exporter.analysis.pipeline import ACTIVE_STATES, IncompleteError, RunFacts, run_facts
from exporter.analysis.workflow import WorkflowError, WorkflowGraph, parse_workflow
from exporter.config import GitHubConfig, RepositoryConfig
from exporter.logging import get_logger
from exporter.sources.errors import MalformedResponse, NotFound, SourceError
from exporter.sources.github.client import GitHubClient
from exporter.state import OTHER, Store, Transaction
from exporter.telemetry import Telemetry
from exporter.timeutil import format_timestamp, parse_timestamp

log = get_logger(__name__)

# GitHub answers at most 1,000 runs per filtered search: windows with more are split.
SEARCH_CAP = 1000
PER_PAGE = 100
# Window starts are rounded down to this, so the list URL (and its ETag) stays the same.
WINDOW_QUANTUM = 3600.0


@dataclass
class PollResult:
    runs_listed: int = 0
    attempts_observed: int = 0
    skipped: int = 0
    pages: int = 0
    pages_cached: int = 0
    active: dict[tuple[str, str], int] = field(default_factory=dict)


Recorder = Callable[[Transaction], None]


class CacheStorage(Protocol):
    def poll(self) -> dict[str, float]: ...


class Enricher(Protocol):
    """Adds facts from another payload (artifacts, logs) to a newly completed attempt. `prepare` does
    the I/O and returns what to record in the attempt's transaction. A transient SourceError leaves
    the attempt unobserved (retried next poll); permanent problems are counted skips inside."""

    def prepare(self, facts: RunFacts, run: dict[str, Any]) -> Recorder | None: ...


class RepositoryPoller:
    def __init__(
        self,
        repo: RepositoryConfig,
        github: GitHubConfig,
        client: GitHubClient,
        store: Store,
        telemetry: Telemetry | None = None,
        *,
        extra_branches: Iterable[str] = (),
        targets: dict[tuple[str, str], float] | None = None,
        clock: Callable[[], float] = time.time,
        enrichers: Iterable[Enricher] = (),
        cache_storage: CacheStorage | None = None,
    ) -> None:
        self.repo = repo
        self.github = github
        self.client = client
        self.store = store
        self.telemetry = telemetry
        self.clock = clock
        self.source = f"github:{repo.name}"
        self.branches = set(repo.branches) | set(extra_branches)
        # (workflow, branch) → the target's upper bound in seconds.
        self.targets = targets or {}
        self.enrichers = list(enrichers)
        self.cache_storage = cache_storage
        self._stopping = False

    def stop(self) -> None:
        self._stopping = True

    # -- the window -------------------------------------------------------------------------------
    def window_start(self, state: dict[str, Any], now: float) -> float:
        floor = now - self.github.lookback
        last_poll = state.get("last_poll")
        if last_poll is None:
            start = floor
        else:
            overlap = 2 * self.github.poll_interval + 300
            start = min(float(state.get("watermark", last_poll)), float(last_poll) - overlap)
        start = max(start, floor)
        return math.floor(start / WINDOW_QUANTUM) * WINDOW_QUANTUM

    def _list(self, start: float, end: float | None, result: PollResult) -> list[dict[str, Any]]:
        created = (
            f">={format_timestamp(start)}"
            if end is None
            else f"{format_timestamp(start)}..{format_timestamp(end)}"
        )
        path = f"/repos/{self.repo.name}/actions/runs"
        runs: list[dict[str, Any]] = []
        for index, (page, items) in enumerate(
            self.client.paginate(
                path, {"created": created, "per_page": PER_PAGE}, "workflow_runs", conditional=True
            )
        ):
            result.pages += 1
            result.pages_cached += page.cached
            total = page.data.get("total_count")
            if index == 0 and isinstance(total, int) and total >= SEARCH_CAP:
                stop = end if end is not None else max(self.clock(), start + 2)
                if stop - start >= 2:
                    middle = start + math.floor((stop - start) / 2)
                    return self._list(start, middle - 1, result) + self._list(middle, end, result)
            runs.extend(items)
        return runs

    # -- the poll ---------------------------------------------------------------------------------
    def poll(self) -> PollResult:
        result = PollResult()
        now = self.clock()
        state = self.store.get_source_state(self.source)
        start = self.window_start(state, now)
        runs = self._list(start, None, result)
        result.runs_listed = len(runs)
        oldest_open: float | None = None
        workflows_seen: set[str] = set()
        valid: list[tuple[float, dict[str, Any]]] = []
        for run in runs:
            run_id, status = run.get("id"), run.get("status")
            created = parse_timestamp(run.get("created_at"))
            if not isinstance(run_id, int) or not isinstance(status, str) or created is None:
                self._skip("malformed", f"run item without id/status/created_at: {run_id!r}")
                result.skipped += 1
                continue
            workflow = str(run.get("name") or "")
            if self.repo.workflows is not None and workflow not in self.repo.workflows:
                continue
            workflows_seen.add(workflow)
            if status != "completed":
                state_name = ACTIVE_STATES.get(status, "pending")
                key = (workflow, state_name)
                result.active[key] = result.active.get(key, 0) + 1
                oldest_open = created if oldest_open is None else min(oldest_open, created)
            valid.append((created, run))
        valid.sort(key=lambda item: (item[0], item[1]["id"]))
        for _, run in valid:
            if self._stopping:
                break
            self._observe_run(run, result)
        self._set_active(workflows_seen, result.active)
        watermark = min(
            oldest_open if oldest_open is not None else now, now - self.github.rerun_window
        )
        state = self.store.get_source_state(self.source)  # _graph may have updated it meanwhile
        state.update({"watermark": watermark, "last_poll": now, "window_start": start})
        self.store.set_source_state(self.source, state)
        self._poll_cache_storage(now)
        return result

    def _poll_cache_storage(self, now: float) -> None:
        """Actions cache usage on its own interval; its failure is a counted skip, not the poll's."""
        settings = self.repo.actions_cache
        if self.cache_storage is None or not settings.enabled:
            return
        state = self.store.get_source_state(self.source)
        if now - float(state.get("cache_polled_at", 0)) < settings.poll_interval:
            return
        # Success or not, the next attempt waits for the interval: a failing endpoint costs little.
        state["cache_polled_at"] = now
        self.store.set_source_state(self.source, state)
        try:
            self.cache_storage.poll()
        except SourceError as exc:
            self._skip(f"actions_cache_{exc.reason}", str(exc))

    def _remember_success(self, facts: RunFacts, run: dict[str, Any]) -> None:
        """The latest successful run per workflow and branch: its head_sha fills image tag
        templates (`{head_sha:7}`) for the registry poller."""
        sha = run.get("head_sha")
        if not isinstance(sha, str):
            return
        state = self.store.get_source_state(self.source)
        latest: dict[str, Any] = state.setdefault("latest_success", {})
        key = f"{facts.workflow}|{facts.branch}"
        if float(latest.get(key, {}).get("completed_at", 0)) <= facts.completed_at:
            latest[key] = {"head_sha": sha, "completed_at": facts.completed_at}
            self.store.set_source_state(self.source, state)

    def _set_active(self, workflows: set[str], active: dict[tuple[str, str], int]) -> None:
        """Both states of every workflow in the window, zeros included, so series don't flap."""
        names = workflows | {workflow for workflow, _ in active}
        values = {
            (workflow, state): float(active.get((workflow, state), 0))
            for workflow in names
            for state in ("pending", "executing")
        }
        self.store.set_gauges(
            m.RUN_ACTIVE,
            (self.repo.name,),
            {(self.repo.name, *key): value for key, value in values.items()},
        )

    def _skip(self, reason: str, message: str, **fields: Any) -> None:
        if self.telemetry is not None:
            self.telemetry.poll_errors.labels(self.source, reason).inc()
        log.warning("skipped", source=self.source, reason=reason, detail=message, **fields)

    def _observe_run(self, run: dict[str, Any], result: PollResult) -> None:
        run_id = int(run["id"])
        current = run.get("run_attempt")
        current = current if isinstance(current, int) and current >= 1 else 1
        last = current if run.get("status") == "completed" else current - 1
        for attempt in range(1, last + 1):
            key = f"{self.repo.name}/{run_id}/{attempt}"
            if self.store.is_observed("attempt", key):
                continue
            try:
                attempt_run = (
                    run
                    if attempt == current
                    else self.client.get_json(
                        f"/repos/{self.repo.name}/actions/runs/{run_id}/attempts/{attempt}"
                    )
                )
                if not isinstance(attempt_run, dict):
                    raise MalformedResponse(f"run {run_id} attempt {attempt} is not an object")
                jobs = self._jobs(run_id, attempt)
                graph = self._graph(attempt_run, jobs)
                facts = run_facts(self.repo.name, attempt_run, jobs, graph)
                recorders = [
                    r for e in self.enrichers if (r := e.prepare(facts, attempt_run)) is not None
                ]
            except IncompleteError as exc:
                log.debug(
                    "attempt not complete yet",
                    source=self.source,
                    run_id=run_id,
                    attempt=attempt,
                    detail=str(exc),
                )
                continue
            except NotFound:
                # Deleted run or expired data: never observable; remember it so it costs no more.
                self._skip("not_found", "run attempt vanished", run_id=run_id, attempt=attempt)
                with self.store.transaction() as tx:
                    tx.mark_observed("attempt", key, self.source, self.clock())
                result.skipped += 1
                continue
            if self._record(key, facts, recorders):
                result.attempts_observed += 1
                if facts.result == "success":
                    self._remember_success(facts, attempt_run)

    def _jobs(self, run_id: int, attempt: int) -> list[dict[str, Any]]:
        jobs: list[dict[str, Any]] = []
        path = f"/repos/{self.repo.name}/actions/runs/{run_id}/attempts/{attempt}/jobs"
        for _, items in self.client.paginate(path, {"per_page": PER_PAGE}, "jobs"):
            jobs.extend(items)
        return jobs

    # -- the workflow file ----------------------------------------------------------------------
    def _graph(self, run: dict[str, Any], jobs: list[dict[str, Any]]) -> WorkflowGraph | None:
        """The needs: graph of the run's workflow file, fetched at the run's head_sha only when the
        cached graph can't map the run's jobs or is older than workflow_refresh (and the commit
        differs); parsed graphs are cached by blob sha."""
        raw_path = run.get("path")
        head_sha = run.get("head_sha")
        if not isinstance(raw_path, str) or not raw_path or not isinstance(head_sha, str):
            return None
        path = raw_path.split("@", 1)[0]
        state = self.store.get_source_state(self.source)
        workflows: dict[str, Any] = state.setdefault("workflows", {})
        blobs: dict[str, Any] = state.setdefault("blobs", {})
        entry = workflows.get(path)
        names = [str(job.get("name") or "") for job in jobs]
        now = self.clock()
        graph = (
            WorkflowGraph.from_json(blobs[entry["blob"]])
            if entry and entry.get("blob") in blobs
            else None
        )
        if entry is not None:
            mapped = graph is not None and all(graph.resolve(n) is not None for n in names)
            fresh = now - float(entry.get("fetched_at", 0)) < self.github.workflow_refresh
            if (mapped or graph is None) and (fresh or entry.get("head_sha") == head_sha):
                return graph
        try:
            body = self.client.get_json(
                f"/repos/{self.repo.name}/contents/{path}", {"ref": head_sha}
            )
            if not isinstance(body, dict) or not isinstance(body.get("content"), str):
                raise MalformedResponse(f"contents of {path} is not a file")
            blob = str(body.get("sha") or "")
            if blob not in blobs:
                text = base64.b64decode(body["content"], validate=False)
                blobs[blob] = parse_workflow(text).to_json()
                # Keep the few most recent blobs only.
                for old in list(blobs)[:-8]:
                    del blobs[old]
            workflows[path] = {"blob": blob, "fetched_at": now, "head_sha": head_sha}
            graph = WorkflowGraph.from_json(blobs[blob])
        except (SourceError, WorkflowError, ValueError) as exc:
            reason = getattr(exc, "reason", "workflow_unreadable")
            self._skip(
                reason if isinstance(exc, SourceError) else "workflow_unreadable",
                f"workflow file {path}: {exc}",
            )
            # Don't ask again for every run: the fallback is inference from timestamps.
            workflows[path] = {
                "blob": (entry or {}).get("blob"),
                "fetched_at": now,
                "head_sha": head_sha,
            }
        self.store.set_source_state(self.source, state)
        return graph

    # -- recording --------------------------------------------------------------------------------
    def branch_label(self, branch: str) -> str:
        return branch if branch in self.branches else OTHER

    def _record(self, key: str, facts: RunFacts, recorders: Iterable[Recorder] = ()) -> bool:
        repo, workflow = self.repo.name, facts.workflow
        branch = self.branch_label(facts.branch)
        at = facts.completed_at
        with self.store.transaction() as tx:
            tx.mark_observed("attempt", key, self.source, facts.created_at)
            tx.observe(
                m.RUN_DURATION, (repo, workflow, branch, facts.event, facts.result), facts.seconds
            )
            tx.set_latest(m.RUN_LAST_DURATION, (repo, workflow, branch), facts.seconds, at)
            if facts.critical_path:
                tx.observe(
                    m.RUN_CRITICAL_PATH,
                    (repo, workflow, branch, facts.result),
                    facts.critical_path_seconds,
                )
                path_jobs: dict[tuple[str, ...], float] = {}
                for job in facts.critical_path:
                    path_jobs[(job.name,)] = path_jobs.get((job.name,), 0.0) + job.seconds
                tx.replace_latest_group(
                    m.RUN_LAST_CRITICAL_PATH_JOB, (repo, workflow, branch), path_jobs, at
                )
            tx.inc(m.RUN_CRITICAL_PATH_SOURCE, (repo, workflow, facts.critical_path_source))
            for job in facts.jobs:
                tx.observe(
                    m.JOB_DURATION,
                    (repo, workflow, branch, job.name, job.result, job.runner),
                    job.seconds,
                )
                queue = job.queue_seconds
                if queue is not None:
                    tx.observe(m.JOB_QUEUE, (repo, workflow, branch, job.name, job.runner), queue)
                if job.result != "skip":
                    tx.set_latest(
                        m.JOB_LAST_DURATION,
                        (repo, workflow, branch, job.name),
                        job.seconds,
                        job.completed_at or at,
                    )
                for step in job.steps:
                    tx.observe(
                        m.STEP_DURATION,
                        (repo, workflow, job.name, step.name, step.result),
                        step.seconds,
                    )
            tx.inc(m.RUNS_OBSERVED, (repo,))
            upper = self.targets.get((workflow, facts.branch))
            if upper is not None and facts.result == "success":
                outcome = "within" if facts.seconds <= upper else "above"
                tx.inc(m.RUN_TARGET, (repo, workflow, facts.branch, outcome))
            for record in recorders:
                record(tx)
        return tx.applied
