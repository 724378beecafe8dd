"""Migrations on every backend: recorded, idempotent, atomic, and newer databases refused."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from store_helpers import store_config

from episodic_memory.errors import SchemaVersionError
from episodic_memory.storage.libsql_store import SqlEpisodeStore, open_store
from episodic_memory.storage.migrate import (
    Migration,
    apply_migrations,
    latest_version,
    load_migrations,
)


@pytest.fixture
async def migrated(store: SqlEpisodeStore) -> AsyncIterator[SqlEpisodeStore]:
    """The store, with anything a test adds to schema_migrations beyond the code removed."""
    yield store
    await store.executor.batch(
        [
            ("DELETE FROM schema_migrations WHERE version > ?", (latest_version(),)),
            ("DROP TABLE IF EXISTS ok_table", ()),
        ]
    )


async def recorded(store: SqlEpisodeStore) -> list[tuple[object, ...]]:
    result = await store.executor.execute(
        "SELECT version, name, checksum FROM schema_migrations ORDER BY version"
    )
    return result.rows


async def test_every_migration_is_recorded_with_its_name_and_checksum(
    migrated: SqlEpisodeStore,
) -> None:
    expected = [(m.version, m.name, m.checksum) for m in load_migrations()]
    assert await recorded(migrated) == expected
    assert expected[0][:2] == (1, "initial")


async def test_running_migrations_again_applies_nothing(migrated: SqlEpisodeStore) -> None:
    before = await recorded(migrated)
    assert await migrated.migrate() == []
    assert await migrated.migrate() == []
    assert await recorded(migrated) == before


async def test_a_database_newer_than_the_code_is_refused_with_upgrade_advice(
    migrated: SqlEpisodeStore, database_url: str, tmp_path: Path
) -> None:
    newer = latest_version() + 1
    await migrated.executor.execute(
        "INSERT INTO schema_migrations (version, name, checksum, applied_at) "
        "VALUES (?, 'from_the_future', 'x', 0)",
        (newer,),
    )
    with pytest.raises(SchemaVersionError) as caught:
        await migrated.migrate()
    message = str(caught.value)
    assert f"version {newer}" in message
    assert f"up to version {latest_version()}" in message
    assert "upgrade the episodic-memory package" in message
    with pytest.raises(SchemaVersionError):
        await open_store(store_config(database_url, tmp_path))


async def test_an_applied_migration_whose_file_changed_is_refused(
    migrated: SqlEpisodeStore,
) -> None:
    [first, *rest] = load_migrations()
    edited = Migration(first.version, first.name, first.sql + "\n-- edited", "changed")
    with pytest.raises(SchemaVersionError, match="0001_initial was changed"):
        await apply_migrations(migrated.executor, [edited, *rest])


async def test_a_failing_migration_is_rolled_back_whole_and_the_version_stays(
    migrated: SqlEpisodeStore,
) -> None:
    broken = Migration(
        latest_version() + 1,
        "broken",
        "CREATE TABLE ok_table (x INTEGER);\nINSERT INTO no_such_table VALUES (1);\n",
        "sum",
    )
    with pytest.raises(SchemaVersionError, match="broken failed and was rolled back") as caught:
        await apply_migrations(migrated.executor, [*load_migrations(), broken])
    assert f"stays at version {latest_version()}" in str(caught.value)
    tables = await migrated.executor.execute(
        "SELECT name FROM sqlite_master WHERE name = 'ok_table'"
    )
    assert tables.rows == []
    assert [row[0] for row in await recorded(migrated)] == [m.version for m in load_migrations()]


async def test_a_new_migration_is_applied_once_and_recorded(migrated: SqlEpisodeStore) -> None:
    extra = Migration(latest_version() + 1, "add_ok_table", "CREATE TABLE ok_table (x);", "c1")
    migrations = [*load_migrations(), extra]
    assert await apply_migrations(migrated.executor, migrations) == [extra.version]
    assert await apply_migrations(migrated.executor, migrations) == []
    assert (await recorded(migrated))[-1] == (extra.version, "add_ok_table", "c1")
