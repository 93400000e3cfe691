"""What is running now, per repository: open jobs (from workflow_job webhooks) and open runs (from
workflow_run webhooks and from every poll's listing), kept in the state store so a restart does
not zero the live gauges, and published as `cicd_pipeline_task_run_active`,
`cicd_pipeline_task_run_oldest_queued_timestamp_seconds` and `cicd_pipeline_run_active`."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping

from pydantic import BaseModel, Field

from exporter import metrics as m
from exporter.analysis.pipeline import ACTIVE_STATES, runner_label
from exporter.observations import Labels, Unit, replace_unit
from exporter.payloads.github import WebhookJob, WorkflowRun
from exporter.store import StateRecord, Store

JOB_STATES = ("queued", "waiting", "executing")
RUN_STATES = ("pending", "executing")
# Open jobs kept per repository (a repository can't run more; beyond, the oldest are dropped).
MAX_OPEN_JOBS = 5000
# A (workflow, runner labels) pair keeps its zero series this long after its last open job;
# at most this many pairs (the most recent), whatever the payloads bring.
ZERO_FOR = 86400.0
MAX_SEEN = 1000


class OpenJob(BaseModel):
    run_id: int
    attempt: int
    workflow: str
    labels: str
    state: str
    since: float


class OpenJobs(StateRecord):
    NAME = "open_jobs"
    jobs: dict[str, OpenJob] = Field(default_factory=dict)
    # "workflow\nlabels" → when it last had an open job.
    seen: dict[str, float] = Field(default_factory=dict)


class OpenRun(BaseModel):
    workflow: str
    state: str
    created: float
    seen: float = 0.0  # its last event (a re-run of an old run is recent though created long ago)


class OpenRuns(StateRecord):
    NAME = "open_runs"
    runs: dict[str, OpenRun] = Field(default_factory=dict)
    workflows: dict[str, float] = Field(default_factory=dict)


def job_state(status: str) -> str | None:
    """GitHub's workflow_job status → the gauge's state (None: not open). Statuses GitHub may
    add (`pending`, `requested`) wait for a runner: queued."""
    if status == "completed":
        return None
    return {"waiting": "waiting", "in_progress": "executing"}.get(status, "queued")


class LiveState:
    """Reads and writes one repository's open jobs and runs, and publishes their gauges."""

    def __init__(self, store: Store, repository: str, limits: Mapping[str, int]) -> None:
        self.store = store
        self.repository = repository
        self.source = f"github:{repository}"
        self.limits = limits
        # A poll (listing, reconciling) and the webhook workers change these records: each
        # read-modify-write under this lock, held only for that.
        self._lock = threading.Lock()

    # -- jobs -------------------------------------------------------------------------------------
    def job_event(self, job: WebhookJob, now: float) -> None:
        with self._lock:
            record = self.store.records.get(self.source, OpenJobs)
            state = job_state(job.status)
            key = str(job.id)
            if state is None:
                record.jobs.pop(key, None)
            else:
                since = job.created_at or now
                if state == "executing":
                    since = job.started_at or since
                record.jobs[key] = OpenJob(
                    run_id=job.run_id or 0,
                    attempt=job.run_attempt,
                    workflow=job.workflow_name or "",
                    labels=runner_label(job.labels),
                    state=state,
                    since=since,
                )
                for old in list(record.jobs)[:-MAX_OPEN_JOBS]:
                    del record.jobs[old]
            self._save_jobs(record, now)

    def close_jobs(self, runs: Iterable[WorkflowRun], now: float, lookback: float) -> int:
        """The reconciler: jobs of runs now completed (or re-run), and jobs older than the
        lookback, are closed — nothing stays executing because a webhook was missed."""
        with self._lock:
            record = self.store.records.get(self.source, OpenJobs)
            done = {run.id: run.run_attempt for run in runs if run.status == "completed"}
            current = {run.id: run.run_attempt for run in runs}
            closed = [
                key
                for key, job in record.jobs.items()
                if job.since < now - lookback
                or (job.run_id in done and job.attempt <= done[job.run_id])
                or job.attempt < current.get(job.run_id, job.attempt)
            ]
            for key in closed:
                del record.jobs[key]
            if closed:
                self._save_jobs(record, now)
            return len(closed)

    def unlisted(self, listed: set[int], before: float) -> list[tuple[int, int]]:
        """(run id, attempt) of jobs open since before `before` whose run the listing does not
        show (a re-run of a run older than the window): the reconciler asks for those by id."""
        with self._lock:
            jobs = self.store.records.get(self.source, OpenJobs).jobs.values()
            found = {
                (job.run_id, job.attempt)
                for job in jobs
                if job.run_id and job.run_id not in listed and job.since < before
            }
        return sorted(found)

    def close_run(self, run_id: int, now: float) -> int:
        """The open jobs of a run the API no longer knows."""
        with self._lock:
            record = self.store.records.get(self.source, OpenJobs)
            gone = [key for key, job in record.jobs.items() if job.run_id == run_id]
            for key in gone:
                del record.jobs[key]
            if gone:
                self._save_jobs(record, now)
            return len(gone)

    def _save_jobs(self, record: OpenJobs, now: float) -> None:
        for job in record.jobs.values():
            record.seen[f"{job.workflow}\n{job.labels}"] = now
        recent = sorted(record.seen.items(), key=lambda item: item[1])[-MAX_SEEN:]
        record.seen = {k: t for k, t in recent if t >= now - ZERO_FOR}
        self.store.records.put(self.source, record)
        self.store.commit_many(job_gauges(self.repository, record, self.limits))

    # -- runs ---------------------------------------------------------------------------------------
    def run_event(self, run: WorkflowRun, now: float) -> None:
        with self._lock:
            record = self.store.records.get(self.source, OpenRuns)
            key = str(run.id)
            if run.status == "completed":
                record.runs.pop(key, None)
            else:
                state = ACTIVE_STATES.get(run.status, "pending")
                record.runs[key] = OpenRun(
                    workflow=run.workflow, state=state, created=run.created_at or now, seen=now
                )
            record.workflows[run.workflow] = now
            self._save_runs(record, now)

    def listed(
        self, runs: Iterable[WorkflowRun], now: float, since: float, lookback: float
    ) -> None:
        """A poll's listing (runs created after `since`) is the truth about the open runs it
        covers: it replaces what events said of those. Runs created before it (re-runs of old
        runs, known from their events) are kept, until no event for the lookback."""
        with self._lock:
            stored = self.store.records.get(self.source, OpenRuns)
            record = OpenRuns(workflows=stored.workflows)
            for key, kept in stored.runs.items():
                if kept.created < since and max(kept.created, kept.seen) >= now - lookback:
                    record.runs[key] = kept
            for run in runs:
                record.workflows[run.workflow] = now
                if run.status != "completed":
                    state = ACTIVE_STATES.get(run.status, "pending")
                    record.runs[str(run.id)] = OpenRun(
                        workflow=run.workflow, state=state, created=run.created_at or now
                    )
            self._save_runs(record, now)

    def oldest_open_run(self, since: float) -> float | None:
        """When the oldest open run created after `since` was created (the listing window
        reaches back to it; an older run's re-run, known from its events, does not drag it)."""
        with self._lock:
            runs = self.store.records.get(self.source, OpenRuns).runs.values()
            return min((run.created for run in runs if run.created >= since), default=None)

    def _save_runs(self, record: OpenRuns, now: float) -> None:
        record.workflows = {w: t for w, t in record.workflows.items() if t >= now - ZERO_FOR}
        self.store.records.put(self.source, record)
        self.store.commit(run_gauge(self.repository, record))


