"""SQLite state: observed run attempts, per-source state (watermarks), the HTTP ETag cache, and the
metric aggregates (histogram values, counters, latest-value gauges) that survive restarts.

Observations are recorded in one transaction together with the id that marks them observed, so a
crash either keeps both or neither: nothing is lost and nothing is counted twice.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exporter.metrics import SERIES_DROPPED, MetricSpec

LabelValues = tuple[str, ...]
SeriesKey = tuple[str, LabelValues]
OTHER = "other"

# Each entry migrates user_version i → i+1.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE observed (
        kind TEXT NOT NULL, key TEXT NOT NULL, source TEXT NOT NULL, at REAL NOT NULL,
        PRIMARY KEY (kind, key));
    CREATE INDEX observed_at ON observed (at);
    CREATE TABLE source_state (source TEXT PRIMARY KEY, data TEXT NOT NULL);
    CREATE TABLE http_cache (
        key TEXT PRIMARY KEY, etag TEXT NOT NULL, body BLOB NOT NULL, used REAL NOT NULL);
    CREATE TABLE hist_values (
        metric TEXT NOT NULL, labels TEXT NOT NULL, value REAL NOT NULL, count INTEGER NOT NULL,
        PRIMARY KEY (metric, labels, value));
    CREATE TABLE hist_totals (
        metric TEXT NOT NULL, labels TEXT NOT NULL, sum REAL NOT NULL, count INTEGER NOT NULL,
        PRIMARY KEY (metric, labels));
    CREATE TABLE counters (
        metric TEXT NOT NULL, labels TEXT NOT NULL, value REAL NOT NULL,
        PRIMARY KEY (metric, labels));
    CREATE TABLE gauges (
        metric TEXT NOT NULL, labels TEXT NOT NULL, value REAL NOT NULL, at REAL NOT NULL,
        PRIMARY KEY (metric, labels));
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


class StoreClosed(RuntimeError):
    """The store was closed (shutting down); the write did not happen."""


@dataclass
class Histogram:
    """Exact distribution of one series: observed value → count (values are rounded to 1 ms), so
    any bucket layout can be rendered, also after the configured targets change."""

    values: dict[float, int] = field(default_factory=dict)
    sum: float = 0.0
    count: int = 0

    def cumulative(self, bounds: Sequence[float]) -> list[int]:
        ordered = sorted(self.values.items())
        result: list[int] = []
        index = running = 0
        for bound in bounds:
            while index < len(ordered) and ordered[index][0] <= bound:
                running += ordered[index][1]
                index += 1
            result.append(running)
        return result


def _labels_key(values: LabelValues) -> str:
    return json.dumps(list(values), separators=(",", ":"))


def quantize(value: float) -> float:
    return round(max(0.0, float(value)), 3)


@dataclass
class _Pending:
    observed: list[tuple[str, str, str, float]] = field(default_factory=list)
    hist: list[tuple[str, LabelValues, float]] = field(default_factory=list)
    counters: list[tuple[str, LabelValues, float]] = field(default_factory=list)
    gauges: list[tuple[str, LabelValues, float, float]] = field(default_factory=list)
    # (metric, prefix, entries, at): replaces every series of the metric starting with prefix
    groups: list[tuple[str, LabelValues, dict[LabelValues, float], float]] = field(
        default_factory=list
    )


class Transaction:
    """Collects one unit of observations; applied atomically by `Store.transaction`."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._pending = _Pending()
        # Set after the block: False when the unit had been observed before (nothing applied).
        self.applied = False

    def mark_observed(self, kind: str, key: str, source: str, at: float | None = None) -> None:
        self._pending.observed.append((kind, key, source, time.time() if at is None else at))

    def observe(self, spec: MetricSpec, labels: LabelValues, value: float) -> None:
        labels = self._store.fold(spec, labels)
        self._pending.hist.append((spec.name, labels, quantize(value)))

    def inc(self, spec: MetricSpec, labels: LabelValues, amount: float = 1.0) -> None:
        labels = self._store.fold(spec, labels)
        self._pending.counters.append((spec.name, labels, amount))

    def set_latest(self, spec: MetricSpec, labels: LabelValues, value: float, at: float) -> None:
        """Set a gauge unless a value from a later moment (`at`) is already stored."""
        labels = self._store.fold(spec, labels)
        self._pending.gauges.append((spec.name, labels, float(value), at))

    def replace_latest_group(
        self, spec: MetricSpec, prefix: LabelValues, entries: dict[LabelValues, float], at: float
    ) -> None:
        """Replace all series of `spec` under `prefix` (e.g. the latest run's critical path)."""
        folded = {self._store.fold(spec, prefix + rest): v for rest, v in entries.items()}
        self._pending.groups.append((spec.name, prefix, folded, at))


