"""Flaky test cases across re-runs: a case is flaky when, within a window, it failed (or errored) in
one run attempt and passed in another on the same head SHA — typically attempt n fails and the
re-run n + 1 passes.

Pure: one attempt's case outcomes (collected while its reports stream through the JUnit parser,
bounded) and a case's stored history in, the new history and what it adds out. The store keeps the
histories (bounded per repository) and calls `observe` inside the transaction that records the
attempt's report, so the counts survive a crash exactly like every other counter.

A case's identity is (workflow, suite, classname, name): a renamed case is a new case. Within one
attempt a failure anywhere (another matrix leg, another artifact) makes the case failed there, so a
case that fails on one platform in every attempt is broken there, not flaky.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import NamedTuple

from exporter.analysis.junit import Case

# (suite, classname, name) as in the JUnit file (the suite as the metrics label it).
CaseKey = tuple[str, str, str]
AttemptKey = tuple[int, int]
# Results kept per case: the latest passes (a later failure on one of their SHAs is flaky) and the
# failures within the window (a later pass on their SHA makes them flaky).
MAX_PASSES = 8
MAX_FAILURES = 16

_FAILED, _COUNTED, _CHARGED = 1, 2, 4


class CaseOutcomes:
    """One attempt's cases as they stream out of its reports: failed or errored wins over passed
    (across files, artifacts and matrix legs); a case only skipped is left out. At most `limit`
    distinct cases are held; results of further cases are counted in `overflow`."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.cases: dict[CaseKey, bool] = {}
        self.overflow = 0
        self.failed = False

    def add(self, case: Case) -> None:
        if case.result == "skipped":
            return
        failed = case.result in ("failed", "error")
        self.failed = self.failed or failed
        key = (case.suite, case.classname, case.name)
        if key in self.cases:
            self.cases[key] = self.cases[key] or failed
        elif len(self.cases) < self.limit:
            self.cases[key] = failed
        else:
            self.overflow += 1


@dataclass(frozen=True)
class AttemptRef:
    """A run attempt whose reports were read: its head SHA, when it completed, its wall time and
    whether any case failed or errored in it."""

    run_id: int
    attempt: int
    sha: str
    at: float
    seconds: float
    failed: bool

    @property
    def key(self) -> AttemptKey:
        return (self.run_id, self.attempt)


@dataclass(frozen=True)
class CaseReport:
    """What an attempt's reports add to the flaky-test history (carried by the unit that records
    them). `cases` maps each case to whether it failed; `suites` are all the report's suites."""

    repository: str
    workflow: str
    attempt: AttemptRef
    cases: Mapping[CaseKey, bool]
    suites: tuple[str, ...]
    overflow: int
    window: float
    limit: int


class Result(NamedTuple):
    """The case's result in one attempt: failed or passed, and whether that failure was counted
    flaky and charged its re-run."""

    run_id: int
    attempt: int
    flags: int

    @property
    def key(self) -> AttemptKey:
        return (self.run_id, self.attempt)

    @property
    def failed(self) -> bool:
        return bool(self.flags & _FAILED)

    @property
    def counted(self) -> bool:
        return bool(self.flags & _COUNTED)

    @property
    def charged(self) -> bool:
        return bool(self.flags & _CHARGED)


@dataclass(frozen=True)
class CaseHistory:
    """One case's recent results and its flaky totals: occurrences (failures on a SHA where it
    also passed), distinct runs they were in, and the seconds of the re-runs that followed them."""

    results: tuple[Result, ...] = ()
    flaky: int = 0
    runs: int = 0
    rerun_seconds: float = 0.0
    last_flaky: float | None = None

    def encode(self) -> str:
        return ";".join(f"{r.run_id},{r.attempt},{r.flags}" for r in self.results)

    @staticmethod
    def decode_results(text: str) -> tuple[Result, ...]:
        results = []
        for part in text.split(";") if text else ():
            run_id, attempt, flags = part.split(",")
            results.append(Result(int(run_id), int(attempt), int(flags)))
        return tuple(results)


