"""The state store, split by concern behind one commit: observed ids (exactly once), the metric
aggregates, pending enrichment tasks, typed per-source records and the HTTP cache.

`commit(unit)` applies a unit of observations atomically with the ids that mark it observed and
the tasks it starts or finishes: a crash keeps all of it or none, and a unit seen before applies
nothing — not even the exporter's own fold counters.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from exporter import metrics as m
from exporter.logging import get_logger
from exporter.observations import Increment, Labels, Task, Unit
from exporter.store.aggregates import LAYOUTS, Aggregates, Plan, labels_json, series_row
from exporter.store.cases import CaseHistories
from exporter.store.db import SCHEMA_VERSION, Database, OnDamage, StateError, StateWriteError
from exporter.store.http_cache import HttpCache
from exporter.store.records import SourceRecords, StateRecord

log = get_logger(__name__)

__all__ = [
    "SCHEMA_VERSION",
    "PendingTask",
    "StateError",
    "StateRecord",
    "StateWriteError",
    "Store",
]


@dataclass(frozen=True)
class PendingTask:
    task: Task
    tries: int


class Store:
    """Thread-safe; commits are serialised."""

    def __init__(
        self,
        path: str | Path,
        max_series_per_metric: int = 50_000,  # the config's default
        *,
        on_damage: OnDamage = "rebuild",
        clock: Callable[[], float] = time.time,
        read_only: bool = False,
    ) -> None:
        self.path = str(path)
        self.clock = clock
        self._lock = threading.RLock()
        self.db = Database(self.path, on_damage, read_only=read_only)
        self.records = SourceRecords(self.db)
        self.http_cache = HttpCache(self.db)
        self.cases = CaseHistories(self.db)
        self.aggregates = Aggregates(max_series_per_metric)
        self._observed: set[tuple[str, str]] = {
            (str(kind), str(key)) for kind, key in self.db.read("SELECT kind, key FROM observed")
        }
        self._pending: dict[tuple[str, str], PendingTask] = {}
        for kind, key, source, data, tries in self.db.read(
            "SELECT kind, key, source, data, tries FROM pending"
        ):
            task = Task(str(kind), str(key), str(source), json.loads(str(data)))
            self._pending[(task.kind, task.key)] = PendingTask(task, int(tries))  # type: ignore[call-overload]
        self._load_series()

    def _load_series(self) -> None:
        stored = {str(k): str(v) for k, v in self.db.read("SELECT metric, signature FROM layouts")}
        changed = [name for name, layout in LAYOUTS.items() if stored.get(name) != layout.signature]
        if changed and self.db.read_only:
            raise StateError(
                f"state.path: {self.path} was written with other histogram layouts; the "
                "exporter converts it when it next starts"
            )
        if changed:
            # Bucket layouts changed with this version: those histograms restart from zero.
            def relayout(db: sqlite3.Connection) -> None:
                for name in changed:
                    if name in stored:
                        db.execute("DELETE FROM series WHERE metric = ?", (name,))
                    db.execute(
                        "INSERT OR REPLACE INTO layouts VALUES (?, ?)",
                        (name, LAYOUTS[name].signature),
                    )

            self.db.run(relayout)
            restarted = sorted(set(changed) & set(stored))
            if restarted:
                log.warning("histogram layouts changed; these restart", metrics=restarted)
        self.aggregates.load(
            self.db.read(  # type: ignore[arg-type]
                "SELECT metric, labels, value, sum, count, slots, at, updated FROM series"
            )
        )

    # -- commit ---------------------------------------------------------------------------------------
    def commit(self, unit: Unit) -> bool:
        """Apply the unit; False when it was applied before (or its task is no longer pending)."""
        return self.commit_many([unit])[0]

    def commit_many(self, units: Sequence[Unit]) -> list[bool]:
        """Apply, in one transaction, each unit not applied before: a crash keeps all of them or
        none, and a unit seen before (a job a webhook recorded) is skipped alone."""
        now = self.clock()
        with self._lock:
            applied: list[bool] = []
            keys: set[tuple[str, str]] = set()
            for unit in units:
                fresh = not any(key in self._observed or key in keys for key in unit.keys)
                fresh = fresh and all(key in self._pending for key in unit.done)
                applied.append(fresh)
                if fresh:
                    keys.update(unit.keys)
            chosen = [unit for unit, ok in zip(units, applied, strict=True) if ok]
            if chosen:
                self._apply(_merged(chosen), now)
            return applied

    def _apply(self, unit: Unit, now: float) -> None:
        with self._lock:
            # A test report's case history is read and planned here, under the lock, and written
            # in the unit's transaction: its counters and its history commit together.
            cases = self.cases.plan(unit.cases) if unit.cases is not None else None
            if cases is not None:
                unit = replace(unit, items=unit.items + cases.items)
            plan = self.aggregates.plan(unit, now)

            def write(db: sqlite3.Connection) -> None:
                self._write(db, unit, plan, now)
                if cases is not None:
                    self.cases.write(db, cases)

            self.db.run(write)
            self._observed.update(unit.keys)
            for key in unit.done:
                del self._pending[key]
            for task in unit.enqueue:
                self._pending.setdefault((task.kind, task.key), PendingTask(task, 0))
            self.aggregates.apply(plan)

    @staticmethod
    def _write(db: sqlite3.Connection, unit: Unit, plan: Plan, now: float) -> None:
        db.executemany(
            "INSERT OR IGNORE INTO observed (kind, key, source, at) VALUES (?, ?, ?, ?)",
            [(kind, key, unit.source, now) for kind, key in unit.keys],
        )
        db.executemany(
            "DELETE FROM series WHERE metric = ? AND labels = ?",
            [(metric, labels_json(labels)) for metric, labels in plan.deleted],
        )
        db.executemany(
            "INSERT OR REPLACE INTO series VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [series_row(metric, labels, s) for (metric, labels), s in plan.changed.items()],
        )
        db.executemany(
            "INSERT OR IGNORE INTO pending (kind, key, source, data, tries, created) "
            "VALUES (?, ?, ?, ?, 0, ?)",
            [(t.kind, t.key, t.source, json.dumps(dict(t.data)), now) for t in unit.enqueue],
        )
        db.executemany("DELETE FROM pending WHERE kind = ? AND key = ?", list(unit.done))

    def is_observed(self, kind: str, key: str) -> bool:
        with self._lock:
            return (kind, key) in self._observed

    # -- pending tasks ------------------------------------------------------------------------------
    def pending(self, source: str, kind: str | None = None) -> list[PendingTask]:
        with self._lock:
            return [
                p
                for p in self._pending.values()
                if p.task.source == source and (kind is None or p.task.kind == kind)
            ]

    def task_failed(self, task: Task) -> int:
        """Count a failed try of a pending task; returns the tries so far."""
        key = (task.kind, task.key)
        with self._lock:
            current = self._pending.get(key)
            if current is None:
                return 0
            tries = current.tries + 1
            self.db.run(
                lambda db: db.execute(
                    "UPDATE pending SET tries = ? WHERE kind = ? AND key = ?", (tries, *key)
                )
            )
            self._pending[key] = PendingTask(current.task, tries)
            return tries

    # -- housekeeping ----------------------------------------------------------------------------------
    def prune(self, before: float) -> int:
        """Forget observed ids and cached responses not used since `before`: they are outside every
        window a poller reads again."""
        with self._lock:
            old = {
                (str(kind), str(key))
                for kind, key in self.db.read(
                    "SELECT kind, key FROM observed WHERE at < ?", (before,)
                )
            }
            if old:
                self.db.run(lambda db: db.execute("DELETE FROM observed WHERE at < ?", (before,)))
                self._observed -= old
            self.http_cache.prune(before)
            return len(old)

    def remove_series(self, keep: Callable[[str, Labels], bool]) -> dict[str, int]:
        """Delete every series `keep` rejects, from memory and from the file."""
        with self._lock:
            doomed = [
                (metric, labels)
                for metric, labels, _ in self.aggregates.items()
                if not keep(metric, labels)
            ]
            if not doomed:
                return {}
            self.db.run(lambda db: _delete(db, doomed))
            return self.aggregates.remove(doomed)

    def forget_sources(self, keep: Callable[[str], bool]) -> list[str]:
        """Forget every source `keep` rejects (removed from the config, or now another shard's):
        its records, pending tasks and observed ids, in one transaction. Its series go with
        `remove_series`, so a source added back starts afresh from the lookback window."""
        with self._lock:
            known = {str(s) for (s,) in self.db.read("SELECT DISTINCT source FROM observed")}
            known |= self.records.sources() | {p.task.source for p in self._pending.values()}
            doomed = sorted(source for source in known if not keep(source))
            if not doomed:
                return []

            def write(db: sqlite3.Connection) -> None:
                for table in ("source_records", "pending", "observed"):
                    db.executemany(
                        f"DELETE FROM {table} WHERE source = ?",
                        [(source,) for source in doomed],
                    )

            self.db.run(write)
            gone = set(doomed)
            self.records.forget(gone)
            self._pending = {k: p for k, p in self._pending.items() if p.task.source not in gone}
            self._observed = {
                (str(kind), str(key))
                for kind, key in self.db.read("SELECT kind, key FROM observed")
            }
            return doomed

    def expire(self, before: float) -> dict[str, int]:
        """Delete series not updated since `before`, counting them per metric in
        ci_pipeline_exporter_series_expired_total — in one transaction."""
        now = self.clock()
        with self._lock:
            stale = [k for k in self.aggregates.stale(before) if k[0] != m.SERIES_EXPIRED.name]
            if not stale:
                return {}
            counts: dict[str, int] = {}
            for metric, _ in stale:
                counts[metric] = counts.get(metric, 0) + 1
            items = tuple(Increment(m.SERIES_EXPIRED, (name,), n) for name, n in counts.items())
            unit = Unit("maintenance", items=items)
            self.aggregates.remove(stale)
            plan = self.aggregates.plan(unit, now)

            def write(db: sqlite3.Connection) -> None:
                _delete(db, stale)
                self._write(db, unit, plan, now)

            try:
                self.db.run(write)
            except BaseException:
                # Nothing was deleted from the file: memory takes it back from there.
                self._reload()
                raise
            self.aggregates.apply(plan)
            return counts

    def _reload(self) -> None:
        self.aggregates = Aggregates(self.aggregates.max_series)
        self._load_series()

    @contextmanager
    def reading(self) -> Iterator[Aggregates]:
        """The aggregates, with commits held off while the block renders them."""
        with self._lock:
            yield self.aggregates

    def schema_version(self) -> int:
        return self.db.schema_version()

    def close(self) -> None:
        """Waits for the commit in progress, then closes."""
        with self._lock:
            self.db.close()


def _delete(db: sqlite3.Connection, keys: list[tuple[str, Labels]]) -> None:
    db.executemany(
        "DELETE FROM series WHERE metric = ? AND labels = ?",
        [(metric, labels_json(labels)) for metric, labels in keys],
    )


def _merged(units: Sequence[Unit]) -> Unit:
    """Units of one source committed together, planned as one (each sees the ones before it)."""
    if len(units) == 1:
        return units[0]
    reports = [unit.cases for unit in units if unit.cases is not None]
    if len(reports) > 1:
        # Each report's history is planned against the stored one: one per transaction.
        raise ValueError("at most one unit with a test report per commit")
    limits: dict[str, int] = {}
    for unit in units:
        limits.update(unit.limits)
    return Unit(
        source=units[0].source,
        items=tuple(item for unit in units for item in unit.items),
        keys=tuple(key for unit in units for key in unit.keys),
        enqueue=tuple(task for unit in units for task in unit.enqueue),
        done=tuple(key for unit in units for key in unit.done),
        limits=limits,
        cases=reports[0] if reports else None,
    )
