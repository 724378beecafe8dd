"""One local Ray for the whole integration session, and a fresh memory per test.

Starting Ray costs ~6 s here, so the session shares one (2 CPUs, 150 MB object store, loopback
only — ``tests/conftest.py`` sets ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` before Ray starts).
Tests never share state: each gets its own ``memory_name`` and data folder, and its actors are
stopped when it ends.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import ray

from episodic_memory.config import FlushPolicy, LearnerConfig, MemoryConfig, RayConfig
from episodic_memory.memory import SelfLearningMemory

NAMESPACE = "episodic-memory-tests"  # the session Ray's (``ray_session``, tests/conftest.py)


def make_config(
    data_dir: Path,
    *,
    placement: str = "hosted",
    num_hosts: int = 1,
    flush_max_steps: int = 256,
    flush_interval_s: float = 0.2,
) -> MemoryConfig:
    return MemoryConfig(
        data_dir=data_dir,
        flush=FlushPolicy(flush_max_steps=flush_max_steps, flush_interval_s=flush_interval_s),
        learner=LearnerConfig(pool_size=1),
        ray=RayConfig(
            namespace=NAMESPACE,
            memory_name=f"test-{uuid.uuid4().hex[:10]}",
            placement=placement,  # type: ignore[arg-type]
            num_hosts=num_hosts,
        ),
    )


@pytest.fixture
async def open_memory(ray_session: str, tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Open memories for a test (each with its own name and folder); stop them afterwards."""
    opened: list[SelfLearningMemory] = []
    counter = iter(range(1000))

    async def opener(**options: Any) -> SelfLearningMemory:
        config = make_config(tmp_path / f"memory-{next(counter)}", **options)
        memory = await SelfLearningMemory.open(config)
        opened.append(memory)
        return memory

    yield opener
    for memory in opened:
        await memory.close(stop_service=True)


@pytest.fixture(params=["hosted", "dedicated"])
def placement(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def memory(open_memory: Callable[..., Any], placement: str) -> SelfLearningMemory:
    memory: SelfLearningMemory = await open_memory(placement=placement)
    return memory


def storage_actor(memory: SelfLearningMemory) -> Any:
    """The memory's storage actor, found by name as any other client would."""
    names = memory.config.ray
    return ray.get_actor(f"{names.memory_name}:storage", namespace=names.namespace)


async def _durable_steps(memory: SelfLearningMemory, episode_id: str) -> list[int]:
    found = await storage_actor(memory).get_episodes.remote([episode_id])
    return [s.step_number for s in found[0].steps] if found else []


async def _poll(check: Callable[[], Any], timeout_s: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = await check()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


@pytest.fixture
def durable_steps() -> Callable[[SelfLearningMemory, str], Any]:
    """Step numbers storage holds for an episode (bypassing the episode actor's buffer)."""
    return _durable_steps


@pytest.fixture
def poll() -> Callable[..., Any]:
    """Bounded polling: await ``check()`` until it is truthy or ``timeout_s`` passes."""
    return _poll
