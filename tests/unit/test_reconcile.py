"""Reconciliation makes the LMDB cache agree with libSQL and reports what it fixed.

Real parts: a sqlite file database through ``open_store`` and a real LMDB cache in tmp_path.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from episodic_memory.config import MemoryConfig
from episodic_memory.core.models import Episode, ExecutionStep, TaskContext, TaskOutcome
from episodic_memory.storage.base import EpisodeStore
from episodic_memory.storage.libsql_store import open_store
from episodic_memory.storage.lmdb_cache import LmdbCache
from episodic_memory.storage.reconcile import RepairReport, reconcile

T0 = datetime(2025, 3, 1, tzinfo=UTC)


def sealed(number: int, revision: int = 1, summary: str = "done") -> Episode:
    return Episode(
        episode_id=f"ep-{number:03d}",
        task_description=f"task number {number}",
        context=TaskContext(domain="web"),
        status="completed",
        outcome=TaskOutcome.success(summary),
        steps=[ExecutionStep(step_number=1, tool="grep", observation="hit", timestamp=T0)],
        started_at=T0 + timedelta(minutes=number),
        completed_at=T0 + timedelta(minutes=number, seconds=30),
        revision=revision,
    )


async def save(store: EpisodeStore, *episodes: Episode) -> None:
    await store.put_episodes(episodes)
    await store.append_steps([(e.episode_id, s) for e in episodes for s in e.steps])


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[EpisodeStore]:
    opened = await open_store(MemoryConfig(data_dir=tmp_path / "mem"))
    yield opened
    await opened.close()


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[LmdbCache]:
    opened = LmdbCache(tmp_path / "cache", map_size_bytes=1 << 20, max_episodes=10)
    yield opened
    opened.close()


async def test_an_empty_cache_is_rebuilt_with_the_newest_episodes_up_to_its_bound(
    store: EpisodeStore, tmp_path: Path
) -> None:
    await save(store, *(sealed(i) for i in range(1, 6)))
    cache = LmdbCache(tmp_path / "small", map_size_bytes=1 << 20, max_episodes=3)
    try:
        report = await reconcile(cache, store, warm_limit=100)
        assert report == RepairReport(missing=3, stale=0, extra=0, checked=0)
        assert set(cache.versions()) == {"ep-005", "ep-004", "ep-003"}
        assert cache.get_episodes(["ep-005"]) == {"ep-005": sealed(5)}
    finally:
        cache.close()


async def test_missing_stale_and_extra_entries_are_fixed_and_counted(
    store: EpisodeStore, cache: LmdbCache
) -> None:
    await save(store, sealed(1, revision=2, summary="newer"), sealed(2))
    cache.put_episodes([sealed(1, revision=1, summary="older"), sealed(9)])
    report = await reconcile(cache, store, warm_limit=10)
    assert report == RepairReport(missing=1, stale=1, extra=1, checked=2)
    assert report.repaired == 3
    assert cache.versions() == {"ep-001": 2, "ep-002": 1}
    refreshed = cache.get_episodes(["ep-001"])["ep-001"]
    assert refreshed.outcome == TaskOutcome.success("newer")
    assert await reconcile(cache, store, warm_limit=10) == RepairReport(checked=2)


async def test_a_cached_revision_above_libsql_is_replaced_by_the_truth(
    store: EpisodeStore, cache: LmdbCache
) -> None:
    await save(store, sealed(1, revision=1, summary="restored"))
    cache.put_episodes([sealed(1, revision=5, summary="lost with the old database")])
    report = await reconcile(cache, store, warm_limit=10)
    assert report.stale == 1
    assert cache.versions() == {"ep-001": 1}
    assert cache.get_episodes(["ep-001"])["ep-001"].outcome == TaskOutcome.success("restored")


async def test_active_episodes_are_never_warmed(store: EpisodeStore, cache: LmdbCache) -> None:
    active = Episode(episode_id="ep-active", task_description="running", started_at=T0)
    await save(store, active, sealed(1))
    report = await reconcile(cache, store, warm_limit=10)
    assert report.missing == 1
    assert set(cache.versions()) == {"ep-001"}


async def test_warm_limit_caps_how_many_entries_are_warmed(
    store: EpisodeStore, cache: LmdbCache
) -> None:
    await save(store, *(sealed(i) for i in range(1, 6)))
    report = await reconcile(cache, store, warm_limit=2)
    assert report.missing == 2
    assert set(cache.versions()) == {"ep-005", "ep-004"}


async def test_a_truncated_cache_is_rebuilt_from_libsql(
    store: EpisodeStore, tmp_path: Path
) -> None:
    path = tmp_path / "trunc"
    episodes = [sealed(i) for i in range(1, 8)]
    await save(store, *episodes)
    cache = LmdbCache(path, map_size_bytes=1 << 20, max_episodes=10)
    cache.put_episodes(episodes)
    cache.close()
    os.truncate(path / "data.mdb", 5000)
    cache = LmdbCache(path, map_size_bytes=1 << 20, max_episodes=10)
    try:
        assert cache.stats()["repairs"] == 1
        report = await reconcile(cache, store, warm_limit=10)
        assert report == RepairReport(missing=7, checked=0)
        assert cache.get_episodes([e.episode_id for e in episodes]) == {
            e.episode_id: e for e in episodes
        }
    finally:
        cache.close()
