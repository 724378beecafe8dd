"""Shared by the fault tests: configs, durable truth read straight from the files, polling.

The durable truth is read with a separate stdlib ``sqlite3`` connection on ``memory.db`` (WAL
readers see every committed write), never through the memory under test.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from episodic_memory.config import (
    CacheConfig,
    FlushPolicy,
    LearnerConfig,
    MemoryConfig,
    RateLimitConfig,
    RayConfig,
    StorageConfig,
)
from episodic_memory.core.models import ExecutionStep

NAMESPACE = "episodic-memory-tests"  # the session Ray's (tests/conftest.py)
T = TypeVar("T")


def config(
    data_dir: Path,
    *,
    flush_interval_s: float = 0.2,
    flush_max_steps: int = 256,
    map_size_bytes: int = 1 << 30,
    database_url: str | None = None,
    rate_limit: RateLimitConfig | None = None,
    **storage: Any,
) -> MemoryConfig:
    return MemoryConfig(
        data_dir=data_dir,
        flush=FlushPolicy(flush_max_steps=flush_max_steps, flush_interval_s=flush_interval_s),
        learner=LearnerConfig(pool_size=1),
        cache=CacheConfig(map_size_bytes=map_size_bytes),
        storage=StorageConfig(database_url=database_url, **storage),
        rate_limit=rate_limit or RateLimitConfig(),
        ray=RayConfig(
            namespace=NAMESPACE, memory_name=f"faults-{uuid.uuid4().hex[:10]}", num_hosts=1
        ),
    )


def step(i: int, **fields: Any) -> ExecutionStep:
    return ExecutionStep(**{"tool": f"tool{i % 3}", "action": f"action {i}", **fields})


def _rows(data_dir: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with sqlite3.connect(f"file:{data_dir / 'memory.db'}?mode=ro", uri=True, timeout=10) as db:
        return list(db.execute(sql, params))


def durable_steps(data_dir: Path, episode_id: str) -> list[int]:
    """Step numbers libSQL holds for an episode, in order (duplicates would show twice)."""
    rows = _rows(
        data_dir,
        "SELECT step_number FROM steps WHERE episode_id = ? ORDER BY step_number",
        (episode_id,),
    )
    return [int(r[0]) for r in rows]


def durable_episodes(data_dir: Path) -> dict[str, str]:
    """Every episode libSQL holds: id → status."""
    rows = _rows(data_dir, "SELECT episode_id, status FROM episodes")
    return {str(r[0]): str(r[1]) for r in rows}


def count(data_dir: Path, table: str) -> int:
    return int(_rows(data_dir, f"SELECT count(*) FROM {table}")[0][0])  # table names are fixed


async def poll(check: Callable[[], Awaitable[T]], timeout_s: float = 20.0) -> T:
    """Await ``check()`` until it is truthy or ``timeout_s`` passes (bounded polling)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await check()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


def kill9(pid: int) -> None:
    os.kill(pid, 9)
