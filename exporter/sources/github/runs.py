"""A repository's runs: the listing window (the watermark, GitHub's list lag and its 1,000-result
search cap), and the facts of one run attempt (its jobs, its workflow's `needs:` graph)."""

from __future__ import annotations

import base64
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from exporter.analysis.pipeline import RunFacts, run_facts
from exporter.analysis.workflow import WorkflowError, WorkflowGraph, parse_workflow
from exporter.config import GitHubConfig
from exporter.logging import get_logger
from exporter.payloads.github import ContentFile, Job, WorkflowRun, describe, parse
from exporter.sources.errors import MalformedResponse, SourceError
from exporter.sources.github.client import GitHubClient
from exporter.store import StateRecord, Store
from exporter.timeutil import format_timestamp

log = get_logger(__name__)

# GitHub answers at most 1,000 runs per filtered search: windows with more are split.
SEARCH_CAP = 1000
PER_PAGE = 100
# A capped window is split down to this width; narrower ones are listed as far as GitHub goes.
MIN_WINDOW = 60.0
# Requests of one listing, splits included: 1,000 runs an hour for a day costs about 300.
MAX_LIST_REQUESTS = 1000
# Window starts are rounded down to this, so the list URL (and its ETag) stays the same.
WINDOW_QUANTUM = 3600.0
# Parsed workflow graphs kept per repository (most recent blobs).
MAX_GRAPHS = 8


# Windows of a listing still to read: (start, end or None for open-ended).
Windows = list[tuple[float, float | None]]
Items = list[Any]


class RunWindow(StateRecord):
    NAME = "window"
    watermark: float | None = None
    last_poll: float | None = None
    window_start: float | None = None


class WorkflowFile(BaseModel):
    blob: str | None = None
    fetched_at: float = 0.0
    head_sha: str | None = None


class WorkflowGraphs(StateRecord):
    NAME = "workflows"
    workflows: dict[str, WorkflowFile] = Field(default_factory=dict)
    blobs: dict[str, dict[str, Any]] = Field(default_factory=dict)


@dataclass
class Listing:
    runs: list[WorkflowRun] = field(default_factory=list)
    malformed: int = 0
    pages: int = 0
    pages_cached: int = 0


