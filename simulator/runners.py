"""Self-hosted runner pools for the runners API: an organisation's runner groups and their runners,
busy while a simulated job that asked for their labels is executing (so a runner shortage shows
as a busy pool next to a long queue)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from simulator.model import Timeline


@dataclass(frozen=True)
class SimRunner:
    id: int
    name: str
    group_id: int
    labels: tuple[str, ...]
    online: bool = True


@dataclass(frozen=True)
class SimGroup:
    id: int
    name: str


GROUPS = (SimGroup(1, "Default"), SimGroup(2, "gpu"))
RUNNERS = (
    SimRunner(101, "build-1", 1, ("self-hosted", "linux", "x64")),
    SimRunner(102, "build-2", 1, ("self-hosted", "linux", "x64")),
    SimRunner(201, "gpu-1", 2, ("self-hosted", "linux", "gpu")),
    SimRunner(202, "gpu-2", 2, ("self-hosted", "linux", "gpu"), online=False),
)


def _executing(
    timelines: Iterable[Timeline], t: float, lookback: float = 6 * 3600
) -> list[tuple[str, ...]]:
    """The runs-on labels of self-hosted jobs executing at t (runs older than lookback are over)."""
    labels: list[tuple[str, ...]] = []
    for timeline in timelines:
        for run in timeline.runs_until(t):
            if run.created_at < t - lookback:
                continue
            for attempt in run.attempts:
                labels.extend(
                    job.labels
                    for job in attempt.jobs
                    if "self-hosted" in job.labels and job.started_at <= t < job.completed_at
                )
    return labels


def runners_in(group_id: int | None) -> list[SimRunner]:
    """A group's runners; None: all of them (a repository's runners)."""
    return [r for r in RUNNERS if group_id is None or r.group_id == group_id]


def busy_ids(timelines: Iterable[Timeline], t: float) -> set[int]:
    """Which online runners are busy at t: each executing job takes one whose labels it asked for."""
    busy: set[int] = set()
    for wanted in _executing(timelines, t):
        free = next(
            (r for r in RUNNERS if r.online and r.id not in busy and set(wanted) <= set(r.labels)),
            None,
        )
        if free is not None:
            busy.add(free.id)
    return busy


def group_payload(group: SimGroup, base: str, org: str) -> dict[str, Any]:
    return {
        "id": group.id,
        "name": group.name,
        "visibility": "all",
        "default": group.id == 1,
        "runners_url": f"{base}/orgs/{org}/actions/runner-groups/{group.id}/runners",
        "inherited": False,
        "allows_public_repositories": False,
        "restricted_to_workflows": False,
        "selected_workflows": [],
        "workflow_restrictions_read_only": False,
    }


def runner_payload(runner: SimRunner, busy: bool) -> dict[str, Any]:
    return {
        "id": runner.id,
        "name": runner.name,
        "os": "linux",
        "status": "online" if runner.online else "offline",
        "busy": busy and runner.online,
        "labels": [
            {"id": index + 1, "name": name, "type": "read-only" if index < 2 else "custom"}
            for index, name in enumerate(runner.labels)
        ],
    }
