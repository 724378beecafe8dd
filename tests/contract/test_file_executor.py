"""The embedded ``file:`` backend: WAL on one persistent connection, off the event loop."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from store_helpers import make_episode, store_config

from episodic_memory.errors import StorageError
from episodic_memory.storage.executors import SqliteExecutor
from episodic_memory.storage.libsql_store import SqlEpisodeStore, open_store


async def open_file_store(path: Path, **storage: object) -> SqlEpisodeStore:
    store = await open_store(store_config(f"file:{path}", path.parent, **storage))
    assert isinstance(store, SqlEpisodeStore)
    return store


async def test_the_file_store_uses_wal_normal_sync_and_the_configured_busy_timeout(
    tmp_path: Path,
) -> None:
    store = await open_file_store(tmp_path / "a" / "b" / "memory.db", busy_timeout_ms=1234)
    try:
        pragmas = [
            (await store.executor.execute(f"PRAGMA {name}")).rows[0][0]
            for name in ("journal_mode", "synchronous", "busy_timeout")
        ]
    finally:
        await store.close()
    assert pragmas == ["wal", 1, 1234]
    assert (tmp_path / "a" / "b" / "memory.db").is_file()


async def test_a_slow_query_runs_off_the_event_loop(tmp_path: Path) -> None:
    store = await open_file_store(tmp_path / "memory.db")
    ticks = 0
    finished = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not finished.is_set():
            ticks += 1
            await asyncio.sleep(0)

    slow = (
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000000) "
        "SELECT count(*) FROM n"
    )
    ticking = asyncio.create_task(ticker())
    try:
        result = await store.executor.execute(slow)
    finally:
        finished.set()
        await ticking
        await store.close()
    assert result.rows == [(2_000_000,)]
    assert ticks > 10  # the loop kept running other tasks while sqlite worked


async def test_two_stores_on_one_file_see_each_others_writes(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    first, second = await open_file_store(path), await open_file_store(path)
    try:
        batches = [[make_episode(f"w{w} e{n}") for n in range(50)] for w in range(4)]
        await asyncio.gather(
            *(
                (first if index % 2 else second).put_episodes(batch)
                for index, batch in enumerate(batches)
            )
        )
        assert (await first.counts())["episodes"] == 200
        assert (await second.counts())["episodes"] == 200
    finally:
        await first.close()
        await second.close()


async def test_an_in_memory_database_is_private_to_its_store(tmp_path: Path) -> None:
    first = await open_store(store_config("file::memory:", tmp_path))
    second = await open_store(store_config("file::memory:", tmp_path))
    try:
        await first.put_episodes([make_episode()])
        assert (await first.counts())["episodes"] == 1
        assert (await second.counts())["episodes"] == 0
    finally:
        await first.close()
        await second.close()


async def test_a_file_that_is_not_a_database_is_a_storage_error(tmp_path: Path) -> None:
    path = tmp_path / "memory.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StorageError, match="not a SQLite database"):
        await open_file_store(path)


async def test_a_failed_batch_leaves_nothing_behind(tmp_path: Path) -> None:
    executor = SqliteExecutor(str(tmp_path / "t.db"))
    try:
        await executor.execute("CREATE TABLE t (x INTEGER PRIMARY KEY)")
        with pytest.raises(StorageError, match="UNIQUE"):
            await executor.batch(
                [("INSERT INTO t VALUES (1)", ()), ("INSERT INTO t VALUES (1)", ())]
            )
        assert (await executor.execute("SELECT count(*) FROM t")).rows == [(0,)]
        await executor.batch([("INSERT INTO t VALUES (2)", ())])
        assert (await executor.execute("SELECT x FROM t")).rows == [(2,)]
    finally:
        await executor.close()
