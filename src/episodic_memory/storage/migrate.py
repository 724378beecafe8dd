"""Numbered schema migrations: ``migrations/NNNN_name.sql``, applied in order, recorded.

Each migration runs in one transaction together with its ``schema_migrations`` row, so a
database is always at a whole version. Running again applies nothing. A database whose
recorded version is newer than this code is refused (old code must not write a newer shape),
and so is an applied migration whose file has since changed (fix forward with a new file).
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING

from episodic_memory.errors import QuotaExceeded, SchemaVersionError, StorageError, StoreUnavailable

if TYPE_CHECKING:
    from episodic_memory.storage.executors import Executor

__all__ = [
    "Migration",
    "apply_migrations",
    "latest_version",
    "load_migrations",
    "split_statements",
]

_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

_CREATE_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    "version INTEGER PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL, "
    "applied_at REAL NOT NULL)"
)
_RECORD = "INSERT INTO schema_migrations (version, name, checksum, applied_at) VALUES (?, ?, ?, ?)"


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str
    checksum: str  # sha256 of the file's text

    @property
    def label(self) -> str:
        return f"{self.version:04d}_{self.name}"


def load_migrations() -> list[Migration]:
    """The package's migrations in version order (works from a wheel or a source tree)."""
    folder = resources.files("episodic_memory") / "migrations"
    found: list[Migration] = []
    for entry in folder.iterdir():
        match = _FILE_NAME.match(entry.name)
        if match is None:
            continue
        text = entry.read_text(encoding="utf-8")
        checksum = hashlib.sha256(text.encode("utf-8")).hexdigest()
        found.append(Migration(int(match[1]), match[2], text, checksum))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise SchemaVersionError(f"two migration files share a version number: {versions}")
    return found


def latest_version(migrations: Sequence[Migration] | None = None) -> int:
    migrations = load_migrations() if migrations is None else migrations
    return max((m.version for m in migrations), default=0)


def split_statements(script: str) -> list[str]:
    """One string per statement, cut where SQLite's own tokenizer says a statement ends.

    Needed because remote batches take one statement per step; ``complete_statement``
    understands comments, quotes and ``BEGIN ... END`` trigger bodies, a naive split does not.
    """
    statements: list[str] = []
    start = 0
    for index, char in enumerate(script):
        if char == ";" and sqlite3.complete_statement(script[start : index + 1]):
            statement = script[start : index + 1].strip()
            if statement != ";":
                statements.append(statement)
            start = index + 1
    tail = "\n".join(line.split("--", 1)[0] for line in script[start:].splitlines()).strip()
    if tail:
        raise SchemaVersionError(f"migration ends without ';' after: {tail[:80]!r}")
    return statements


async def _applied(executor: Executor) -> dict[int, tuple[str, str]]:
    result = await executor.execute("SELECT version, name, checksum FROM schema_migrations")
    return {int(str(v)): (str(n), str(c)) for v, n, c in result.rows}


async def apply_migrations(
    executor: Executor, migrations: Sequence[Migration] | None = None
) -> list[int]:
    """Apply pending migrations in order; return the versions applied (empty if up to date)."""
    migrations = load_migrations() if migrations is None else migrations
    supported = latest_version(migrations)
    await executor.execute(_CREATE_TABLE)
    applied = await _applied(executor)
    newest = max(applied, default=0)
    if newest > supported:
        raise SchemaVersionError(
            f"the database schema is at version {newest}, but this episodic-memory supports "
            f"up to version {supported}: upgrade the episodic-memory package "
            "(pip install -U episodic-memory) before opening this database"
        )
    for migration in migrations:
        if migration.version in applied and applied[migration.version][1] != migration.checksum:
            raise SchemaVersionError(
                f"migration {migration.label} was changed after it was applied to this "
                "database (checksum differs): restore the original file and put the change "
                "in a new numbered migration"
            )
    done: list[int] = []
    for migration in migrations:
        if migration.version in applied:
            continue
        statements = [(sql, ()) for sql in split_statements(migration.sql)]
        record = (migration.version, migration.name, migration.checksum, time.time())
        try:
            await executor.batch([*statements, (_RECORD, record)])
        except (StoreUnavailable, QuotaExceeded):
            raise
        except StorageError as exc:
            # Another process may have applied it between our read and our write.
            if (await _applied(executor)).get(migration.version, ("", ""))[1] == (
                migration.checksum
            ):
                continue
            raise SchemaVersionError(
                f"migration {migration.label} failed and was rolled back; the database "
                f"stays at version {max(applied, default=0)}: {exc}"
            ) from exc
        applied[migration.version] = (migration.name, migration.checksum)
        done.append(migration.version)
    return done
