"""Typed per-source state: each kind of record (a repository's run window, its workflow graphs, an
image registry's tags, ...) is a pydantic model stored in its own row, so writers of different
records never overwrite each other."""

from __future__ import annotations

import sqlite3
import threading
from typing import ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from exporter.logging import get_logger
from exporter.store.db import Database

log = get_logger(__name__)


class StateRecord(BaseModel):
    model_config = ConfigDict(extra="ignore")
    NAME: ClassVar[str]


R = TypeVar("R", bound=StateRecord)


class SourceRecords:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, str], str] = {
            (str(source), str(name)): str(data)
            for source, name, data in db.read("SELECT source, name, data FROM source_records")
        }

    def get(self, source: str, kind: type[R]) -> R:
        """The stored record, or the model's defaults (also when the stored one is unreadable)."""
        with self._lock:
            data = self._cache.get((source, kind.NAME))
        if data is None:
            return kind()
        try:
            return kind.model_validate_json(data)
        except ValidationError as exc:
            log.warning(
                "state record unreadable, starting it afresh",
                source=source,
                record=kind.NAME,
                error=str(exc).splitlines()[0],
            )
            return kind()

    def put(self, source: str, record: StateRecord) -> None:
        data = record.model_dump_json()

        def write(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO source_records (source, name, data) VALUES (?, ?, ?) "
                "ON CONFLICT (source, name) DO UPDATE SET data = excluded.data",
                (source, record.NAME, data),
            )

        self._db.run(write)
        with self._lock:
            self._cache[(source, record.NAME)] = data

    def sources(self) -> set[str]:
        with self._lock:
            return {source for source, _ in self._cache}

    def forget(self, sources: set[str]) -> None:
        """After their rows were deleted (Store.forget_sources, in its transaction)."""
        with self._lock:
            for key in [k for k in self._cache if k[0] in sources]:
                del self._cache[key]
