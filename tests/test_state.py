"""The state store: atomic units, persistence, folding decided at commit, bounded histograms,
pruning, schema versions and migration."""

from __future__ import annotations

import gc
import json
import random
import sqlite3
import tracemalloc
from pathlib import Path

import pytest

from exporter import metrics as m
from exporter.observations import Increment, Latest, Observe, ReplaceGroup, Task, Unit
from exporter.sources.github.runs import RunWindow
from exporter.store import SCHEMA_VERSION, StateError, Store
from exporter.store.aggregates import HistogramSeries, ValueSeries
from exporter.store.layouts import FineLayout, FixedLayout, cumulative
from exporter.store.migrations import _SCHEMA_1

LABELS = ("acme/webapp", "CI", "main", "push", "success")
RUN = m.RUN_DURATION.name


def unit(*items: object, key: str | None = None, **kwargs: object) -> Unit:
    keys = (("attempt", key),) if key else ()
    return Unit("github:acme/webapp", items=tuple(items), keys=keys, **kwargs)  # type: ignore[arg-type]


def hist(store: Store, metric: str, labels: tuple[str, ...]) -> HistogramSeries:
    found = store.aggregates.get(metric, labels)
    assert isinstance(found, HistogramSeries)
    return found


def value(store: Store, metric: str, labels: tuple[str, ...]) -> float:
    found = store.aggregates.get(metric, labels)
    assert found is None or isinstance(found, ValueSeries)
    return found.value if found else 0.0


def test_unit_is_atomic_and_once(tmp_path: Path) -> None:
    """A unit marked observed twice is applied once; a unit that breaks while planned applies
    nothing, not even its observed key."""
    store = Store(tmp_path / "s.db")
    for _ in range(2):
        store.commit(unit(Observe(m.RUN_DURATION, LABELS, 600), key="r/1/1"))
    assert hist(store, RUN, LABELS).count == 1
    broken = unit(
        Observe(m.RUN_DURATION, LABELS, 700), Observe(m.RUN_DURATION, ("x",), 1), key="r/2/1"
    )
    with pytest.raises(ValueError, match="expected labels"):
        store.commit(broken)
    assert not store.is_observed("attempt", "r/2/1")
    assert hist(store, RUN, LABELS).count == 1


def test_aggregates_and_tasks_survive_reopen(tmp_path: Path) -> None:
    """Histograms, counters, latest gauges, observed ids and pending tasks are the same after a
    restart."""
    store = Store(tmp_path / "s.db")
    task = Task("log", "acme/webapp/7", "github:acme/webapp", {"job_id": 7})
    store.commit(
        unit(
            Observe(m.RUN_DURATION, LABELS, 600),
            Observe(m.RUN_DURATION, LABELS, 90.5),
            Increment(m.RUNS_OBSERVED, ("acme/webapp",)),
            Latest(m.RUN_LAST_DURATION, LABELS[:3], 600, at=100),
            key="k",
            enqueue=(task,),
        )
    )
    store.close()
    again = Store(tmp_path / "s.db")
    series = hist(again, RUN, LABELS)
    assert (series.count, series.sum) == (2, 690.5)
    assert cumulative(FineLayout(), series.slots, [90, 91, 600]) == [0, 1, 2]
    assert value(again, m.RUNS_OBSERVED.name, ("acme/webapp",)) == 1
    last = again.aggregates.get(m.RUN_LAST_DURATION.name, LABELS[:3])
    assert isinstance(last, ValueSeries)
    assert (last.value, last.at) == (600, 100)
    assert again.is_observed("attempt", "k")
    assert [p.task for p in again.pending("github:acme/webapp")] == [task]
    assert again.schema_version() == SCHEMA_VERSION


def test_a_task_completes_once() -> None:
    """A unit that finishes a pending task applies only while the task is pending."""
    store = Store(":memory:")
    task = Task("log", "r/1", "github:r", {})
    store.commit(unit(key="r/1/1", enqueue=(task,)))
    done = unit(
        Increment(m.BUILDKIT_STEPS, ("r", "CI", "build", "cached"), 3), done=(("log", "r/1"),)
    )
    assert store.commit(done)
    assert not store.commit(done)
    assert value(store, m.BUILDKIT_STEPS.name, ("r", "CI", "build", "cached")) == 3
    assert store.pending("github:r") == []


