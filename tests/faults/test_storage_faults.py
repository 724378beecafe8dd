"""Storage faults under a running memory: sqld down and back, LMDB full, cache damaged, two owners.

Remote-store refusals for quota and rate limits (``QuotaExceeded``, 429/Retry-After, 5xx, hung
servers) are covered against a stand-in server in tests/contract/test_remote_failures.py, and
a bare store surviving a sqld restart by test_the_store_recovers_when_the_server_comes_back;
here the whole memory runs on a real sqld that is stopped and restarted under it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fault_helpers import config, count, durable_steps, step

from episodic_memory.core.models import ExecutionStep, TaskContext, TaskOutcome
from episodic_memory.errors import DataFolderLocked, StoreUnavailable
from episodic_memory.memory import SelfLearningMemory
from episodic_memory.storage.libsql_store import open_store
from support.sqld import SqldNotFound, find_sqld, start_sqld

pytestmark = pytest.mark.slow
CTX = TaskContext(domain="faults")


def sqld_or_skip() -> list[str]:
    try:
        return find_sqld()
    except SqldNotFound as exc:
        if os.environ.get("EPISODIC_MEMORY_REQUIRE_SQLD") == "1":
            pytest.fail(str(exc))
        pytest.skip(str(exc))


async def test_a_memory_on_sqld_rides_out_a_restart_and_then_fails_typed(tmp_path: Path) -> None:
    command = sqld_or_skip()
    workdir = tmp_path / "sqld"
    server = start_sqld(workdir, command)
    retries = {"max_retries": 8, "retry_base_delay_s": 0.05, "retry_max_delay_s": 0.5}
    settings = config(tmp_path / "data", database_url=server.ws_url, **retries)
    memory = await SelfLearningMemory.open(settings, backend="in_process")
    try:
        eid = await memory.start_episode("write through a database restart", CTX)
        acked = await memory.log_steps(eid, [step(i) for i in range(5)], durability="strict")

        server.stop()  # mid-run: the next strict call retries while sqld comes back
        pending = asyncio.create_task(
            memory.log_steps(eid, [step(i) for i in range(5, 10)], durability="strict")
        )
        restarted = await asyncio.to_thread(start_sqld, workdir, command, port=server.port)
        acked += await pending
        await memory.complete_episode(eid, TaskOutcome.success("done"))

        restarted.stop()  # for good: retries run out into a typed error, nothing acknowledged
        other = "this episode never gets its header stored"
        with pytest.raises(StoreUnavailable):
            await memory.start_episode(other, CTX)
        late = await asyncio.to_thread(start_sqld, workdir, command, port=server.port)
        try:
            store = await open_store(settings)
            try:
                [stored] = await store.get_episodes([eid])
                numbers = [s.step_number for s in stored.steps]
                assert stored.status == "completed"
                assert numbers == sorted(set(numbers))
                assert set(acked) <= set(numbers)
                assert (await store.counts())["episodes"] == 1
            finally:
                await store.close()
        finally:
            await memory.close()
            late.stop()
    finally:
        server.stop()


async def test_a_full_lmdb_map_grows_mid_batch_and_keeps_every_episode(tmp_path: Path) -> None:
    memory = await SelfLearningMemory.open(
        config(tmp_path, map_size_bytes=1 << 16), backend="in_process"
    )
    try:
        done = []
        for n in range(6):
            eid = await memory.start_episode(f"summarise the large log file {n}", CTX)
            big = [ExecutionStep(tool="cat", observation=f"{n} " + "x" * 30_000) for _ in range(3)]
            await memory.log_steps(eid, big)
            await memory.complete_episode(eid, TaskOutcome.success("summarised"))
            done.append(eid)
        cache = (await memory.stats())["storage"]["cache"]
        assert cache["map_growths"] >= 1
        assert cache["errors"] == 0
        assert cache["entries"] >= len(done)
        assert (await memory.sync_memories()).repaired == 0
        for eid in done:
            assert len((await memory.get_episode(eid)).steps) == 3
    finally:
        await memory.close()


async def _fill(data_dir: Path, n: int) -> list[str]:
    memory = await SelfLearningMemory.open(config(data_dir), backend="in_process")
    try:
        done = []
        for i in range(n):
            eid = await memory.start_episode(f"rebuild cache case {i}", CTX)
            await memory.log_steps(eid, [step(i), step(i + 1)])
            await memory.complete_episode(eid, TaskOutcome.success("ok"))
            done.append(eid)
        return done
    finally:
        await memory.close()


@pytest.mark.parametrize("damage", ["truncated", "garbage", "deleted"])
async def test_a_damaged_or_missing_cache_is_rebuilt_from_libsql_at_open_and_reported(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    done = await _fill(tmp_path, 4)
    data = tmp_path / "cache.lmdb" / "data.mdb"
    if damage == "truncated":
        os.truncate(data, 4096 + 100)
    elif damage == "garbage":
        data.write_bytes(os.urandom(3 * 4096))
    else:
        shutil.rmtree(tmp_path / "cache.lmdb")
    with caplog.at_level(logging.WARNING):
        memory = await SelfLearningMemory.open(config(tmp_path), backend="in_process")
    try:
        cache = (await memory.stats())["storage"]["cache"]
        assert cache["rebuilt_at_open"] == len(done)
        assert cache["entries"] == len(done)
        assert "rebuilt from libSQL: 4 episode(s) restored" in caplog.text
        assert (await memory.sync_memories()).repaired == 0
        for eid in done:
            assert [s.step_number for s in (await memory.get_episode(eid)).steps] == [1, 2]
    finally:
        await memory.close()


def _open_elsewhere(data_dir: Path) -> subprocess.CompletedProcess[str]:
    code = (
        "import asyncio, sys\n"
        "from pathlib import Path\n"
        "from episodic_memory import DataFolderLocked, MemoryConfig, SelfLearningMemory\n"
        "async def main():\n"
        f"    config = MemoryConfig(data_dir=Path({str(data_dir)!r}))\n"
        "    await SelfLearningMemory.open(config, backend='in_process')\n"
        "try:\n"
        "    asyncio.run(main())\n"
        "except DataFolderLocked as exc:\n"
        "    print(exc.holder_pid, exc); sys.exit(3)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )


async def test_a_second_process_opening_the_same_folder_gets_a_typed_error(
    tmp_path: Path,
) -> None:
    memory = await SelfLearningMemory.open(config(tmp_path), backend="in_process")
    try:
        eid = await memory.start_episode("owned by the first process", CTX)
        done = await asyncio.to_thread(_open_elsewhere, tmp_path)
        assert done.returncode == 3, done.stderr[-2000:]
        assert done.stdout.startswith(f"{os.getpid()} ")
        assert str(tmp_path) in done.stdout
        with pytest.raises(DataFolderLocked, match="already open in this process"):
            await SelfLearningMemory.open(config(tmp_path), backend="in_process")
        await memory.log_step(eid, step(1), durability="strict")
    finally:
        await memory.close()
    assert durable_steps(tmp_path, eid) == [1]
    reopened = await SelfLearningMemory.open(config(tmp_path), backend="in_process")
    await reopened.close()  # the lock went with the first owner
    assert count(tmp_path, "episodes") == 1
