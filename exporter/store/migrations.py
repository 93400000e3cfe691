"""Schema migrations: entry i moves a state file from user_version i to i + 1, in one transaction.

Schema 2: histograms as bounded slot counts (`series`), per-source state as typed records
(`source_records`), pending enrichment tasks (`pending`). Schema 3 (this version): the flaky-test
history (`test_attempts`, `test_cases`; see store/cases.py).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable

from exporter.metrics import ALL_METRICS
from exporter.store.layouts import layout_for

_SCHEMA_1 = """
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
"""

_SCHEMA_2 = """
CREATE TABLE series (
    metric TEXT NOT NULL, labels TEXT NOT NULL, value REAL NOT NULL, sum REAL NOT NULL,
    count INTEGER NOT NULL, slots TEXT, at REAL NOT NULL, updated REAL NOT NULL,
    PRIMARY KEY (metric, labels));
CREATE TABLE layouts (metric TEXT PRIMARY KEY, signature TEXT NOT NULL);
CREATE TABLE source_records (
    source TEXT NOT NULL, name TEXT NOT NULL, data TEXT NOT NULL, PRIMARY KEY (source, name));
CREATE TABLE pending (
    kind TEXT NOT NULL, key TEXT NOT NULL, source TEXT NOT NULL, data TEXT NOT NULL,
    tries INTEGER NOT NULL, created REAL NOT NULL, PRIMARY KEY (kind, key));
"""

_SCHEMA_3 = """
CREATE TABLE test_attempts (
    repository TEXT NOT NULL, workflow TEXT NOT NULL, run_id INTEGER NOT NULL,
    attempt INTEGER NOT NULL, sha TEXT NOT NULL, at REAL NOT NULL, seconds REAL NOT NULL,
    failed INTEGER NOT NULL, PRIMARY KEY (repository, run_id, attempt));
CREATE INDEX test_attempts_at ON test_attempts (repository, workflow, at);
CREATE TABLE test_cases (
    repository TEXT NOT NULL, case_id INTEGER NOT NULL, workflow TEXT NOT NULL,
    suite TEXT NOT NULL, classname TEXT NOT NULL, name TEXT NOT NULL, seen REAL NOT NULL,
    results TEXT NOT NULL, flaky INTEGER NOT NULL, runs INTEGER NOT NULL,
    rerun_seconds REAL NOT NULL, last_flaky REAL, PRIMARY KEY (repository, case_id));
CREATE INDEX test_cases_seen ON test_cases (repository, seen);
CREATE INDEX test_cases_flaky ON test_cases (repository, workflow, last_flaky)
    WHERE last_flaky IS NOT NULL;
"""

# Which typed record each key of the schema-1 free-form source state went to.
_RECORD_OF_KEY = {
    "watermark": "window",
    "last_poll": "window",
    "window_start": "window",
    "cache_polled_at": "actions_cache",
    "workflows": "workflows",
    "blobs": "workflows",
    "latest_success": "latest_success",
    "tags": "tags",
}


def _script(db: sqlite3.Connection, script: str) -> None:
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


def _to_schema_1(db: sqlite3.Connection) -> None:
    _script(db, _SCHEMA_1)


def _to_schema_2(db: sqlite3.Connection) -> None:
    _script(db, _SCHEMA_2)
    _move_histograms(db)
    for table in ("counters", "gauges"):
        at = "at" if table == "gauges" else "0"
        db.execute(
            f"INSERT INTO series SELECT metric, labels, value, 0, 0, NULL, {at}, "
            f"strftime('%s', 'now') FROM {table}"
        )
    for source, data in db.execute("SELECT source, data FROM source_state").fetchall():
        records: dict[str, dict[str, object]] = {}
        for key, value in json.loads(data).items():
            name = _RECORD_OF_KEY.get(key)
            if name is not None:
                records.setdefault(name, {})[key] = value
        for name, record in records.items():
            db.execute(
                "INSERT INTO source_records (source, name, data) VALUES (?, ?, ?)",
                (source, name, json.dumps(record)),
            )
    for table in ("hist_values", "hist_totals", "counters", "gauges", "source_state"):
        db.execute(f"DROP TABLE {table}")


def _move_histograms(db: sqlite3.Connection) -> None:
    """Exact value counts → slot counts of each metric's layout (bounded from now on)."""
    layouts = {spec.name: layout_for(spec) for spec in ALL_METRICS if spec.type == "histogram"}
    slots: dict[tuple[str, str], dict[int, int]] = {}
    for metric, labels, value, count in db.execute(
        "SELECT metric, labels, value, count FROM hist_values"
    ):
        layout = layouts.get(metric)
        if layout is not None:
            bucket = slots.setdefault((metric, labels), {})
            slot = layout.slot(float(value))
            bucket[slot] = bucket.get(slot, 0) + int(count)
    for metric, labels, total, count in db.execute(
        "SELECT metric, labels, sum, count FROM hist_totals"
    ).fetchall():
        if metric in layouts:
            db.execute(
                "INSERT INTO series VALUES (?, ?, 0, ?, ?, ?, 0, strftime('%s', 'now'))",
                (metric, labels, total, count, json.dumps(slots.get((metric, labels), {}))),
            )
    for name, layout in layouts.items():
        db.execute("INSERT INTO layouts VALUES (?, ?)", (name, layout.signature))


def _to_schema_3(db: sqlite3.Connection) -> None:
    _script(db, _SCHEMA_3)


MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (
    _to_schema_1,
    _to_schema_2,
    _to_schema_3,
)