def case_id(workflow: str, key: CaseKey) -> int:
    """A stable signed 64-bit id of a case (SQLite's integer key)."""
    digest = hashlib.blake2b("\0".join((workflow, *key)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def observe(
    history: CaseHistory,
    current: AttemptRef,
    failed: bool,
    attempts: Mapping[AttemptKey, AttemptRef],
    window: float,
) -> tuple[CaseHistory, int]:
    """The case's history with the current attempt's result, and how many failures became flaky
    occurrences with it. `attempts` are the workflow's recorded attempts (the current one
    included); results of attempts no longer there, or older than the window, are dropped."""
    if any(r.key == current.key for r in history.results):
        return history, 0  # this attempt's report was recorded before
    cutoff = current.at - window
    kept = [r for r in history.results if r.key in attempts and attempts[r.key].at >= cutoff]
    new = Result(current.run_id, current.attempt, _FAILED if failed else 0)
    # The common case, a pass and no failure in the window: nothing to count. Results are stored
    # newest first, so the pass joins the front (unless an older attempt arrives late).
    newest = not kept or attempts[kept[0].key].at <= current.at
    if not failed and newest and not any(r.failed for r in kept):
        return replace(history, results=(new, *kept[: MAX_PASSES - 1])), 0
    results = [*kept, new]
    results, newly, new_runs = _count(results, current.sha, attempts)
    results, seconds = _charge(results, attempts)
    updated = replace(
        history,
        results=_trim(results, attempts),
        flaky=history.flaky + newly,
        runs=history.runs + new_runs,
        rerun_seconds=history.rerun_seconds + seconds,
        last_flaky=max(history.last_flaky or current.at, current.at)
        if newly
        else history.last_flaky,
    )
    return updated, newly


def _count(
    results: list[Result], sha: str, attempts: Mapping[AttemptKey, AttemptRef]
) -> tuple[list[Result], int, int]:
    """Failures on `sha` become flaky once the case also passed there (a failure counted before
    stands for a pass that may have been trimmed since)."""
    same = [r for r in results if attempts[r.key].sha == sha]
    if not any(not r.failed or r.counted for r in same):
        return results, 0, 0
    counted_runs = {r.run_id for r in results if r.counted}
    newly = [r for r in same if r.failed and not r.counted]
    marked = {r.key for r in newly}
    results = [r._replace(flags=r.flags | _COUNTED) if r.key in marked else r for r in results]
    return results, len(newly), len({r.run_id for r in newly} - counted_runs)


def _charge(
    results: list[Result], attempts: Mapping[AttemptKey, AttemptRef]
) -> tuple[list[Result], float]:
    """A flaky failure in attempt n costs the re-run that followed it: attempt n + 1 of the same
    run, once the case has a result there."""
    present = {r.key for r in results}
    due = {
        r.key
        for r in results
        if r.counted and not r.charged and (r.run_id, r.attempt + 1) in present
    }
    seconds = sum(attempts[(run_id, attempt + 1)].seconds for run_id, attempt in due)
    return [r._replace(flags=r.flags | _CHARGED) if r.key in due else r for r in results], seconds


def _trim(
    results: Iterable[Result], attempts: Mapping[AttemptKey, AttemptRef]
) -> tuple[Result, ...]:
    newest_first = sorted(results, key=lambda r: (-attempts[r.key].at, -r.run_id, -r.attempt))
    passes = [r for r in newest_first if not r.failed][:MAX_PASSES]
    failures = [r for r in newest_first if r.failed][:MAX_FAILURES]
    keep = {r.key for r in (*passes, *failures)}
    return tuple(r for r in newest_first if r.key in keep)


def reruns(current: AttemptRef, attempts: Mapping[AttemptKey, AttemptRef]) -> int:
    """Attempts that re-ran an attempt with a failed case, that the current one completes: it
    re-ran a failed attempt n - 1, or it failed and its re-run n + 1 was recorded before it."""
    before = attempts.get((current.run_id, current.attempt - 1))
    after = attempts.get((current.run_id, current.attempt + 1))
    return int(before is not None and before.failed) + int(current.failed and after is not None)
