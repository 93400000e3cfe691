"""Flaky test detection: the pure rule over re-run sequences across attempts and SHAs, and the
history in the real store (JUnit XML parsed, units committed, reopened), bounded in memory and
state with 100,000 distinct case names."""

from __future__ import annotations

import io
import sqlite3
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from exporter import metrics as m
from exporter.analysis.flaky import (
    MAX_PASSES,
    AttemptKey,
    AttemptRef,
    CaseHistory,
    CaseOutcomes,
    observe,
    reruns,
)
from exporter.analysis.junit import parse_junit
from exporter.observations import RepositoryPolicy, Task, Unit, junit_unit
from exporter.store import Store
from exporter.store.aggregates import ValueSeries

DAY = 86400.0
WINDOW = 14 * DAY
REPO, WORKFLOW = "acme/webapp", "CI"
SOURCE = f"github:{REPO}"

# A step: (sha, run_id, attempt, failed). Attempts complete an hour apart; attempt n of a run
# lasts 100 × n + run_id seconds, so each re-run's cost is recognisable.
Step = tuple[str, int, int, bool]


def _seconds(run_id: int, attempt: int) -> float:
    return 100.0 * attempt + run_id


def play(steps: list[Step], gap: float = 3600.0) -> tuple[CaseHistory, list[int]]:
    """One case through the steps, in the order given; returns its history and what each step
    counted."""
    history = CaseHistory()
    attempts: dict[AttemptKey, AttemptRef] = {}
    counted = []
    for index, (sha, run_id, attempt, failed) in enumerate(steps):
        ref = AttemptRef(
            run_id, attempt, sha, 1_800_000_000 + index * gap, _seconds(run_id, attempt), failed
        )
        attempts[ref.key] = ref
        history, newly = observe(history, ref, failed, attempts, WINDOW)
        counted.append(newly)
    return history, counted


F, P = True, False
SEQUENCES = {
    # name: steps, (occurrences, runs, re-run seconds)
    "attempt 1 fails, its re-run passes": ([("a", 1, 1, F), ("a", 1, 2, P)], (1, 1, 201)),
    "a genuine fix on a new SHA": ([("a", 1, 1, F), ("b", 2, 1, P)], (0, 0, 0)),
    "fails in every attempt": ([("a", 1, 1, F), ("a", 1, 2, F), ("a", 1, 3, F)], (0, 0, 0)),
    "passes everywhere": ([("a", 1, 1, P), ("a", 1, 2, P), ("b", 2, 1, P)], (0, 0, 0)),
    "passed, then failed in another run of the SHA": (
        [("a", 1, 1, P), ("a", 2, 1, F)],
        (1, 1, 0),
    ),
    "failed twice, passed on the third attempt": (
        [("a", 1, 1, F), ("a", 1, 2, F), ("a", 1, 3, P)],
        (2, 1, 201 + 301),
    ),
    "the re-run recorded before the failure (catch-up)": (
        [("a", 1, 2, P), ("a", 1, 1, F)],
        (1, 1, 201),
    ),
    "flaky again after it was counted": (
        [("a", 1, 1, F), ("a", 1, 2, P), ("a", 1, 3, F), ("a", 1, 4, P)],
        (2, 1, 201 + 401),
    ),
    "other SHAs interleaved before the re-run": (
        [("a", 1, 1, F), ("b", 2, 1, P), ("c", 3, 1, P), ("d", 4, 1, F), ("a", 1, 2, P)],
        (1, 1, 201),
    ),
    "two runs of one SHA fail, a third passes": (
        [("a", 1, 1, F), ("a", 2, 1, F), ("a", 3, 1, P)],
        (2, 2, 0),
    ),
}


@pytest.mark.parametrize("name", SEQUENCES)
def test_flaky_only_when_the_same_sha_failed_and_passed(name: str) -> None:
    """Occurrences, runs affected and re-run seconds for each re-run sequence: a failure counts
    once it has a pass on its SHA (in either order), never across SHAs."""
    steps, (occurrences, runs, seconds) = SEQUENCES[name]
    history, counted = play(steps)
    assert (history.flaky, history.runs, history.rerun_seconds) == (occurrences, runs, seconds)
    assert sum(counted) == occurrences
    assert (history.last_flaky is not None) == (occurrences > 0)