def test_latest_gauge_keeps_the_newest() -> None:
    """An older run observed later (catch-up order) does not overwrite the latest value; a group
    replacement drops the previous run's critical-path jobs."""
    store = Store(":memory:")
    store.commit(unit(Latest(m.RUN_LAST_DURATION, LABELS[:3], 700, at=200)))
    store.commit(unit(Latest(m.RUN_LAST_DURATION, LABELS[:3], 100, at=150)))
    assert value(store, m.RUN_LAST_DURATION.name, LABELS[:3]) == 700
    prefix = LABELS[:3]
    path = m.RUN_LAST_CRITICAL_PATH_JOB
    store.commit(unit(ReplaceGroup(path, prefix, ((("build",), 1), (("tag",), 2)), at=10)))
    store.commit(unit(ReplaceGroup(path, prefix, ((("build",), 3),), at=20)))
    store.commit(unit(ReplaceGroup(path, prefix, ((("old",), 9),), at=5)))
    jobs = {labels[-1]: s.value for labels, s in store.aggregates.series_of(path.name)}  # type: ignore[union-attr]
    assert jobs == {"build": 3}


def _steps(count: int, start: int = 0) -> list[Observe]:
    return [
        Observe(m.STEP_DURATION, ("r", "CI", "job", f"step {i}", "success"), 1)
        for i in range(start, start + count)
    ]


def test_series_cap_folds_and_counts() -> None:
    """Beyond max_series_per_metric, foldable labels become "other" (one extra series) and each
    folded observation is counted."""
    store = Store(":memory:", max_series_per_metric=10)
    store.commit(unit(*_steps(15)))
    steps = {labels[3] for labels, _ in store.aggregates.series_of(m.STEP_DURATION.name)}
    assert len(steps) == 11
    assert "other" in steps
    assert value(store, m.SERIES_DROPPED.name, (m.STEP_DURATION.name,)) == 5
    assert hist(store, m.STEP_DURATION.name, ("r", "CI", "other", "other", "success")).count == 5


def test_folding_is_decided_at_commit() -> None:
    """Replaying an already observed unit changes no counter (series_dropped_total included), and
    units that fail to apply do not use up the cap: exactly once holds for the exporter's own
    counters too."""
    store = Store(":memory:", max_series_per_metric=10)
    store.commit(unit(*_steps(12), key="once"))
    assert value(store, m.SERIES_DROPPED.name, (m.STEP_DURATION.name,)) == 2
    for _ in range(3):
        assert not store.commit(unit(*_steps(12), key="once"))
    assert value(store, m.SERIES_DROPPED.name, (m.STEP_DURATION.name,)) == 2
    fresh = Store(":memory:", max_series_per_metric=10)
    for attempt in range(10):
        broken = unit(*_steps(1, start=attempt), Observe(m.RUN_DURATION, ("bad",), 1))
        with pytest.raises(ValueError, match="expected labels"):
            fresh.commit(broken)
    fresh.commit(unit(*_steps(1, start=99)))
    assert {labels for labels, _ in fresh.aggregates.series_of(m.STEP_DURATION.name)} == {
        ("r", "CI", "job", "step 99", "success")
    }
    assert value(fresh, m.SERIES_DROPPED.name, (m.STEP_DURATION.name,)) == 0


def test_scoped_caps_fold_per_scope() -> None:
    """logs.max_instructions and junit.max_suites cap distinct values within their scope (a job,
    a workflow); further ones fold into "other", counted, the same way for every metric."""
    store = Store(":memory:")
    suites = [Observe(m.TEST_SUITE_DURATION, ("r", "CI", f"app{i}"), 1.0) for i in range(5)]
    cases = [Increment(m.TEST_CASES, ("r", "CI", f"app{i}", "passed"), 2) for i in range(5)]
    store.commit(unit(*suites, *cases, limits={"suites": 3}))
    durations = {labels[2] for labels, _ in store.aggregates.series_of(m.TEST_SUITE_DURATION.name)}
    counted = {labels[2] for labels, _ in store.aggregates.series_of(m.TEST_CASES.name)}
    assert durations == counted == {"app0", "app1", "app2", "other"}
    assert value(store, m.TEST_CASES.name, ("r", "CI", "other", "passed")) == 4
    assert value(store, m.SERIES_DROPPED.name, (m.TEST_SUITE_DURATION.name,)) == 2
    # Another workflow has its own room.
    store.commit(
        unit(Observe(m.TEST_SUITE_DURATION, ("r", "Nightly", "app4"), 1.0), limits={"suites": 3})
    )
    assert store.aggregates.get(m.TEST_SUITE_DURATION.name, ("r", "Nightly", "app4")) is not None