class RunLister:
    """Runs created in the window, typed; malformed items are counted and skipped."""

    def __init__(
        self,
        repository: str,
        github: GitHubConfig,
        client: GitHubClient,
        clock: Callable[[], float],
    ) -> None:
        self.repository = repository
        self.github = github
        self.client = client
        self.clock = clock
        self.source = f"github:{repository}"

    def window_start(self, window: RunWindow, now: float) -> float:
        """From the watermark (the oldest open run, at least rerun_window back) and, after
        downtime, the last poll — minus an overlap for runs that appear in the list late; never
        further back than lookback; rounded down so the URL and its ETag stay stable."""
        floor = now - self.github.lookback
        if window.last_poll is None:
            start = floor
        else:
            overlap = 2 * self.github.poll_interval + 300
            watermark = window.watermark if window.watermark is not None else window.last_poll
            start = min(watermark, window.last_poll - overlap)
        start = max(start, floor)
        return math.floor(start / WINDOW_QUANTUM) * WINDOW_QUANTUM

    def list(self, start: float, end: float | None = None) -> Listing:
        """Runs created from `start` (to `end`, or open-ended). A window GitHub says holds 1,000 or
        more runs is split in halves, oldest first, down to MIN_WINDOW; at most MAX_LIST_REQUESTS
        requests in all, so an upstream that always claims 1,000 can't make a listing endless."""
        listing = Listing()
        stop = end if end is not None else self.clock()
        windows: Windows = [(start, end)]
        capped = False
        while windows:
            if listing.pages >= MAX_LIST_REQUESTS:
                self._cut("listing_capped", f"stopped after {listing.pages} requests", windows)
                break
            lo, hi = windows.pop()
            halves = self._list_window(lo, hi, stop, listing)
            if halves is None:
                continue
            if halves:
                windows.extend(reversed(halves))
            else:
                capped = True
        if capped:
            self._cut("search_capped", "more than 1,000 runs in a window too narrow to split", [])
        return listing

    def _list_window(
        self, lo: float, hi: float | None, stop: float, listing: Listing
    ) -> Windows | None:
        """The window's runs into `listing` (None); or its two halves when GitHub's search cap
        hides some, before any item is read; or [] when it is capped but too narrow to split."""
        created = (
            f">={format_timestamp(lo)}"
            if hi is None
            else f"{format_timestamp(lo)}..{format_timestamp(hi)}"
        )
        path = f"/repos/{self.repository}/actions/runs"
        params = {"created": created, "per_page": PER_PAGE}
        pages = self.client.paginate(
            path, params, "workflow_runs", conditional=True, source=self.source
        )
        capped = False
        for index, (page, items) in enumerate(pages):
            listing.pages += 1
            listing.pages_cached += page.cached
            total = page.data.get("total_count")
            if index == 0 and isinstance(total, int) and total >= SEARCH_CAP:
                width = (hi if hi is not None else stop) - lo
                if width >= 2 * MIN_WINDOW:
                    middle = lo + math.floor(width / 2)
                    return [(lo, middle - 1), (middle, hi)]
                capped = True
            self._add(items, lo, hi, listing)
        return [] if capped else None

    def _add(self, items: Items, lo: float, hi: float | None, listing: Listing) -> None:
        """Typed runs; an item that fails validation, or was created outside the window asked
        for (it would be observed again once its id is pruned), is a counted skip."""
        now = self.clock()
        context = {"now": now, "skew": self.github.clock_skew}
        for item in items:
            try:
                run = WorkflowRun.model_validate(item, context=context)
            except ValidationError as exc:
                self._malformed(describe(exc), listing)
                continue
            created = run.created_at
            # The query's bounds are whole seconds (format_timestamp drops the fraction), the end
            # inclusive.
            late = hi is not None and created is not None and created >= math.floor(hi) + 1
            if created is None or created < math.floor(lo) or late:
                self._malformed(f"run {run.id}: created_at outside the window listed", listing)
                continue
            listing.runs.append(run)

    def _malformed(self, detail: str, listing: Listing) -> None:
        listing.malformed += 1
        self.client.skip(self.source, "malformed")
        log.warning("run skipped", source=self.source, reason="malformed", detail=detail)

    def _cut(self, reason: str, detail: str, left: Windows) -> None:
        self.client.skip(self.source, reason)
        log.warning(
            "run listing incomplete",
            source=self.source,
            reason=reason,
            detail=detail,
            windows_left=len(left),
        )