def test_the_window_bounds_a_pair() -> None:
    """A pass more than junit.flaky_window after the failure on the same SHA is not flaky; within
    it, it is."""
    _, late = play([("a", 1, 1, F), ("a", 1, 2, P)], gap=WINDOW + 1)
    _, inside = play([("a", 1, 1, F), ("a", 1, 2, P)], gap=WINDOW - 1)
    assert (sum(late), sum(inside)) == (0, 1)


def test_a_pass_far_back_is_forgotten_first() -> None:
    """Passes are kept for the latest MAX_PASSES reports: a failure on a SHA whose pass is older
    than that is not matched (failures, rarer, are kept for the whole window)."""
    recent = [("a", 1, 1, P), *[(f"s{i}", 10 + i, 1, P) for i in range(MAX_PASSES - 1)]]
    _, found = play([*recent, ("a", 2, 1, F)])
    _, lost = play([*recent, ("z", 99, 1, P), ("a", 2, 1, F)])
    assert (sum(found), sum(lost)) == (1, 0)


def test_an_attempt_recorded_twice_counts_once() -> None:
    """Observing the same attempt's result again changes nothing."""
    history, _ = play([("a", 1, 1, F), ("a", 1, 2, P)])
    ref = AttemptRef(1, 2, "a", 1_800_003_600, 201, False)
    again, newly = observe(history, ref, False, {(1, 1): ref, (1, 2): ref}, WINDOW)
    assert (again, newly) == (history, 0)


def test_reruns_after_a_failure_in_either_order() -> None:
    """An attempt re-running a failed one counts once, whichever of the two is recorded first;
    a re-run of a passing attempt does not."""
    failed = AttemptRef(1, 1, "a", 1.0, 100, True)
    rerun = AttemptRef(1, 2, "a", 2.0, 100, False)
    assert reruns(rerun, {failed.key: failed}) == 1
    assert reruns(failed, {rerun.key: rerun}) == 1
    passed = AttemptRef(1, 1, "a", 1.0, 100, False)
    assert reruns(rerun, {passed.key: passed}) == 0


def test_outcomes_fail_wins_and_skips_are_left_out() -> None:
    """Within one attempt a failure or an error in any file (matrix leg) makes the case failed;
    a case only skipped is not a result; beyond the limit, results are counted, not held."""
    outcomes = CaseOutcomes(limit=2)
    parse_junit(
        io.BytesIO(_xml({"t.A::one": "passed", "t.A::two": "skipped"})), on_case=outcomes.add
    )
    parse_junit(
        io.BytesIO(_xml({"t.A::one": "error", "t.A::three": "passed"})), on_case=outcomes.add
    )
    parse_junit(io.BytesIO(_xml({"t.A::four": "passed"})), on_case=outcomes.add)
    assert outcomes.cases == {("t", "t.A", "one"): True, ("t", "t.A", "three"): False}
    assert (outcomes.failed, outcomes.overflow) == (True, 1)


# -- the history in the store ----------------------------------------------------------------------
def _xml(cases: dict[str, str]) -> bytes:
    """JUnit XML: "classname::name" → passed, failed, error or skipped."""
    bodies = {
        "passed": "",
        "failed": '<failure message="boom">assert False</failure>',
        "error": '<error message="setup">ConnectionError</error>',
        "skipped": '<skipped message="slow"/>',
    }
    rows = []
    for key, result in cases.items():
        classname, name = key.split("::")
        rows.append(
            f'<testcase classname="{classname}" name="{name}" time="0.5">{bodies[result]}</testcase>'
        )
    return f'<testsuites><testsuite name="pytest">{"".join(rows)}</testsuite></testsuites>'.encode()