def test_histogram_memory_is_constant_in_observations(tmp_path: Path) -> None:
    """100,000 observations of one series hold no more slots than 1,000 do once every value of the
    layout's range has been seen; the stored row stays small; sums and counts stay exact."""
    rng = random.Random(1)
    values = [round(rng.uniform(300, 1800), 3) for _ in range(100_000)]
    store = Store(tmp_path / "s.db")
    slots_after: dict[int, int] = {}
    for start in range(0, len(values), 1000):
        store.commit(
            unit(*(Observe(m.RUN_DURATION, LABELS, v) for v in values[start : start + 1000]))
        )
        slots_after[start + 1000] = len(hist(store, RUN, LABELS).slots)
    series = hist(store, RUN, LABELS)
    assert series.count == 100_000
    assert series.sum == pytest.approx(sum(values), abs=1e-3)
    assert max(slots_after.values()) <= 1501  # one slot per second of [300, 1800]
    assert slots_after[100_000] - slots_after[20_000] <= 3
    store.close()
    db = sqlite3.connect(tmp_path / "s.db")
    (row,) = db.execute("SELECT length(slots) FROM series WHERE metric = ?", (RUN,)).fetchone()
    assert row < 25_000
    assert cumulative(FineLayout(), series.slots, [600, 720]) == [
        sum(v <= 600 for v in values),
        sum(v <= 720 for v in values),
    ]


@pytest.mark.parametrize("bound", [0, 1, 59, 600, 719, 720, 7200, 7260, 86400])
def test_fine_layout_renders_grid_bounds_exactly(bound: float) -> None:
    """Any bound on the grid (whole seconds up to 2 h, whole minutes up to a day) counts exactly
    the values ≤ it."""
    layout = FineLayout()
    values = [
        0,
        0.0005,
        0.999,
        1,
        1.001,
        58.5,
        59,
        599.999,
        600,
        600.001,
        719.9,
        720,
        7199.5,
        7200,
        7200.5,
        7259,
        7260,
        7261,
        86399,
        86400,
        90000,
    ]
    slots: dict[int, int] = {}
    for v in values:
        slots[layout.slot(v)] = slots.get(layout.slot(v), 0) + 1
    assert layout.on_grid(bound)
    assert cumulative(layout, slots, [bound]) == [sum(v <= bound for v in values)]


def test_fixed_layout_matches_its_bounds() -> None:
    layout = FixedLayout((1.0, 5.0, 10.0))
    values = [0.5, 1, 1.5, 5, 9, 10, 11]
    slots: dict[int, int] = {}
    for v in values:
        slots[layout.slot(v)] = slots.get(layout.slot(v), 0) + 1
    assert cumulative(layout, slots, [1, 5, 10]) == [2, 4, 6]


