"""Run, job and step facts from the runs and jobs payloads: wall time, execution and queue time,
step durations, results, and the critical path."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from exporter.analysis.results import map_result
from exporter.analysis.workflow import WorkflowGraph
from exporter.timeutil import parse_timestamp

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

    @property
    def critical_path_seconds(self) -> float:
        return sum(job.seconds for job in self.critical_path)


def runner_label(labels: object) -> str:
    if not isinstance(labels, list):
        return ""
    return ",".join(sorted(str(label) for label in labels))


def _int(value: object, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def job_facts(job: dict[str, Any]) -> JobFacts:
    if job.get("status") != "completed":
        raise IncompleteError(f"job {job.get('id')} is {job.get('status')}")
    steps = []
    for step in job.get("steps") or ():
        if not isinstance(step, dict):
            continue
        started = parse_timestamp(step.get("started_at"))
        completed = parse_timestamp(step.get("completed_at"))
        seconds = (
            max(0.0, completed - started) if started is not None and completed is not None else 0.0
        )
        steps.append(
            StepFacts(
                name=str(step.get("name") or ""),
                number=_int(step.get("number")),
                result=map_result(step.get("conclusion")),
                seconds=seconds,
                started_at=started,
                completed_at=completed,
            )
        )
    return JobFacts(
        id=_int(job.get("id")),
        name=str(job.get("name") or ""),
        result=map_result(job.get("conclusion")),
        runner=runner_label(job.get("labels")),
        created_at=parse_timestamp(job.get("created_at")),
        started_at=parse_timestamp(job.get("started_at")),
        completed_at=parse_timestamp(job.get("completed_at")),
        steps=tuple(steps),
    )


def wall_time(run: dict[str, Any], jobs: Sequence[JobFacts]) -> tuple[float, float]:
    """(seconds, completed_at): first job start to last job completion. Skipped jobs count only
    when nothing else ran; without jobs, run_started_at to updated_at."""
    ran = [j for j in jobs if j.result != "skip"] or list(jobs)
    starts = [j.started_at for j in ran if j.started_at is not None]
    ends = [j.completed_at for j in ran if j.completed_at is not None]
    if starts and ends:
        return max(0.0, max(ends) - min(starts)), max(ends)
    started = parse_timestamp(run.get("run_started_at")) or parse_timestamp(run.get("created_at"))
    updated = parse_timestamp(run.get("updated_at"))
    if started is None or updated is None:
        raise IncompleteError(f"run {run.get('id')} has no usable timestamps")
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
    run: dict[str, Any],
    jobs_payload: Sequence[dict[str, Any]],
    graph: WorkflowGraph | None = None,
) -> RunFacts:
    """Facts of one completed run attempt with its jobs; raises IncompleteError when the attempt
    or any of its jobs is not completed yet (it will be observed on a later poll)."""
    if run.get("status") != "completed":
        raise IncompleteError(f"run {run.get('id')} is {run.get('status')}")
    jobs = tuple(job_facts(job) for job in jobs_payload)
    seconds, completed_at = wall_time(run, jobs)
    created = parse_timestamp(run.get("created_at")) or completed_at
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
        run_id=_int(run.get("id")),
        attempt=_int(run.get("run_attempt"), 1) or 1,
        workflow=str(run.get("name") or ""),
        branch=str(run.get("head_branch") or ""),
        event=str(run.get("event") or ""),
        result=map_result(run.get("conclusion")),
        created_at=created,
        completed_at=completed_at,
        seconds=seconds,
        jobs=jobs,
        critical_path=path,
        critical_path_source=source,
    )
