"""Run, job and step facts from the runs and jobs payloads: wall time, execution and queue time,
step durations, results, and the critical path."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from exporter.analysis.results import map_result
from exporter.analysis.workflow import WorkflowGraph
from exporter.payloads.github import Job, Step, WorkflowRun

ACTIVE_STATES = {
    "queued": "pending",
    "waiting": "pending",
    "pending": "pending",
    "requested": "pending",
    "in_progress": "executing",
}


class IncompleteError(ValueError):
    """The payload is not (yet) a completed attempt with completed jobs."""


@dataclass(frozen=True)
class StepFacts:
    name: str
    number: int
    result: str
    seconds: float
    started_at: float | None = None
    completed_at: float | None = None


@dataclass(frozen=True)
class JobFacts:
    id: int
    name: str
    result: str
    runner: str
    created_at: float | None
    started_at: float | None
    completed_at: float | None
    steps: tuple[StepFacts, ...]

    @property
    def seconds(self) -> float:
        if self.started_at is None or self.completed_at is None:
            return 0.0
        return max(0.0, self.completed_at - self.started_at)

    @property
    def queue_seconds(self) -> float | None:
        """None for skipped jobs, which never wait for a runner."""
        if self.result == "skip" or self.created_at is None or self.started_at is None:
            return None
        return max(0.0, self.started_at - self.created_at)


@dataclass(frozen=True)
class RunFacts:
    repository: str
    run_id: int
    attempt: int
    workflow: str
    branch: str
    event: str
    result: str
    created_at: float
    completed_at: float
    seconds: float
    jobs: tuple[JobFacts, ...]
    critical_path: tuple[JobFacts, ...] = field(default=())
    critical_path_source: Literal["needs", "timestamps", "none"] = "none"
    head_sha: str = ""
    # When this attempt started (its first job, else run_started_at): re-runs keep created_at.
    started_at: float | None = None

    @property
    def critical_path_seconds(self) -> float:
        return sum(job.seconds for job in self.critical_path)


# A runs-on label list comes from the workflow file (a pull request can write anything):
# longer joined values keep a prefix and a digest of the rest, still one per distinct list.
MAX_RUNNER_LABEL = 200


def runner_label(labels: Sequence[str]) -> str:
    joined = ",".join(sorted(labels))
    if len(joined) <= MAX_RUNNER_LABEL:
        return joined
    digest = hashlib.sha256(joined.encode()).hexdigest()[:12]
    return f"{joined[: MAX_RUNNER_LABEL - 14]}~{digest}"


def step_facts(step: Step) -> StepFacts:
    started, completed = step.started_at, step.completed_at
    seconds = (
        max(0.0, completed - started) if started is not None and completed is not None else 0.0
    )
    return StepFacts(
        name=step.name,
        number=step.number,
        result=map_result(step.conclusion),
        seconds=seconds,
        started_at=started,
        completed_at=completed,
    )


def job_facts(job: Job) -> JobFacts:
    if job.status != "completed":
        raise IncompleteError(f"job {job.id} is {job.status}")
    return JobFacts(
        id=job.id,
        name=job.name,
        result=map_result(job.conclusion),
        runner=runner_label(job.labels),
        created_at=job.created_at,
        started_at=job.started_at,
        completed_at=job.completed_at,
        steps=tuple(step_facts(step) for step in job.steps),
    )


def wall_time(run: WorkflowRun, jobs: Sequence[JobFacts]) -> tuple[float, float]:
    """(seconds, completed_at): first job start to last job completion. Skipped jobs count only
    when nothing else ran; without jobs, run_started_at to updated_at."""
    ran = [j for j in jobs if j.result != "skip"] or list(jobs)
    starts = [j.started_at for j in ran if j.started_at is not None]
    ends = [j.completed_at for j in ran if j.completed_at is not None]
    if starts and ends:
        return max(0.0, max(ends) - min(starts)), max(ends)
    started = run.run_started_at or run.created_at
    updated = run.updated_at
    if started is None or updated is None:
        raise IncompleteError(f"run {run.id} has no usable timestamps")
    return max(0.0, updated - started), updated


def critical_path_from_needs(
    jobs: Sequence[JobFacts], graph: WorkflowGraph
) -> tuple[JobFacts, ...] | None:
    """Walk back from the last job to finish through the dependency that finished last.
    None when a job can't be mapped to its definition."""
    definition_of: dict[int, str] = {}
    for job in jobs:
        job_id = graph.resolve(job.name)
        if job_id is None:
            return None
        definition_of[job.id] = job_id
    instances: dict[str, list[JobFacts]] = {}
    for job in jobs:
        instances.setdefault(definition_of[job.id], []).append(job)
    finished = [j for j in jobs if j.completed_at is not None and j.result != "skip"]
    if not finished:
        return ()
    current = max(finished, key=lambda j: (j.completed_at or 0.0, j.id))
    path = [current]
    seen = {current.id}
    while True:
        needs = graph.jobs[definition_of[current.id]].needs
        deps = [
            d
            for need in needs
            for d in instances.get(need, ())
            if d.completed_at is not None and d.result != "skip" and d.id not in seen
        ]
        if not deps:
            break
        current = max(deps, key=lambda j: (j.completed_at or 0.0, j.id))
        seen.add(current.id)
        path.append(current)
    return tuple(reversed(path))


def critical_path_from_timestamps(
    jobs: Sequence[JobFacts], slack: float = 1.0
) -> tuple[JobFacts, ...]:
    """Without the graph: each job's predecessor is the job that finished last before it started."""
    finished = [
        j
        for j in jobs
        if j.completed_at is not None and j.started_at is not None and j.result != "skip"
    ]
    if not finished:
        return ()
    current = max(finished, key=lambda j: (j.completed_at or 0.0, j.id))
    path = [current]
    while True:
        start = current.started_at or 0.0
        before = [
            j
            for j in finished
            if j.id not in {p.id for p in path} and (j.completed_at or 0.0) <= start + slack
        ]
        if not before:
            break
        current = max(before, key=lambda j: (j.completed_at or 0.0, j.id))
        path.append(current)
    return tuple(reversed(path))


def run_facts(
    repository: str,
    run: WorkflowRun,
    jobs_payload: Sequence[Job],
    graph: WorkflowGraph | None = None,
) -> RunFacts:
    """Facts of one completed run attempt with its jobs; raises IncompleteError when the attempt
    or any of its jobs is not completed yet (it will be observed on a later poll)."""
    if run.status != "completed":
        raise IncompleteError(f"run {run.id} is {run.status}")
    jobs = tuple(job_facts(job) for job in jobs_payload)
    seconds, completed_at = wall_time(run, jobs)
    created = run.created_at or completed_at
    path: tuple[JobFacts, ...] | None = None
    source: Literal["needs", "timestamps", "none"] = "none"
    if graph is not None:
        path = critical_path_from_needs(jobs, graph)
        if path is not None:
            source = "needs"
    if path is None:
        path = critical_path_from_timestamps(jobs)
        source = "timestamps"
    if not path:
        source = "none"
    return RunFacts(
        repository=repository,
        run_id=run.id,
        attempt=run.run_attempt,
        workflow=run.workflow,
        branch=run.head_branch or "",
        event=run.event or "",
        result=map_result(run.conclusion),
        created_at=created,
        completed_at=completed_at,
        seconds=seconds,
        jobs=jobs,
        critical_path=path,
        critical_path_source=source,
        head_sha=run.head_sha or "",
        started_at=completed_at - seconds,
    )
