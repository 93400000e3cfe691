"""The SQLite file: opening it (or refusing it, or moving a damaged one aside), migrations, and
writes that survive a full or read-only disk: a failed write changes nothing and the next one is
tried afresh, so the exporter recovers once the disk is fixed, without a restart.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from exporter.logging import get_logger
from exporter.store.migrations import MIGRATIONS

log = get_logger(__name__)
SCHEMA_VERSION = len(MIGRATIONS)
OnDamage = Literal["rebuild", "refuse"]


class StateError(Exception):
    """The state file can't be used at start (one line for the operator; exit 2)."""


class StateWriteError(Exception):
    """A write to the state store failed (disk full, read-only, I/O); nothing of it was applied."""

    reason = "state_write"


class _Damaged(Exception):
    pass


class Database:
    """One connection, serialised by the store's lock. `rebuilt` says whether a damaged file was
    moved aside at start (to `<path>.damaged-<time>`, kept for inspection). A file is used by one
    process at a time: an exclusive lock on `<path>.lock`, held until `close`. `read_only` (the
    report, beside a running exporter) takes no lock, never writes, never migrates."""

    def __init__(
        self, path: str, on_damage: OnDamage = "rebuild", *, read_only: bool = False
    ) -> None:
        self.path = path
        self.read_only = read_only
        self.rebuilt: str | None = None
        self._lock = threading.RLock()
        self._db: sqlite3.Connection | None = None
        self._reopen = False
        self._held: int | None = None
        if path != ":memory:":
            _check_path(path)
            self._held = None if read_only else _lock_file(path)
        try:
            self._open(on_damage)
        except BaseException:
            _unlock(self._held)
            raise

    def _open(self, on_damage: OnDamage) -> None:
        try:
            self._db = self._open_checked()
        except _Damaged as exc:
            if on_damage == "refuse" or self.read_only:
                raise StateError(
                    f"state.path: {self.path} is damaged ({exc}); move it away"
                ) from None
            self.rebuilt = self._move_aside()
            log.error(
                "state file damaged: moved aside, rebuilding from the lookback window",
                path=self.path,
                kept_as=self.rebuilt,
                error=str(exc),
            )
            self._db = self._open_checked()

    # -- opening ----------------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        if self.read_only and self.path != ":memory:":
            uri = f"{Path(self.path).resolve().as_uri()}?mode=ro"
            db = sqlite3.connect(
                uri, uri=True, check_same_thread=False, isolation_level=None, timeout=30
            )
            # One read transaction for the reader's life: everything it reads is one snapshot,
            # whatever the exporter beside it commits meanwhile.
            db.execute("BEGIN")
            return db
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        if self.path != ":memory:":
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
            except sqlite3.OperationalError as exc:
                # A read-only or full disk: the state can still be read; writes fail (counted)
                # until it is fixed, then the connection is opened again.
                log.error("state file not writable", path=self.path, error=str(exc))
                self._reopen = True
            except sqlite3.DatabaseError:
                db.close()  # damaged: let go of it (and the -wal/-shm just made) before it moves
                raise
        return db

    def _open_checked(self) -> sqlite3.Connection:
        if self.path != ":memory:":
            file = Path(self.path)
            if file.exists() and file.stat().st_size == 0:
                raise _Damaged("the file is empty: its state was lost")
        db: sqlite3.Connection | None = None
        try:
            db = self._connect()
            status = db.execute("PRAGMA quick_check(1)").fetchone()[0]
            if status != "ok":
                db.close()
                raise _Damaged(f"integrity check: {status}")
            version = int(db.execute("PRAGMA user_version").fetchone()[0])
        except sqlite3.DatabaseError as exc:
            if db is not None:
                db.close()
            if _is_write_problem(exc):
                hint = (
                    " (reading it needs write access to its directory for SQLite's shared-memory"
                    " file, or the exporter running beside it)"
                    if self.read_only
                    else ""
                )
                raise StateError(f"state.path: {self.path}: {exc}{hint}") from None
            raise _Damaged(str(exc)) from None
        if version > SCHEMA_VERSION:
            db.close()
            raise StateError(
                f"state.path: {self.path} has schema version {version}, newer than this "
                f"exporter's {SCHEMA_VERSION}; use a newer exporter or another state.path"
            )
        if self.read_only and version < SCHEMA_VERSION:
            db.close()
            raise StateError(
                f"state.path: {self.path} has schema version {version}; the exporter migrates it "
                f"to {SCHEMA_VERSION} when it next starts"
            )
        self._migrate(db, version)
        return db

    def _migrate(self, db: sqlite3.Connection, version: int) -> None:
        for target in range(version, SCHEMA_VERSION):
            try:
                db.execute("BEGIN IMMEDIATE")
                MIGRATIONS[target](db)
                db.execute(f"PRAGMA user_version = {target + 1}")
                db.execute("COMMIT")
            except sqlite3.DatabaseError as exc:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                db.close()
                raise StateError(
                    f"state.path: {self.path}: migrating to schema {target + 1} failed: {exc}"
                ) from None

    def _move_aside(self) -> str:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        target = f"{self.path}.damaged-{stamp}"
        for suffix in ("", "-wal", "-shm"):
            source = Path(self.path + suffix)
            if source.exists():
                source.rename(target + suffix)
        return target

    # -- use ----------------------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise StateWriteError("the state store is closed")
        if self._reopen:
            # A read-only file stays read-only for its connection: open again after a failure.
            self._db.close()
            self._db = self._connect()
            self._reopen = False
        return self._db

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One transaction; on any failure nothing is kept and StateWriteError is raised."""
        with self._lock:
            db = self._conn()
            try:
                db.execute("BEGIN IMMEDIATE")
                yield db
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                self._reopen = True
                raise StateWriteError(f"state write failed: {exc}") from None
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise

    def read(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        with self._lock:
            return list(self._conn().execute(sql, params).fetchall())

    def run(self, action: Callable[[sqlite3.Connection], object]) -> None:
        with self.write() as db:
            action(db)

    def schema_version(self) -> int:
        version = self.read("PRAGMA user_version")[0][0]
        assert isinstance(version, int)
        return version

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
            _unlock(self._held)
            self._held = None


def _check_path(path: str) -> None:
    file = Path(path)
    if file.is_dir():
        raise StateError(f"state.path: {path} is a directory, not a file")
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StateError(f"state.path: cannot create {file.parent}: {exc.strerror}") from None


def _lock_file(path: str) -> int | None:
    """An exclusive flock on `<path>.lock` (released by the kernel however the process ends);
    StateError when another process holds it. Without a lock file (a read-only directory) the
    state is used unlocked: logged, since a second process would not be refused then."""
    name = f"{path}.lock"
    fd: int | None = None
    error = ""
    for flags in (os.O_RDWR | os.O_CREAT, os.O_RDONLY):  # a read-only lock file locks too
        try:
            fd = os.open(name, flags | os.O_CLOEXEC, 0o644)
            break
        except OSError as exc:
            error = exc.strerror or str(exc)
    if fd is None:
        log.warning("state file used without its lock", path=name, error=error)
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StateError(
            f"state.path: {path} is in use by another exporter process (it holds {name}); "
            "give each process its own state.path"
        ) from None
    except OSError as exc:  # a filesystem without locks (ENOLCK)
        os.close(fd)
        log.warning("state file used without its lock", path=name, error=exc.strerror)
        return None
    return fd


def _unlock(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)  # closing the only descriptor releases the flock


def _is_write_problem(exc: sqlite3.DatabaseError) -> bool:
    text = str(exc).lower()
    return any(
        marker in text for marker in ("readonly", "read-only", "disk is full", "unable to open")
    )