class Recorder:
    """Records attempts' JUnit reports through the real path: XML → parser → junit_unit → commit."""

    def __init__(self, store: Store, max_cases: int = 20_000) -> None:
        self.store = store
        self.policy = RepositoryPolicy(REPO, frozenset({"main"}), max_cases=max_cases)
        self.artifact = 0

    def record(
        self,
        run_id: int,
        attempt: int,
        sha: str,
        at: float,
        xmls: list[bytes],
        *,
        seconds: float = 600,
    ) -> bool:
        task = Task(
            "junit",
            f"{REPO}/{run_id}/{attempt}",
            SOURCE,
            {
                "run_id": run_id,
                "attempt": attempt,
                "workflow": WORKFLOW,
                "created_at": at - seconds,
                "started_at": at - seconds,
                "completed_at": at,
                "head_sha": sha,
                "seconds": seconds,
            },
        )
        self.store.commit(Unit(SOURCE, enqueue=(task,)))
        outcomes = CaseOutcomes(self.policy.max_cases)
        report = parse_junit(io.BytesIO(xmls[0]), on_case=outcomes.add)
        for xml in xmls[1:]:
            report.merge(parse_junit(io.BytesIO(xml), on_case=outcomes.add))
        self.artifact += 1
        unit = junit_unit(task, report, [self.artifact], self.policy, outcomes)
        return self.store.commit(unit)

    def value(self, spec: m.MetricSpec, *labels: str) -> float:
        found = self.store.aggregates.get(spec.name, labels)
        assert found is None or isinstance(found, ValueSeries)
        return found.value if found else 0.0


T0 = 1_800_000_000.0


@pytest.fixture
def recorder(tmp_path: Path) -> Iterator[Recorder]:
    store = Store(tmp_path / "s.db")
    yield Recorder(store)
    store.close()


def test_store_counts_flaky_cases_by_suite(recorder: Recorder) -> None:
    """A re-run that passes makes the failed cases flaky (an error like a failure), counted by
    suite, with the re-run counted and the flaky cases per suite as a gauge; counters of suites
    without flakes are there at 0; a case renamed in the re-run is a new case, not flaky."""
    first = {
        "shop.tests.T::test_pay": "failed",
        "shop.tests.T::test_cart": "error",
        "blog.tests.T::test_post": "passed",
        "blog.tests.T::test_old_name": "failed",
    }
    second = {
        "shop.tests.T::test_pay": "passed",
        "shop.tests.T::test_cart": "passed",
        "blog.tests.T::test_post": "passed",
        "blog.tests.T::test_new_name": "passed",
    }
    recorder.record(1, 1, "a" * 40, T0, [_xml(first)])
    assert recorder.value(m.TEST_RERUNS, REPO, WORKFLOW) == 0
    assert recorder.store.aggregates.get(m.TEST_CASE_FLAKY.name, (REPO, WORKFLOW, "blog"))
    recorder.record(1, 2, "a" * 40, T0 + 3600, [_xml(second)])
    assert recorder.value(m.TEST_CASE_FLAKY, REPO, WORKFLOW, "shop") == 2
    assert recorder.value(m.TEST_CASE_FLAKY, REPO, WORKFLOW, "blog") == 0
    assert recorder.value(m.TEST_RERUNS, REPO, WORKFLOW) == 1
    assert recorder.value(m.TEST_SUITE_FLAKY_CASES, REPO, WORKFLOW, "shop") == 2
    assert recorder.value(m.TEST_SUITE_FLAKY_CASES, REPO, WORKFLOW, "blog") == 0
    assert recorder.value(m.TEST_CASES_HELD, REPO) == 5


def test_matrix_legs_failing_on_one_platform_are_not_flaky(recorder: Recorder) -> None:
    """Two artifacts of one attempt (matrix legs): a case failing on one leg in both attempts is
    broken there, not flaky; one failing on a leg only in attempt 1 is flaky."""
    sha = "b" * 40
    leg_a = {"app.T::test_linux_only": "failed", "app.T::test_flaky": "failed"}
    leg_b = {"app.T::test_linux_only": "passed", "app.T::test_flaky": "passed"}
    recorder.record(2, 1, sha, T0, [_xml(leg_a), _xml(leg_b)])
    leg_a2 = {"app.T::test_linux_only": "failed", "app.T::test_flaky": "passed"}
    recorder.record(2, 2, sha, T0 + 3600, [_xml(leg_a2), _xml(leg_b)])
    assert recorder.value(m.TEST_CASE_FLAKY, REPO, WORKFLOW, "app") == 1
    assert recorder.value(m.TEST_RERUNS, REPO, WORKFLOW) == 1


