"""The SQLite state store: atomic observation, persistence, folding, pruning, schema version."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from exporter import metrics as m
from exporter.state import SCHEMA_VERSION, Histogram, Store

LABELS = ("acme/webapp", "CI", "main", "push", "success")


def test_observation_is_atomic_and_once(tmp_path: Path) -> None:
    """A unit marked observed twice is applied once; a failing unit applies nothing."""
    store = Store(tmp_path / "s.db")
    for _ in range(2):
        with store.transaction() as tx:
            tx.mark_observed("attempt", "r/1/1", "github:r")
            tx.observe(m.RUN_DURATION, LABELS, 600)
    assert store.histograms[(m.RUN_DURATION.name, LABELS)].count == 1
    with pytest.raises(RuntimeError), store.transaction() as tx:
        tx.mark_observed("attempt", "r/2/1", "github:r")
        tx.observe(m.RUN_DURATION, LABELS, 700)
        raise RuntimeError("payload broke halfway")
    assert not store.is_observed("attempt", "r/2/1")
    assert store.histograms[(m.RUN_DURATION.name, LABELS)].count == 1


def test_aggregates_survive_reopen(tmp_path: Path) -> None:
    """Histograms, counters, latest gauges and observed ids are the same after a restart."""
    store = Store(tmp_path / "s.db")
    with store.transaction() as tx:
        tx.mark_observed("attempt", "k", "s")
        tx.observe(m.RUN_DURATION, LABELS, 600)
        tx.observe(m.RUN_DURATION, LABELS, 90.5)
        tx.inc(m.RUNS_OBSERVED, ("acme/webapp",))
        tx.set_latest(m.RUN_LAST_DURATION, LABELS[:3], 600, at=100)
    store.close()
    again = Store(tmp_path / "s.db")
    hist = again.histograms[(m.RUN_DURATION.name, LABELS)]
    assert (hist.count, hist.sum, hist.values) == (2, 690.5, {600.0: 1, 90.5: 1})
    assert again.counters[(m.RUNS_OBSERVED.name, ("acme/webapp",))] == 1
    assert again.gauges[(m.RUN_LAST_DURATION.name, LABELS[:3])] == (600, 100)
    assert again.is_observed("attempt", "k")
    assert again.schema_version() == SCHEMA_VERSION


def test_latest_gauge_keeps_the_newest(tmp_path: Path) -> None:
    """An older run observed later (catch-up order) does not overwrite the latest value; a group
    replacement drops the previous run's critical-path jobs."""
    store = Store(":memory:")
    with store.transaction() as tx:
        tx.set_latest(m.RUN_LAST_DURATION, LABELS[:3], 700, at=200)
    with store.transaction() as tx:
        tx.set_latest(m.RUN_LAST_DURATION, LABELS[:3], 100, at=150)
    assert store.gauges[(m.RUN_LAST_DURATION.name, LABELS[:3])][0] == 700
    prefix = LABELS[:3]
    with store.transaction() as tx:
        tx.replace_latest_group(
            m.RUN_LAST_CRITICAL_PATH_JOB, prefix, {("build",): 1, ("tag",): 2}, at=10
        )
    with store.transaction() as tx:
        tx.replace_latest_group(m.RUN_LAST_CRITICAL_PATH_JOB, prefix, {("build",): 3}, at=20)
    jobs = {
        k[1][-1]: v[0] for k, v in store.gauges.items() if k[0] == m.RUN_LAST_CRITICAL_PATH_JOB.name
    }
    assert jobs == {"build": 3}


def test_series_cap_folds_and_counts(tmp_path: Path) -> None:
    """Beyond max_series_per_metric, foldable labels become "other" (one extra series) and each
    folded observation is counted."""
    store = Store(":memory:", max_series_per_metric=10)
    with store.transaction() as tx:
        for i in range(15):
            tx.observe(m.STEP_DURATION, ("r", "CI", "job", f"step {i}", "success"), 1)
    steps = {k[1][3] for k in store.histograms if k[0] == m.STEP_DURATION.name}
    assert len(steps) == 11 and "other" in steps
    assert store.counters[(m.SERIES_DROPPED.name, (m.STEP_DURATION.name,))] == 5
    other = store.histograms[(m.STEP_DURATION.name, ("r", "CI", "other", "other", "success"))]
    assert other.count == 5


def test_prune_forgets_old_ids_only(tmp_path: Path) -> None:
    store = Store(":memory:")
    with store.transaction() as tx:
        tx.mark_observed("attempt", "old", "s", at=100)
        tx.mark_observed("attempt", "new", "s", at=10_000)
    assert store.prune_observed(before=5000) == 1
    assert not store.is_observed("attempt", "old") and store.is_observed("attempt", "new")


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    """A state file from a newer exporter is not silently used."""
    path = tmp_path / "s.db"
    Store(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    with pytest.raises(RuntimeError, match="newer"):
        Store(path)


def test_histogram_cumulative_any_bounds() -> None:
    """Exact values render into any bucket layout (le is inclusive)."""
    hist = Histogram({10.0: 2, 600.0: 1, 720.0: 1}, 1340.0, 4)
    assert hist.cumulative([10, 600, 719.999, 720, 1e9]) == [2, 3, 3, 4, 4]