class Store:
    """The embedded state store. Thread-safe; one writer at a time."""

    def __init__(self, path: str | Path, max_series_per_metric: int = 5000) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db: sqlite3.Connection | None = sqlite3.connect(
            self.path, check_same_thread=False, isolation_level=None, timeout=30
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self.max_series = max_series_per_metric
        self._migrate()
        self.histograms: dict[SeriesKey, Histogram] = {}
        self.counters: dict[SeriesKey, float] = {}
        self.gauges: dict[SeriesKey, tuple[float, float]] = {}
        self._series_per_metric: dict[str, set[LabelValues]] = {}
        self._observed: set[tuple[str, str]] = set()
        self._load()

    # -- schema -----------------------------------------------------------------------------
    def _migrate(self) -> None:
        db = self._conn()
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise RuntimeError(
                f"state {self.path} has schema version {version}, newer than this exporter's "
                f"{SCHEMA_VERSION}; use a newer exporter or another state.path"
            )
        for target in range(version, SCHEMA_VERSION):
            db.execute("BEGIN IMMEDIATE")
            for statement in MIGRATIONS[target].split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA user_version = {target + 1}")
            db.execute("COMMIT")

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreClosed("state store is closed")
        return self._db

    def schema_version(self) -> int:
        with self._lock:
            return int(self._conn().execute("PRAGMA user_version").fetchone()[0])

    def _load(self) -> None:
        db = self._conn()
        for kind, key in db.execute("SELECT kind, key FROM observed"):
            self._observed.add((kind, key))
        for metric, labels, value, count in db.execute(
            "SELECT metric, labels, value, count FROM hist_values"
        ):
            hist = self.histograms.setdefault((metric, tuple(json.loads(labels))), Histogram())
            hist.values[float(value)] = int(count)
        for metric, labels, total, count in db.execute(
            "SELECT metric, labels, sum, count FROM hist_totals"
        ):
            hist = self.histograms.setdefault((metric, tuple(json.loads(labels))), Histogram())
            hist.sum, hist.count = float(total), int(count)
        for metric, labels, value in db.execute("SELECT metric, labels, value FROM counters"):
            self.counters[(metric, tuple(json.loads(labels)))] = float(value)
        for metric, labels, value, at in db.execute("SELECT metric, labels, value, at FROM gauges"):
            self.gauges[(metric, tuple(json.loads(labels)))] = (float(value), float(at))
        for metric, labels in [*self.histograms, *self.counters, *self.gauges]:
            self._series_per_metric.setdefault(metric, set()).add(labels)

    def close(self) -> None:
        """Waits for the write in progress, then closes."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    @property
    def closed(self) -> bool:
        return self._db is None

    # -- cardinality --------------------------------------------------------------------------
    def fold(self, spec: MetricSpec, labels: LabelValues) -> LabelValues:
        """Labels as stored: unchanged while the metric is under its cap; else the foldable labels
        become "other" and the fold is counted in ci_pipeline_exporter_series_dropped_total."""
        if len(labels) != len(spec.labels):
            raise ValueError(f"{spec.name}: expected labels {spec.labels}, got {labels}")
        with self._lock:
            known = self._series_per_metric.setdefault(spec.name, set())
            if labels in known or len(known) < self.max_series or not spec.foldable:
                known.add(labels)
                return labels
            folded = tuple(
                OTHER if name in spec.foldable else value
                for name, value in zip(spec.labels, labels, strict=True)
            )
            known.add(folded)
            key = (SERIES_DROPPED.name, (spec.name,))
            self.counters[key] = self.counters.get(key, 0.0) + 1
            self._series_per_metric.setdefault(SERIES_DROPPED.name, set()).add((spec.name,))
            if self._db is not None:
                self._db.execute(
                    "INSERT INTO counters (metric, labels, value) VALUES (?, ?, 1) "
                    "ON CONFLICT (metric, labels) DO UPDATE SET value = value + 1",
                    (SERIES_DROPPED.name, _labels_key((spec.name,))),
                )
            return folded

    # -- observations ---------------------------------------------------------------------------
    def is_observed(self, kind: str, key: str) -> bool:
        with self._lock:
            return (kind, key) in self._observed

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """Apply everything recorded in the block atomically. If any `mark_observed` key was
        already observed, nothing is applied (the unit was counted before)."""
        tx = Transaction(self)
        yield tx
        tx.applied = self._apply(tx._pending)

    def _apply(self, pending: _Pending) -> bool:
        with self._lock:
            db = self._conn()
            if any((kind, key) in self._observed for kind, key, _, _ in pending.observed):
                return False
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany(
                    "INSERT INTO observed (kind, key, source, at) VALUES (?, ?, ?, ?)",
                    pending.observed,
                )
                totals: dict[tuple[str, LabelValues], tuple[float, int]] = {}
                for metric, labels, value in pending.hist:
                    db.execute(
                        "INSERT INTO hist_values (metric, labels, value, count) VALUES (?,?,?,1) "
                        "ON CONFLICT (metric, labels, value) DO UPDATE SET count = count + 1",
                        (metric, _labels_key(labels), value),
                    )
                    total, count = totals.get((metric, labels), (0.0, 0))
                    totals[(metric, labels)] = (total + value, count + 1)
                for (metric, labels), (total, count) in totals.items():
                    db.execute(
                        "INSERT INTO hist_totals (metric, labels, sum, count) VALUES (?,?,?,?) "
                        "ON CONFLICT (metric, labels) DO UPDATE SET "
                        "sum = sum + excluded.sum, count = count + excluded.count",
                        (metric, _labels_key(labels), total, count),
                    )
                for metric, labels, amount in pending.counters:
                    db.execute(
                        "INSERT INTO counters (metric, labels, value) VALUES (?,?,?) "
                        "ON CONFLICT (metric, labels) DO UPDATE SET value = value + excluded.value",
                        (metric, _labels_key(labels), amount),
                    )
                gauge_updates: list[tuple[str, LabelValues, float, float]] = []
                for metric, labels, value, at in pending.gauges:
                    current = self.gauges.get((metric, labels))
                    if current is None or at >= current[1]:
                        gauge_updates.append((metric, labels, value, at))
                group_updates: list[tuple[str, LabelValues, dict[LabelValues, float], float]] = []
                for metric, prefix, entries, at in pending.groups:
                    newest = max(
                        (
                            a
                            for (m, lab), (_, a) in self.gauges.items()
                            if m == metric and lab[: len(prefix)] == prefix
                        ),
                        default=None,
                    )
                    if newest is None or at >= newest:
                        group_updates.append((metric, prefix, entries, at))
                for metric, prefix, entries, at in group_updates:
                    for m, lab in [k for k in self.gauges if k[0] == metric]:
                        if lab[: len(prefix)] == prefix:
                            db.execute(
                                "DELETE FROM gauges WHERE metric = ? AND labels = ?",
                                (m, _labels_key(lab)),
                            )
                    for labels, value in entries.items():
                        gauge_updates.append((metric, labels, value, at))
                for metric, labels, value, at in gauge_updates:
                    db.execute(
                        "INSERT INTO gauges (metric, labels, value, at) VALUES (?,?,?,?) "
                        "ON CONFLICT (metric, labels) DO UPDATE SET "
                        "value = excluded.value, at = excluded.at",
                        (metric, _labels_key(labels), value, at),
                    )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            # Committed: now the in-memory view the collector renders.
            for kind, key, _, _ in pending.observed:
                self._observed.add((kind, key))
            for metric, labels, value in pending.hist:
                hist = self.histograms.setdefault((metric, labels), Histogram())
                hist.values[value] = hist.values.get(value, 0) + 1
                hist.sum += value
                hist.count += 1
            for metric, labels, amount in pending.counters:
                self.counters[(metric, labels)] = self.counters.get((metric, labels), 0.0) + amount
            for metric, prefix, _, _ in group_updates:
                for series in [k for k in self.gauges if k[0] == metric]:
                    if series[1][: len(prefix)] == prefix:
                        del self.gauges[series]
            for metric, labels, value, at in gauge_updates:
                self.gauges[(metric, labels)] = (value, at)
            return True

    def label_values(self, metric: str, prefix: LabelValues) -> set[LabelValues]:
        """Known label sets of a metric that start with `prefix`."""
        with self._lock:
            return {
                labels
                for labels in self._series_per_metric.get(metric, set())
                if labels[: len(prefix)] == prefix
            }

    def prune_observed(self, before: float) -> int:
        """Forget observed ids older than `before`; they are outside every window the pollers read."""
        with self._lock:
            db = self._conn()
            rows = db.execute("SELECT kind, key FROM observed WHERE at < ?", (before,)).fetchall()
            if rows:
                db.execute("DELETE FROM observed WHERE at < ?", (before,))
                for kind, key in rows:
                    self._observed.discard((kind, key))
            db.execute("DELETE FROM http_cache WHERE used < ?", (before,))
            return len(rows)

    # -- volatile gauges (recomputed each poll, kept so a restart shows the last known) -------
    def set_gauges(
        self, spec: MetricSpec, prefix: LabelValues, values: dict[LabelValues, float]
    ) -> None:
        """Replace every series of `spec` under `prefix` with `values` (e.g. active runs)."""
        with self._lock:
            db = self._conn()
            now = time.time()
            db.execute("BEGIN IMMEDIATE")
            try:
                for key in [k for k in self.gauges if k[0] == spec.name]:
                    if key[1][: len(prefix)] == prefix:
                        db.execute(
                            "DELETE FROM gauges WHERE metric = ? AND labels = ?",
                            (spec.name, _labels_key(key[1])),
                        )
                        del self.gauges[key]
                for labels, value in values.items():
                    db.execute(
                        "INSERT INTO gauges (metric, labels, value, at) VALUES (?,?,?,?) "
                        "ON CONFLICT (metric, labels) DO UPDATE SET value = excluded.value",
                        (spec.name, _labels_key(labels), value, now),
                    )
                    self.gauges[(spec.name, labels)] = (value, now)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    # -- per-source state and the HTTP cache -----------------------------------------------------
    def get_source_state(self, source: str) -> dict[str, Any]:
        with self._lock:
            row = (
                self._conn()
                .execute("SELECT data FROM source_state WHERE source = ?", (source,))
                .fetchone()
            )
        return dict(json.loads(row[0])) if row else {}

    def set_source_state(self, source: str, data: dict[str, Any]) -> None:
        with self._lock:
            self._conn().execute(
                "INSERT INTO source_state (source, data) VALUES (?, ?) "
                "ON CONFLICT (source) DO UPDATE SET data = excluded.data",
                (source, json.dumps(data, sort_keys=True)),
            )

    def get_http_cache(self, key: str) -> tuple[str, bytes] | None:
        with self._lock:
            row = (
                self._conn()
                .execute("SELECT etag, body FROM http_cache WHERE key = ?", (key,))
                .fetchone()
            )
            if row is None:
                return None
            self._conn().execute("UPDATE http_cache SET used = ? WHERE key = ?", (time.time(), key))
        return str(row[0]), zlib.decompress(row[1])

    def put_http_cache(self, key: str, etag: str, body: bytes) -> None:
        with self._lock:
            self._conn().execute(
                "INSERT INTO http_cache (key, etag, body, used) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET etag = excluded.etag, body = excluded.body, "
                "used = excluded.used",
                (key, etag, zlib.compress(body), time.time()),
            )

    # -- reading for the collector ---------------------------------------------------------------
    @contextmanager
    def reading(
        self,
    ) -> Iterator[
        tuple[
            dict[SeriesKey, Histogram],
            dict[SeriesKey, float],
            dict[SeriesKey, tuple[float, float]],
        ]
    ]:
        """The live aggregates, with writers held off while the block renders them."""
        with self._lock:
            yield self.histograms, self.counters, self.gauges