def test_history_survives_a_reopen_and_a_fix_on_a_new_sha_is_not_flaky(tmp_path: Path) -> None:
    """The failure recorded before a restart meets its pass after it (the history is in the file,
    committed with the counters); a failure followed by a pass on the next commit is not flaky."""
    store = Store(tmp_path / "s.db")
    recorder = Recorder(store)
    recorder.record(3, 1, "c" * 40, T0, [_xml({"app.T::test_x": "failed"})])
    recorder.record(4, 1, "d" * 40, T0 + 60, [_xml({"app.T::test_y": "failed"})])
    store.close()
    reopened = Recorder(Store(tmp_path / "s.db"))
    reopened.artifact = 2
    reopened.record(3, 2, "c" * 40, T0 + 3600, [_xml({"app.T::test_x": "passed"})])
    reopened.record(5, 1, "e" * 40, T0 + 7200, [_xml({"app.T::test_y": "passed"})])
    assert reopened.value(m.TEST_CASE_FLAKY, REPO, WORKFLOW, "app") == 1
    reopened.store.close()


def test_cap_evicts_the_least_recently_seen_and_counts_drops(tmp_path: Path) -> None:
    """With max_cases 3, a report of 5 cases keeps 3 (2 results counted as overflow); a later
    report of 2 new cases evicts the 2 least recently seen, counted."""
    store = Store(tmp_path / "s.db")
    recorder = Recorder(store, max_cases=3)
    recorder.record(6, 1, "f" * 40, T0, [_xml({f"app.T::old_{i}": "passed" for i in range(5)})])
    assert recorder.value(m.TEST_CASES_HELD, REPO) == 3
    assert recorder.value(m.TEST_CASES_DROPPED, REPO, "overflow") == 2
    recorder.record(
        7, 1, "g" * 40, T0 + 60, [_xml({f"app.T::new_{i}": "passed" for i in range(2)})]
    )
    assert recorder.value(m.TEST_CASES_HELD, REPO) == 3
    assert recorder.value(m.TEST_CASES_DROPPED, REPO, "evicted") == 2
    names = {str(row[0]) for row in store.db.read("SELECT name FROM test_cases")}
    assert {"new_0", "new_1"} < names
    assert len(names) == 3
    store.close()


def test_histories_of_repositories_no_longer_polled_are_removed(recorder: Recorder) -> None:
    """Removing a repository from the config (or moving it to another shard) forgets its history."""
    recorder.record(10, 1, "j" * 40, T0, [_xml({"app.T::test_x": "failed"})])
    assert recorder.store.cases.remove_repositories({REPO}) == 0
    assert recorder.store.cases.remove_repositories({"acme/other"}) == 1
    assert recorder.store.db.read("SELECT COUNT(*) FROM test_cases")[0][0] == 0
    assert recorder.store.db.read("SELECT COUNT(*) FROM test_attempts")[0][0] == 0


# -- 100,000 distinct case names ---------------------------------------------------------------------
def _many(count: int, prefix: str) -> bytes:
    return _xml({f"big.tests.T{i % 100}::{prefix}_{i:06d}": "passed" for i in range(count)})


def _peak(action: Callable[[], object]) -> int:
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    action()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak - base


def test_hundred_thousand_names_bounded_memory_and_state(tmp_path: Path) -> None:
    """Reports of 100,000 distinct case names: parsing and collecting the outcomes holds only the
    cap's worth of cases (memory grows with the cap, not the report), and the state keeps at most
    max_cases rows per repository, the rest counted."""
    xml = _many(100_000, "a")
    small = _peak(lambda: parse_junit(io.BytesIO(xml), on_case=CaseOutcomes(1_000).add))
    large = _peak(lambda: parse_junit(io.BytesIO(xml), on_case=CaseOutcomes(100_000).add))
    assert small < 4 << 20, small
    assert large > 5 * small
    store = Store(tmp_path / "s.db")
    recorder = Recorder(store, max_cases=5_000)
    recorder.record(8, 1, "h" * 40, T0, [xml])
    recorder.record(9, 1, "i" * 40, T0 + 60, [_many(100_000, "b")])
    rows = store.db.read("SELECT COUNT(*) FROM test_cases")[0][0]
    assert rows == 5_000
    assert recorder.value(m.TEST_CASES_HELD, REPO) == 5_000
    assert recorder.value(m.TEST_CASES_DROPPED, REPO, "overflow") == 2 * 95_000
    assert recorder.value(m.TEST_CASES_DROPPED, REPO, "evicted") == 5_000
    store.close()
    with sqlite3.connect(tmp_path / "s.db") as db:
        pages, page_size = (
            db.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_count", "page_size")
        )
        size = pages * page_size
    assert size < 4 << 20, size