def job_gauges(repository: str, record: OpenJobs, limits: Mapping[str, int]) -> list[Unit]:
    """Open jobs per (workflow, runner labels, state), zeros included for pairs seen in the last
    day (so series don't flap), and the oldest queued job per runner labels."""
    counts: dict[Labels, float] = {}
    for pair in record.seen:
        workflow, labels = pair.split("\n", 1)
        for state in JOB_STATES:
            counts[(repository, workflow, labels, state)] = 0.0
    oldest: dict[Labels, float] = {}
    for job in record.jobs.values():
        key = (repository, job.workflow, job.labels, job.state)
        counts[key] = counts.get(key, 0.0) + 1
        if job.state == "queued":
            queued = (repository, job.labels)
            oldest[queued] = min(oldest.get(queued, job.since), job.since)
    source = f"github:{repository}"
    return [
        replace_unit(source, m.TASK_ACTIVE, (repository,), counts.items(), limits),
        replace_unit(
            source, m.TASK_OLDEST_QUEUED, (repository,), oldest.items(), limits, combine="min"
        ),
    ]


def run_gauge(repository: str, record: OpenRuns) -> Unit:
    counts: dict[Labels, float] = {
        (repository, workflow, state): 0.0 for workflow in record.workflows for state in RUN_STATES
    }
    for run in record.runs.values():
        key = (repository, run.workflow, run.state)
        counts[key] = counts.get(key, 0.0) + 1
    return replace_unit(f"github:{repository}", m.RUN_ACTIVE, (repository,), counts.items())
