"""kill -9 each service actor of a running memory; nothing acknowledged is lost or doubled.

Each test opens its own memory (own name, own data folder) on the session Ray, finds an
actor's PID by asking the actor itself (``__ray_call__`` runs ``os.getpid`` inside it), sends
SIGKILL, and lets Ray restart it (``max_restarts=-1``). Afterwards the durable truth is read
straight from ``memory.db`` with sqlite3: every step acknowledged as durable
(``durability="strict"``) is there exactly once, every completed episode is there, the cache
agrees with libSQL after ``sync_memories()``, retrieval finds the completed episodes and
learning covered every one of them exactly once.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import ray
from fault_helpers import config, durable_episodes, durable_steps, kill9, poll, step

from episodic_memory.core.models import TaskContext, TaskOutcome
from episodic_memory.errors import DataFolderLocked, ServiceError, StorageError
from episodic_memory.memory import SelfLearningMemory

pytestmark = [pytest.mark.slow, pytest.mark.ray]

CTX = TaskContext(domain="faults", language="python")
SEQUENCE = ["read_file", "edit_file", "pytest"]


@pytest.fixture
async def memory(ray_session: str, tmp_path: Path) -> AsyncIterator[SelfLearningMemory]:
    opened = await SelfLearningMemory.open(config(tmp_path))
    try:
        yield opened
    finally:
        await opened.close(stop_service=True)


def actor(memory: SelfLearningMemory, role: str) -> Any:
    names = memory.config.ray
    return ray.get_actor(f"{names.memory_name}:{role}", namespace=names.namespace)


async def pid_of(handle: Any) -> int:
    pid: int = await handle.__ray_call__.remote(lambda _self: os.getpid())
    return pid


async def kill_and_wait_for_restart(handle: Any) -> None:
    old = await pid_of(handle)
    kill9(old)

    async def restarted() -> bool:
        try:
            return await asyncio.wait_for(pid_of(handle), 5.0) != old
        except (ray.exceptions.RayActorError, TimeoutError):
            return False

    await poll(restarted, timeout_s=60.0)


async def retrying(make: Callable[[], Any], timeout_s: float = 60.0) -> Any:
    """Call until the service answers (a call in flight at the kill is not acknowledged)."""
    result: list[Any] = []

    async def attempt() -> bool:
        try:
            result.append(await make())
        except (ServiceError, StorageError):
            return False
        return True

    await poll(attempt, timeout_s=timeout_s)
    return result[0]


async def complete_fix(memory: SelfLearningMemory, text: str) -> str:
    eid = await memory.start_episode(text, CTX)
    await memory.log_steps(eid, [step(0, tool=t) for t in SEQUENCE])
    await memory.complete_episode(eid, TaskOutcome.success("green"))
    return eid


def assert_exactly_once(data_dir: Path, episode_id: str, acknowledged: list[int]) -> None:
    stored = durable_steps(data_dir, episode_id)
    assert len(stored) == len(set(stored)), "a step was stored twice"
    assert set(acknowledged) <= set(stored), "an acknowledged step is missing"


async def assert_consistent(
    memory: SelfLearningMemory, data_dir: Path, done: list[str], fixes: int
) -> None:
    """Completed episodes stored and retrievable; cache agrees with libSQL; all learned once
    (``fixes`` of them used exactly ``SEQUENCE``: that pattern counts each of them once)."""
    stored = durable_episodes(data_dir)
    assert all(stored.get(eid) == "completed" for eid in done)
    await retrying(memory.sync_memories)
    again = await memory.sync_memories()
    assert again.repaired == 0
    assert again.checked >= len(done)
    for eid in done:
        episode = await memory.get_episode(eid)
        found = await memory.retrieve_relevant_context(episode.task_description, CTX, limit=20)
        assert eid in [s.episode_id for s in found.episodes]
    await retrying(memory.settle)
    storage = actor(memory, "storage")
    assert await storage.unlearned_episode_ids.remote() == []
    sequences = [p for p in await storage.patterns.remote(None, 1000) if p.kind == "tool_sequence"]
    learned = [p for p in sequences if p.tools == SEQUENCE]
    assert [p.occurrences for p in learned] == [fixes], "learning was lost or doubled"


async def test_killing_an_episode_host_mid_episode_loses_no_acknowledged_step(
    memory: SelfLearningMemory, tmp_path: Path
) -> None:
    done = [await complete_fix(memory, "fix the parser before the host dies")]
    eid = await memory.start_episode("migrate the schema while the host dies", CTX)
    acked = await memory.log_steps(eid, [step(i) for i in range(5)], durability="strict")
    await memory.log_steps(eid, [step(i) for i in range(5, 8)])  # buffered: may be lost

    await kill_and_wait_for_restart(actor(memory, "host:0"))

    acked += await retrying(lambda: memory.log_steps(eid, [step(9)], durability="strict"))
    await memory.log_steps(eid, [step(0, tool=t) for t in SEQUENCE])
    await memory.complete_episode(eid, TaskOutcome.success("migrated"))
    done.append(eid)
    assert_exactly_once(tmp_path, eid, acked)
    await assert_consistent(memory, tmp_path, done, fixes=1)


async def test_killing_the_storage_actor_mid_batch_loses_no_acknowledged_step(
    memory: SelfLearningMemory, tmp_path: Path
) -> None:
    eid = await memory.start_episode("bulk import while storage dies", CTX)
    acked: list[int] = []
    refused = 0

    async def writer() -> None:
        nonlocal refused
        for burst in range(40):
            try:
                batch = [step(burst * 10 + i) for i in range(10)]
                acked.extend(await memory.log_steps(eid, batch, durability="strict"))
            except (ServiceError, StorageError):
                refused += 1  # not acknowledged: the caller would retry
            await asyncio.sleep(0)

    writing = asyncio.create_task(writer())
    await poll(lambda: asyncio.sleep(0, result=len(acked) >= 50))
    await kill_and_wait_for_restart(actor(memory, "storage"))
    await writing
    await retrying(lambda: memory.log_steps(eid, [step(0, tool="finish")]))
    await retrying(lambda: memory.complete_episode(eid, TaskOutcome.success("imported")))
    after = await complete_fix(memory, "fix the importer after storage restarted")

    print(f"storage kill: {len(acked)} steps acknowledged, {refused} bursts refused")
    assert len(acked) >= 50
    assert_exactly_once(tmp_path, eid, acked)
    await assert_consistent(memory, tmp_path, [eid, after], fixes=1)


async def test_killing_the_index_actor_keeps_every_completed_episode_retrievable(
    memory: SelfLearningMemory, tmp_path: Path
) -> None:
    before = [await complete_fix(memory, f"fix flaky test number {n} in the api") for n in (1, 2)]
    await kill_and_wait_for_restart(actor(memory, "index"))
    after = await retrying(lambda: complete_fix(memory, "fix flaky test number 3 in the api"))
    assert (await memory.stats())["index"]["vectors"] == 3
    await assert_consistent(memory, tmp_path, [*before, after], fixes=3)


async def test_killing_a_learner_re_derives_its_learning_exactly_once(
    memory: SelfLearningMemory, tmp_path: Path
) -> None:
    learner = actor(memory, "learner:0")
    done = [await complete_fix(memory, f"fix the login flow variant {n}") for n in range(4)]
    await kill_and_wait_for_restart(learner)  # mid-batch or after: storage knows which
    done += [await complete_fix(memory, f"fix the signup flow variant {n}") for n in range(2)]
    await assert_consistent(memory, tmp_path, done, fixes=len(done))


async def test_a_folder_the_ray_service_owns_refuses_a_second_opener_naming_its_storage_actor(
    memory: SelfLearningMemory, tmp_path: Path
) -> None:
    storage_pid = await pid_of(actor(memory, "storage"))
    with pytest.raises(DataFolderLocked) as refused:
        await SelfLearningMemory.open(config(tmp_path), backend="in_process")
    assert refused.value.holder_pid == storage_pid
    assert str(tmp_path) in str(refused.value)