def test_prune_forgets_old_ids_only() -> None:
    """Ids are stamped when observed; prune forgets those observed before the cut-off."""
    clock = iter([100.0, 10_000.0]).__next__
    store = Store(":memory:", clock=clock)
    store.commit(unit(key="old"))
    store.commit(unit(key="new"))
    assert store.prune(before=5000) == 1
    assert not store.is_observed("attempt", "old")
    assert store.is_observed("attempt", "new")


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    """A state file from a newer exporter is not silently used (nor moved aside)."""
    path = tmp_path / "s.db"
    Store(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    with pytest.raises(StateError, match="newer"):
        Store(path)
    assert path.exists()


def test_schema_1_state_migrates(tmp_path: Path) -> None:
    """A state file of the previous schema (exact value counts, free-form source state) keeps its
    counts, sums, counters, gauges, observed ids and watermark."""
    path = tmp_path / "s.db"
    db = sqlite3.connect(path)
    db.executescript(_SCHEMA_1)
    labels = json.dumps(list(LABELS))
    db.executemany(
        "INSERT INTO hist_values VALUES (?, ?, ?, ?)",
        [(RUN, labels, 600.0, 2), (RUN, labels, 1500.5, 1)],
    )
    db.execute("INSERT INTO hist_totals VALUES (?, ?, ?, ?)", (RUN, labels, 2700.5, 3))
    db.execute(
        "INSERT INTO counters VALUES (?, ?, ?)", (m.RUNS_OBSERVED.name, '["acme/webapp"]', 3)
    )
    db.execute(
        "INSERT INTO gauges VALUES (?, ?, ?, ?)",
        (m.RUN_LAST_DURATION.name, json.dumps(list(LABELS[:3])), 1500.5, 99),
    )
    db.execute(
        "INSERT INTO observed VALUES ('attempt', 'acme/webapp/1/1', 'github:acme/webapp', 5)"
    )
    db.execute(
        "INSERT INTO source_state VALUES (?, ?)",
        ("github:acme/webapp", json.dumps({"watermark": 42.0, "last_poll": 50.0})),
    )
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    store = Store(path)
    series = hist(store, RUN, LABELS)
    assert (series.count, series.sum) == (3, 2700.5)
    assert cumulative(FineLayout(), series.slots, [600, 1500, 1501]) == [2, 2, 3]
    assert value(store, m.RUNS_OBSERVED.name, ("acme/webapp",)) == 3
    assert value(store, m.RUN_LAST_DURATION.name, LABELS[:3]) == 1500.5
    assert store.is_observed("attempt", "acme/webapp/1/1")
    window = store.records.get("github:acme/webapp", RunWindow)
    assert (window.watermark, window.last_poll) == (42.0, 50.0)


def test_a_unit_of_many_new_series_is_planned_in_linear_work() -> None:
    """Committing one unit that creates thousands of series looks each one up a bounded number
    of times (the cap check keeps running counts), not once per series already planned."""
    store = Store(":memory:", max_series_per_metric=100_000)
    lookups = [0]
    original = store.aggregates.get

    def counted(metric: str, labels: tuple[str, ...]) -> object:
        lookups[0] += 1
        return original(metric, labels)

    store.aggregates.get = counted  # type: ignore[method-assign,assignment]
    items = [
        Observe(m.STEP_DURATION, ("r", "CI", f"job{j}", f"step{s}", "success"), 1.0)
        for j in range(40)
        for s in range(50)
    ]
    store.commit(unit(*items))
    assert store.aggregates.count(m.STEP_DURATION.name) == 2000
    assert lookups[0] <= 10 * len(items)


def test_a_long_history_histogram_costs_bytes_per_used_slot(tmp_path: Path) -> None:
    """A run histogram that has seen every fine slot (months of runs from seconds to a day) is
    held in about 8 bytes per used slot once loaded, not a dict entry (~60 bytes) per slot; it
    still renders every grid bound exactly."""
    layout = FineLayout()
    every = {slot: 2 for slot in range(layout.slot(86400) + 1)}
    path = tmp_path / "s.db"
    Store(path).close()
    db = sqlite3.connect(path)
    db.execute(
        "INSERT INTO series VALUES (?, ?, 0, ?, ?, ?, 0, 0)",
        (RUN, json.dumps(list(LABELS)), 1.0, 2 * len(every), json.dumps(every)),
    )
    db.commit()
    db.close()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        store = Store(path)
        gc.collect()  # what loading left behind, not garbage still waiting for the collector
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    series = hist(store, RUN, LABELS)
    assert len(series.slots) == len(every) > 8000
    assert held < 12 * len(every) + 64 * 1024
    assert cumulative(layout, series.slots, [0, 600, 7200, 7260, 86400]) == [
        2,
        2 * 601,
        2 * 7201,
        2 * 7202,
        2 * len(every),
    ]


def test_a_scoped_cap_after_expiry_counts_only_real_values() -> None:
    """After an expiry rebuilds the per-scope caps, the folded `other` series takes no slot of
    the cap: with 3 suites allowed and 2 left, a new suite gets its own series."""
    now = [1000.0]
    store = Store(":memory:", clock=lambda: now[0])
    store.commit(
        unit(
            *(Observe(m.TEST_SUITE_DURATION, ("r", "CI", f"app{i}"), 1.0) for i in range(5)),
            limits={"suites": 3},
        )
    )
    now[0] = 5000.0
    kept = [Observe(m.TEST_SUITE_DURATION, ("r", "CI", f"app{i}"), 1.0) for i in (1, 2)]
    store.commit(unit(*kept, Observe(m.TEST_SUITE_DURATION, ("r", "CI", "other"), 1.0)))
    assert store.expire(2000.0)[m.TEST_SUITE_DURATION.name] == 1  # app0
    store.commit(
        unit(Observe(m.TEST_SUITE_DURATION, ("r", "CI", "app9"), 1.0), limits={"suites": 3})
    )
    suites = {labels[2] for labels, _ in store.aggregates.series_of(m.TEST_SUITE_DURATION.name)}
    assert suites == {"app1", "app2", "app9", "other"}
