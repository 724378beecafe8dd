"""Builders shared by the store contract tests: configs, small episodes, the seal sequence."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from episodic_memory.config import MemoryConfig, StorageConfig
from episodic_memory.core.models import Episode, ExecutionStep, TaskContext, TaskOutcome
from episodic_memory.storage.libsql_store import SqlEpisodeStore
from support.sqld import SqldNotFound, find_sqld

T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
TABLES = ("episodes_fts", "steps", "embeddings", "episodes", "patterns", "heuristics")


def sqld_command_or_skip() -> list[str]:
    """The sqld command; skip without one, but fail under EPISODIC_MEMORY_REQUIRE_SQLD=1 (CI)."""
    try:
        return find_sqld()
    except SqldNotFound as exc:
        if os.environ.get("EPISODIC_MEMORY_REQUIRE_SQLD") == "1":
            pytest.fail(f"EPISODIC_MEMORY_REQUIRE_SQLD=1 but {exc}")
        pytest.skip(str(exc))


def store_config(url: str, data_dir: Path, **storage: object) -> MemoryConfig:
    """Small retry delays so failure paths finish fast; everything else as shipped."""
    settings: dict[str, object] = {
        "database_url": url,
        "max_retries": 2,
        "retry_base_delay_s": 0.005,
        "retry_max_delay_s": 0.02,
    }
    settings.update(storage)
    return MemoryConfig(data_dir=data_dir, storage=StorageConfig(**settings))  # type: ignore[arg-type]


async def clear(store: SqlEpisodeStore) -> None:
    await store.executor.batch([(f"DELETE FROM {table}", ()) for table in TABLES])


def make_episode(
    description: str = "parse the config file",
    *,
    domain: str = "general",
    task_type: str = "general",
    started_at: datetime = T0,
    completed: bool = False,
    verdict: str = "success",
) -> Episode:
    return Episode(
        task_description=description,
        context=TaskContext(domain=domain),
        task_type=task_type,
        started_at=started_at,
        status="completed" if completed else "active",
        outcome=TaskOutcome(verdict=verdict) if completed else None,  # type: ignore[arg-type]
        completed_at=started_at + timedelta(seconds=1.5) if completed else None,
    )


def step(number: int, tool: str = "shell", **fields: object) -> ExecutionStep:
    return ExecutionStep(step_number=number, tool=tool, **fields)  # type: ignore[arg-type]


async def store_completed(
    store: SqlEpisodeStore, episode: Episode, steps: list[ExecutionStep]
) -> Episode:
    """What the service does: header, steps, then the sealed header (which indexes step text)."""
    await store.put_episodes([episode.model_copy(update={"status": "active", "outcome": None})])
    await store.append_steps([(episode.episode_id, s) for s in steps])
    await store.put_episodes([episode])
    return episode.model_copy(update={"steps": steps})