class AttemptFetcher:
    """The facts of one completed run attempt: its jobs page(s) and the critical path, from the
    workflow file's `needs:` graph when it can be read (cached by blob sha), else timestamps."""

    def __init__(
        self,
        repository: str,
        github: GitHubConfig,
        client: GitHubClient,
        store: Store,
        clock: Callable[[], float],
    ) -> None:
        self.repository = repository
        self.github = github
        self.client = client
        self.store = store
        self.clock = clock
        self.source = f"github:{repository}"

    def attempt(self, run: WorkflowRun, number: int) -> WorkflowRun:
        if number == run.run_attempt:
            return run
        # One run, one workflow: the name the poller gave the run (its workflow label, which may
        # be folded) holds for every attempt.
        return self.run_attempt(run.id, number).model_copy(update={"name": run.name})

    def run_attempt(self, run_id: int, number: int) -> WorkflowRun:
        """A run attempt asked for by id (one the listing no longer shows)."""
        path = f"/repos/{self.repository}/actions/runs/{run_id}/attempts/{number}"
        what = f"run {run_id} attempt {number}"
        return parse(WorkflowRun, self.client.get_json(path), what, skew=self.github.clock_skew)

    def jobs(self, run_id: int, attempt: int) -> list[Job]:
        path = f"/repos/{self.repository}/actions/runs/{run_id}/attempts/{attempt}/jobs"
        now = self.clock()
        jobs: list[Job] = []
        for _, items in self.client.paginate(
            path, {"per_page": PER_PAGE}, "jobs", source=self.source
        ):
            what = f"run {run_id} attempt {attempt} job"
            jobs.extend(parse(Job, item, what, now, self.github.clock_skew) for item in items)
        return jobs

    def facts(self, run: WorkflowRun, number: int) -> RunFacts:
        attempt = self.attempt(run, number)
        jobs = self.jobs(run.id, number)
        return run_facts(self.repository, attempt, jobs, self.graph(attempt, jobs))

    # -- the workflow file ----------------------------------------------------------------------------
    def graph(self, run: WorkflowRun, jobs: list[Job]) -> WorkflowGraph | None:
        """Fetched at the run's head_sha only when the cached graph can't map the run's jobs or is
        older than workflow_refresh (and the commit differs)."""
        if not run.path or not run.head_sha:
            return None
        path = run.path.split("@", 1)[0]
        graphs = self.store.records.get(self.source, WorkflowGraphs)
        entry = graphs.workflows.get(path)
        cached = _graph_of(graphs, entry)
        if entry is not None:
            mapped = cached is not None and all(
                cached.resolve(job.name) is not None for job in jobs
            )
            fresh = self.clock() - entry.fetched_at < self.github.workflow_refresh
            if (mapped or cached is None) and (fresh or entry.head_sha == run.head_sha):
                return cached
        return self._fetch_graph(graphs, path, run.head_sha, entry)

    def _fetch_graph(
        self, graphs: WorkflowGraphs, path: str, head_sha: str, entry: WorkflowFile | None
    ) -> WorkflowGraph | None:
        now = self.clock()
        try:
            body = parse(
                ContentFile,
                self.client.get_json(
                    f"/repos/{self.repository}/contents/{path}", {"ref": head_sha}
                ),
                f"contents of {path}",
            )
            if body.sha not in graphs.blobs:
                text = base64.b64decode(body.content, validate=False)
                graphs.blobs[body.sha] = parse_workflow(text).to_json()
                for old in list(graphs.blobs)[:-MAX_GRAPHS]:
                    del graphs.blobs[old]
            graphs.workflows[path] = WorkflowFile(blob=body.sha, fetched_at=now, head_sha=head_sha)
            graph: WorkflowGraph | None = WorkflowGraph.from_json(graphs.blobs[body.sha])
        except (SourceError, WorkflowError, ValueError) as exc:
            reason = exc.reason if isinstance(exc, SourceError) else "workflow_unreadable"
            self.client.skip(self.source, reason)
            log.warning(
                "workflow file unreadable",
                source=self.source,
                path=path,
                reason=reason,
                detail=str(exc),
            )
            # Don't ask again for every run: the fallback is inference from timestamps.
            blob = entry.blob if entry is not None else None
            graphs.workflows[path] = WorkflowFile(blob=blob, fetched_at=now, head_sha=head_sha)
            graph = _graph_of(graphs, graphs.workflows[path])
        self.store.records.put(self.source, graphs)
        return graph


def _graph_of(graphs: WorkflowGraphs, entry: WorkflowFile | None) -> WorkflowGraph | None:
    if entry is None or entry.blob is None or entry.blob not in graphs.blobs:
        return None
    return WorkflowGraph.from_json(graphs.blobs[entry.blob])


def attempts_to_observe(run: WorkflowRun) -> Iterator[int]:
    """Every attempt of the run that has completed: all earlier ones, and the current one when the
    run is completed (a run being re-run shows the new attempt in progress)."""
    last = run.run_attempt if run.status == "completed" else run.run_attempt - 1
    yield from range(1, last + 1)


__all__ = ["AttemptFetcher", "MalformedResponse", "RunLister", "RunWindow", "attempts_to_observe"]
