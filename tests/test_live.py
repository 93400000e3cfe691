"""The live gauges' state on its own (a real store in memory): label sets beyond the cap add up in
`other`, statuses GitHub may add count as queued, and the reconciler closes what it should."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from exporter import metrics as m
from exporter.payloads.github import WebhookJob, WorkflowRun
from exporter.sources.github.live import LiveState
from exporter.sources.github.workflows import WorkflowLabels
from exporter.store import Store
from tests.helpers import stored_gauges

NOW = time.time()
REPO = "acme/a"


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _job(job_id: int, status: str, labels: list[str], age: float, **extra: Any) -> WebhookJob:
    return WebhookJob.model_validate(
        {
            "id": job_id,
            "run_id": extra.pop("run_id", 1),
            "status": status,
            "created_at": _iso(NOW - age),
            "labels": labels,
            "workflow_name": "CI",
            **extra,
        }
    )


def _run(run_id: int, status: str, attempt: int = 1) -> WorkflowRun:
    return WorkflowRun.model_validate(
        {
            "id": run_id,
            "name": "CI",
            "status": status,
            "created_at": _iso(NOW - 7200),
            "run_attempt": attempt,
        }
    )


def test_label_sets_beyond_the_cap_add_up_in_other() -> None:
    """With a cap of 2 runner label sets, the queued jobs of the third and fourth sets (3 + 1)
    are 4 in `other` — not whichever was written last — and `other`'s oldest queued job is the
    earliest of them; a set seen earlier with no open job adds nothing."""
    store = Store(":memory:")
    live = LiveState(store, REPO, {m.RUNNERS_CAP.name: 2})
    queued = {"a": 1, "b": 1, "c": 3, "d": 1}
    for i, (labels, count) in enumerate(queued.items()):
        for k in range(count):
            live.job_event(_job(100 * i + k, "queued", [labels], 3600 * (i + 1) + k), NOW)
    live.job_event(_job(999, "queued", ["e"], 60), NOW)
    live.job_event(_job(999, "completed", ["e"], 60, conclusion="success"), NOW)
    active = stored_gauges(store, m.TASK_ACTIVE)
    assert active[(REPO, "CI", "other", "queued")] == 4
    assert active[(REPO, "CI", "a", "queued")] == 1
    oldest = stored_gauges(store, m.TASK_OLDEST_QUEUED)
    assert abs(oldest[(REPO, "other")] - (NOW - 3600 * 4)) < 2  # d's job, the earliest


def test_statuses_github_may_add_count_as_queued() -> None:
    """`pending` and `requested` (sent for jobs waiting on a concurrency group or a larger
    runner) keep the job open as queued instead of dropping it."""
    store = Store(":memory:")
    live = LiveState(store, REPO, {m.RUNNERS_CAP.name: 10})
    live.job_event(_job(1, "pending", ["linux"], 120), NOW)
    live.job_event(_job(2, "requested", ["linux"], 60), NOW)
    assert stored_gauges(store, m.TASK_ACTIVE)[(REPO, "CI", "linux", "queued")] == 2


def test_the_reconciler_closes_jobs_of_earlier_attempts_and_completed_runs() -> None:
    """A run re-run (attempt 2 in the listing) closes the attempt-1 jobs still open and keeps
    attempt 2's; a completed run closes its jobs; a run not listed keeps its jobs until the
    lookback has passed."""
    store = Store(":memory:")
    live = LiveState(store, REPO, {m.RUNNERS_CAP.name: 10})
    live.job_event(_job(1, "in_progress", ["linux"], 600, run_id=10, run_attempt=1), NOW)
    live.job_event(_job(2, "queued", ["linux"], 60, run_id=10, run_attempt=2), NOW)
    live.job_event(_job(3, "queued", ["linux"], 60, run_id=11), NOW)
    live.job_event(_job(4, "queued", ["linux"], 60, run_id=12), NOW)
    closed = live.close_jobs(
        [_run(10, "in_progress", attempt=2), _run(11, "completed")], NOW, 86400
    )
    assert closed == 2
    active = stored_gauges(store, m.TASK_ACTIVE)
    assert active[(REPO, "CI", "linux", "queued")] == 2  # jobs 2 and 4
    assert active[(REPO, "CI", "linux", "executing")] == 0
    assert live.close_jobs([], NOW + 86400, 86400) == 2


def test_a_listing_keeps_open_runs_created_before_it_covers() -> None:
    """A re-run of a run created 5 hours ago is open (from its event). A listing of the last
    hour cannot see it and keeps it (even with a lookback shorter than its age: its event is
    recent); one that covers its creation and does not show it open closes it; with no event for
    the lookback it goes too (the gauge no longer flaps at every reconcile)."""
    store = Store(":memory:")
    live = LiveState(store, REPO, {m.RUNNERS_CAP.name: 10})
    old = WorkflowRun.model_validate(
        {"id": 7, "name": "CI", "status": "in_progress", "created_at": _iso(NOW - 5 * 3600)}
    )
    live.run_event(old, NOW)
    active = (REPO, "CI", "executing")
    assert stored_gauges(store, m.RUN_ACTIVE)[active] == 1
    live.listed([], NOW, since=NOW - 3600, lookback=86400)
    assert stored_gauges(store, m.RUN_ACTIVE)[active] == 1
    live.listed([], NOW, since=NOW - 3600, lookback=4 * 3600)
    assert stored_gauges(store, m.RUN_ACTIVE)[active] == 1
    live.listed([], NOW + 4 * 3600 + 1, since=NOW - 3600, lookback=4 * 3600)
    assert stored_gauges(store, m.RUN_ACTIVE)[active] == 0
    live.run_event(old, NOW)
    live.listed([], NOW, since=NOW - 6 * 3600, lookback=86400)
    assert stored_gauges(store, m.RUN_ACTIVE)[active] == 0


def test_workflow_slots_free_up_after_the_series_ttl() -> None:
    """With one slot: a second workflow folds into `other` while the first is seen; once the
    first has not been seen for the TTL, the next new name takes its slot — and keeps it across
    a restart (the slots live in the state store). Configured names never take a slot."""
    store = Store(":memory:")
    clock = [NOW]
    folds: list[str] = []

    def labels() -> WorkflowLabels:
        return WorkflowLabels(
            store, "github:acme/a", (1, 100.0), {"Deploy"}, folds.append, clock=lambda: clock[0]
        )

    first = labels()
    assert first.label("CI") == "CI"
    assert first.label("Deploy") == "Deploy"
    assert first.label("Nightly") == "other"
    assert first.label("Nightly") == "other"
    assert folds == ["github:acme/a"]
    clock[0] += 101
    assert first.label("Nightly") == "Nightly"
    assert labels().label("Nightly") == "Nightly"
    assert labels().label("CI") == "other"
