"""Executors run the SQL that ``storage.sql`` builds; the store never touches a driver.

``SqliteExecutor`` serves ``file:`` URLs with stdlib sqlite3: one persistent connection in WAL
mode, used only from one dedicated worker thread so the event loop never blocks. (libsql-client's
own ``file:`` mode opens a connection per call and runs it on the event loop: measured ~500
writes/s against ~11k here.) Remote URLs go to ``storage.remote.LibsqlExecutor``.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from episodic_memory.errors import ConfigurationError, StorageError
from episodic_memory.storage.sql import Params, Statement, Value

__all__ = ["Executor", "Result", "SqliteExecutor", "path_from_file_url"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Result:
    """Rows of a statement (empty for writes) and how many rows it changed."""

    rows: list[tuple[Value, ...]]
    rows_affected: int = 0


class Executor(Protocol):
    """What a backend must do: single statements, and lists of them in one transaction."""

    async def execute(self, sql: str, params: Params = ()) -> Result: ...

    async def batch(
        self, statements: Sequence[Statement], *, read_only: bool = False
    ) -> list[Result]:
        """Run all statements in one transaction (all or nothing); one result per statement."""
        ...

    async def close(self) -> None: ...


def path_from_file_url(url: str) -> str:
    """``file:/a/b``, ``file:///a/b``, ``file://localhost/a/b``, ``file:rel`` → a plain path.

    The rest of the URL is taken verbatim (no percent-decoding, no query), because the config
    builds these URLs from plain paths. ``file::memory:`` gives a private in-memory database.
    """
    if not url.startswith("file:"):
        raise ConfigurationError(f"not a file: URL: {url!r}")
    raw = url[len("file:") :]
    if raw.startswith("//"):
        authority, _, rest = raw[2:].partition("/")
        if authority not in ("", "localhost"):
            raise ConfigurationError(
                f"storage.database_url: file URL names host {authority!r}; a file: URL must "
                "point at a local path (file:/path/to/memory.db)"
            )
        raw = "/" + rest
    if not raw.strip():
        raise ConfigurationError(
            "storage.database_url: file: URL has no path (use file:/path/to/memory.db)"
        )
    return raw


def _translate(exc: sqlite3.Error, path: str) -> StorageError:
    message = str(exc)
    if isinstance(exc, sqlite3.OperationalError) and "locked" in message:
        return StorageError(
            f"sqlite database {path!r} stayed locked by another writer past busy_timeout: "
            "raise storage.busy_timeout_ms or reduce concurrent writers"
        )
    if isinstance(exc, sqlite3.DatabaseError) and "not a database" in message:
        return StorageError(f"{path!r} is not a SQLite database: point database_url elsewhere")
    if isinstance(exc, sqlite3.OperationalError) and "unable to open" in message:
        return StorageError(f"cannot open sqlite database {path!r}: check the folder's permissions")
    return StorageError(f"sqlite error on {path!r}: {type(exc).__name__}: {message}")


class SqliteExecutor:
    """One stdlib sqlite3 connection owned by one worker thread (WAL, synchronous=NORMAL)."""

    def __init__(self, path: str, *, busy_timeout_ms: int = 5_000) -> None:
        self._path = path
        self._busy_timeout_ms = busy_timeout_ms
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="episodic-sqlite")
        self._conn: sqlite3.Connection | None = None  # touched only in the worker thread
        self._closed = False

    @property
    def path(self) -> str:
        return self._path

    def _connect(self) -> sqlite3.Connection:
        if self._path != ":memory:":
            Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            self._path, timeout=self._busy_timeout_ms / 1000, isolation_level=None
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
        except BaseException:
            conn.close()
            raise
        return conn

    def _call(self, work: Callable[[sqlite3.Connection], T]) -> T:
        try:
            if self._conn is None:
                self._conn = self._connect()
            return work(self._conn)
        except sqlite3.Error as exc:
            raise _translate(exc, self._path) from exc
        except OSError as exc:  # the parent folder could not be created
            raise StorageError(f"cannot create the folder for {self._path!r}: {exc}") from exc

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise StorageError("the store is closed: open a new one with open_store(config)")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._call, work)

    async def execute(self, sql: str, params: Params = ()) -> Result:
        def work(conn: sqlite3.Connection) -> Result:
            cursor = conn.execute(sql, params)
            rows = cursor.fetchall() if cursor.description else []
            return Result(rows, max(cursor.rowcount, 0))

        return await self._run(work)

    async def batch(
        self, statements: Sequence[Statement], *, read_only: bool = False
    ) -> list[Result]:
        statements = list(statements)

        def work(conn: sqlite3.Connection) -> list[Result]:
            # IMMEDIATE takes the write lock up front: a deferred transaction that upgrades
            # later can fail with SQLITE_BUSY at once instead of waiting out busy_timeout.
            conn.execute("BEGIN" if read_only else "BEGIN IMMEDIATE")
            try:
                results: list[Result] = []
                for sql, params in statements:
                    cursor = conn.execute(sql, params)
                    rows = cursor.fetchall() if cursor.description else []
                    results.append(Result(rows, max(cursor.rowcount, 0)))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return results

        return await self._run(work)

    async def close(self) -> None:
        """Close the connection in its own thread, then stop the thread. Idempotent."""
        if self._closed:
            return
        self._closed = True

        def shut(_: object = None) -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        try:
            await asyncio.get_running_loop().run_in_executor(self._pool, shut)
        except sqlite3.Error as exc:
            raise _translate(exc, self._path) from exc
        finally:
            self._pool.shutdown(wait=True)
