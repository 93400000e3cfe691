"""The flaky-test history: the attempts whose reports were read (within the flaky window) and, per
repository, at most `junit.max_cases` test cases with their recent results and flaky totals.

It stays in the SQLite file, not in memory: a unit carrying a report's case outcomes is planned
under the store's lock (the rows of its cases read, `analysis.flaky.observe` applied) and written
in the unit's own transaction, so a crash keeps the report's counters and its history together or
neither. When a repository holds more cases than the cap, the least recently seen cases not in the
report being recorded are evicted (counted).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from exporter.analysis.flaky import (
    AttemptKey,
    AttemptRef,
    CaseHistory,
    CaseKey,
    CaseReport,
    case_id,
    observe,
    reruns,
)
from exporter.observations import FlakyFindings, Item, flaky_items
from exporter.store.db import Database, StateError

# Case ids per SELECT … IN (…): below SQLite's default limit of bound parameters.
CHUNK = 500
T = TypeVar("T")


@dataclass(frozen=True)
class _Stored:
    history: CaseHistory
    seen: float


@dataclass
class CasePlan:
    """What recording one report writes, and the items it adds to its unit."""

    report: CaseReport
    items: tuple[Item, ...]
    rows: list[tuple[object, ...]]
    victims: list[int]
    new_attempt: bool


class CaseHistories:
    def __init__(self, db: Database) -> None:
        self.db = db

    def _read(self, sql: str, params: tuple[object, ...] = ()) -> list[Any]:
        """Rows of the columns this module wrote (typed by its schema)."""
        return self.db.read(sql, params)

    # -- planning (under the store's lock) -----------------------------------------------------------
    def plan(self, report: CaseReport) -> CasePlan:
        current = report.attempt
        cutoff = current.at - report.window
        attempts = self._attempts(report, cutoff)
        new_attempt = current.key not in attempts
        attempts[current.key] = current
        rows: list[tuple[object, ...]] = []
        flaky: dict[str, int] = {}
        updated: dict[int, tuple[str, float | None]] = {}
        added = 0
        # A chunk of cases at a time: only their stored histories are in memory at once.
        for chunk in _chunks(list(report.cases), CHUNK):
            ids = [case_id(report.workflow, key) for key in chunk]
            stored = self._stored(report.repository, ids)
            added += len(ids) - len(stored)
            for key, cid in zip(chunk, ids, strict=True):
                before = stored.get(cid, _Stored(CaseHistory(), current.at))
                history, newly = observe(
                    before.history, current, report.cases[key], attempts, report.window
                )
                if newly:
                    flaky[key[0]] = flaky.get(key[0], 0) + newly
                updated[cid] = (key[0], history.last_flaky)
                rows.append(_row(report, cid, key, history, max(before.seen, current.at)))
        existing = self._count(report.repository)
        victims = self._victims(report.repository, existing + added - report.limit, set(updated))
        found = FlakyFindings(
            flaky=flaky,
            reruns=reruns(current, attempts) if new_attempt else 0,
            flaky_cases=self._flaky_cases(report, cutoff, updated, set(victims)),
            held=existing + added - len(victims),
            evicted=len(victims),
        )
        return CasePlan(report, tuple(flaky_items(report, found)), rows, victims, new_attempt)

    def _attempts(self, report: CaseReport, cutoff: float) -> dict[AttemptKey, AttemptRef]:
        found = self._read(
            "SELECT run_id, attempt, sha, at, seconds, failed FROM test_attempts "
            "WHERE repository = ? AND workflow = ? AND at >= ?",
            (report.repository, report.workflow, cutoff),
        )
        refs = [
            AttemptRef(int(r), int(a), str(sha), float(at), float(sec), bool(failed))
            for r, a, sha, at, sec, failed in found
        ]
        return {ref.key: ref for ref in refs}

    def _stored(self, repository: str, ids: Sequence[int]) -> dict[int, _Stored]:
        marks = ",".join("?" * len(ids))
        stored: dict[int, _Stored] = {}
        for cid, results, flaky, runs, seconds, last, seen in self._read(
            "SELECT case_id, results, flaky, runs, rerun_seconds, last_flaky, seen "
            f"FROM test_cases WHERE repository = ? AND case_id IN ({marks})",
            (repository, *ids),
        ):
            history = CaseHistory(
                CaseHistory.decode_results(str(results)),
                int(flaky),
                int(runs),
                float(seconds),
                None if last is None else float(last),
            )
            stored[int(cid)] = _Stored(history, float(seen))
        return stored

    def _count(self, repository: str) -> int:
        count = self._read("SELECT COUNT(*) FROM test_cases WHERE repository = ?", (repository,))
        return int(count[0][0])

    def _victims(self, repository: str, excess: int, keep: set[int]) -> list[int]:
        """The `excess` least recently seen cases outside `keep` (the report being recorded)."""
        if excess <= 0:
            return []
        oldest = self._read(
            "SELECT case_id FROM test_cases WHERE repository = ? ORDER BY seen, case_id LIMIT ?",
            (repository, excess + len(keep)),
        )
        victims = [int(cid) for (cid,) in oldest if int(cid) not in keep]
        return victims[:excess]

    def _flaky_cases(
        self,
        report: CaseReport,
        cutoff: float,
        updated: dict[int, tuple[str, float | None]],
        victims: set[int],
    ) -> dict[str, int]:
        """Distinct cases per suite with a flaky occurrence since `cutoff`, as this report leaves
        them."""
        suites: dict[int, str] = {
            int(cid): str(suite)
            for cid, suite in self._read(
                "SELECT case_id, suite FROM test_cases WHERE repository = ? AND workflow = ? "
                "AND last_flaky IS NOT NULL AND last_flaky >= ?",
                (report.repository, report.workflow, cutoff),
            )
            if int(cid) not in victims
        }
        for cid, (suite, last) in updated.items():
            if last is not None and last >= cutoff:
                suites[cid] = suite
            else:
                suites.pop(cid, None)
        counts: dict[str, int] = {}
        for suite in suites.values():
            counts[suite] = counts.get(suite, 0) + 1
        return counts

    # -- writing (in the unit's transaction) -------------------------------------------------------
    @staticmethod
    def write(db: sqlite3.Connection, plan: CasePlan) -> None:
        report, current = plan.report, plan.report.attempt
        if plan.new_attempt:
            db.execute(
                "INSERT OR IGNORE INTO test_attempts VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    report.repository,
                    report.workflow,
                    current.run_id,
                    current.attempt,
                    current.sha,
                    current.at,
                    current.seconds,
                    int(current.failed),
                ),
            )
        db.executemany(
            "INSERT INTO test_cases VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (repository, case_id) DO UPDATE SET seen = excluded.seen, "
            "results = excluded.results, flaky = excluded.flaky, runs = excluded.runs, "
            "rerun_seconds = excluded.rerun_seconds, last_flaky = excluded.last_flaky",
            plan.rows,
        )
        db.executemany(
            "DELETE FROM test_cases WHERE repository = ? AND case_id = ?",
            [(report.repository, cid) for cid in plan.victims],
        )
        db.execute(
            "DELETE FROM test_attempts WHERE repository = ? AND workflow = ? AND at < ?",
            (report.repository, report.workflow, current.at - report.window),
        )

    def remove_repositories(self, keep: set[str]) -> int:
        """Forget the histories of repositories this exporter no longer polls."""
        gone = [
            str(repo)
            for (repo,) in self._read(
                "SELECT repository FROM test_cases UNION SELECT repository FROM test_attempts"
            )
            if str(repo) not in keep
        ]

        def delete(db: sqlite3.Connection) -> None:
            for repo in gone:
                db.execute("DELETE FROM test_cases WHERE repository = ?", (repo,))
                db.execute("DELETE FROM test_attempts WHERE repository = ?", (repo,))

        if gone:
            self.db.run(delete)
        return len(gone)


def _row(
    report: CaseReport, cid: int, key: CaseKey, history: CaseHistory, seen: float
) -> tuple[object, ...]:
    suite, classname, name = key
    return (
        report.repository,
        cid,
        report.workflow,
        suite,
        classname,
        name,
        seen,
        history.encode(),
        history.flaky,
        history.runs,
        history.rerun_seconds,
        history.last_flaky,
    )


def _chunks(values: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


@dataclass(frozen=True)
class FlakyCase:
    repository: str
    workflow: str
    suite: str
    classname: str
    name: str
    flaky: int
    runs: int
    rerun_seconds: float
    last_seen: float


def read_flaky_cases(path: str | Path, limit: int | None = None) -> list[FlakyCase]:
    """The flaky cases in a state file, costliest first, read without writing to it (a running
    exporter may hold it). Raises StateError when the file can't be read."""
    file = Path(path)
    if not file.is_file():
        raise StateError(f"state.path: {path} does not exist (has the exporter run?)")
    try:
        db = sqlite3.connect(f"{file.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise StateError(f"state.path: {path}: {exc}") from None
    try:
        return _flaky_rows(db, limit)
    except sqlite3.DatabaseError as exc:
        if "no such table" in str(exc):
            return []  # written by an exporter before the flaky-test history
        raise StateError(f"state.path: {path}: {exc}") from None
    finally:
        db.close()


def _flaky_rows(db: sqlite3.Connection, limit: int | None) -> list[FlakyCase]:
    rows: list[Any] = db.execute(
        "SELECT repository, workflow, suite, classname, name, flaky, runs, rerun_seconds, "
        "last_flaky FROM test_cases WHERE flaky > 0 "
        "ORDER BY rerun_seconds DESC, flaky DESC, last_flaky DESC, repository, name "
        "LIMIT ?",
        (-1 if limit is None else limit,),
    ).fetchall()
    return [FlakyCase(*row) for row in rows]
