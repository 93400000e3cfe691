"""Conditional-request cache: ETag and body per request, so an unchanged listing costs a 304 (free
of rate limit) also after a restart."""

from __future__ import annotations

import time
import zlib

from exporter.store.db import Database


class HttpCache:
    def __init__(self, db: Database) -> None:
        self._db = db

    def get(self, key: str) -> tuple[str, bytes] | None:
        rows = self._db.read("SELECT etag, body FROM http_cache WHERE key = ?", (key,))
        if not rows:
            return None
        etag, body = rows[0]
        if not isinstance(body, bytes):
            return None
        try:
            return str(etag), zlib.decompress(body)
        except zlib.error:
            return None

    def put(self, key: str, etag: str, body: bytes) -> None:
        self._db.run(
            lambda db: db.execute(
                "INSERT INTO http_cache (key, etag, body, used) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET etag = excluded.etag, body = excluded.body, "
                "used = excluded.used",
                (key, etag, zlib.compress(body), time.time()),
            )
        )

    def touch(self, key: str) -> None:
        self._db.run(
            lambda db: db.execute(
                "UPDATE http_cache SET used = ? WHERE key = ?", (time.time(), key)
            )
        )

    def prune(self, before: float) -> None:
        self._db.run(lambda db: db.execute("DELETE FROM http_cache WHERE used < ?", (before,)))
