"""StorageService end to end over real parts: a sqlite file database and an LMDB cache.

No Ray: the service is the plain class the StorageActor wraps.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from tests.support.child import run_python

from episodic_memory.config import CacheConfig, MemoryConfig
from episodic_memory.core.learning import learn
from episodic_memory.core.models import Episode, ExecutionStep, TaskContext, TaskOutcome
from episodic_memory.errors import (
    EpisodeAlreadyCompleted,
    EpisodeNotFound,
    StorageError,
    ValidationError,
)
from episodic_memory.storage.base import EpisodeQuery, StoredEmbedding
from episodic_memory.storage.reconcile import RepairReport
from episodic_memory.storage.service import StorageService

T0 = datetime(2025, 5, 1, tzinfo=UTC)


def config_for(data_dir: Path, *, cache: bool = True, max_episodes: int = 100) -> MemoryConfig:
    return MemoryConfig(
        data_dir=data_dir,
        cache=CacheConfig(enabled=cache, max_episodes_cache=max_episodes, map_size_bytes=1 << 20),
    )


def started(number: int, *, domain: str = "web", task_type: str = "debugging") -> Episode:
    return Episode(
        episode_id=f"ep-{number:03d}",
        task_description=f"fix the flaky login test number {number}",
        context=TaskContext(domain=domain, language="python", tags=["ci"]),
        task_type=task_type,
        started_at=T0 + timedelta(minutes=number),
    )


def steps(count: int, first: int = 1) -> list[ExecutionStep]:
    tools = ["read_file", "run_tests", "edit_file", "run_tests"]
    return [
        ExecutionStep(
            step_number=n,
            tool=tools[(n - 1) % len(tools)],
            action=f"step {n}",
            observation="pytest output mentions the login fixture",
            latency_ms=10.0 * n,
            tokens=20,
            success=n != 2,
            error="AssertionError in login" if n == 2 else None,
            timestamp=T0 + timedelta(seconds=n),
        )
        for n in range(first, first + count)
    ]


def completed(episode: Episode, outcome: TaskOutcome | None = None) -> Episode:
    return episode.model_copy(
        update={
            "status": "completed",
            "outcome": outcome or TaskOutcome.success("login test fixed"),
            "completed_at": episode.started_at + timedelta(minutes=1),
        }
    )


async def record(service: StorageService, number: int, **kwargs: str) -> Episode:
    """Create, log four steps and seal one episode; returns the sealed copy."""
    episode = started(number, **kwargs)
    await service.create_episodes([episode])
    await service.append_steps([(episode.episode_id, s) for s in steps(4)])
    [sealed] = await service.seal_episodes(
        [completed(episode.model_copy(update={"steps": steps(4)}))]
    )
    return sealed


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[StorageService]:
    opened = await StorageService.open(config_for(tmp_path / "mem"))
    yield opened
    await opened.close()


async def test_create_append_seal_get_with_idempotent_retries_and_a_counted_cache_hit(
    service: StorageService,
) -> None:
    episode = started(1)
    [created] = await service.create_episodes([episode])
    assert created.revision == 1
    assert await service.create_episodes([episode]) == [created]  # retried create: no-op
    batch = [(episode.episode_id, s) for s in steps(3)]
    assert await service.append_steps(batch) == 3
    assert await service.append_steps(batch) == 0  # retried flush adds nothing
    [sealed] = await service.seal_episodes([completed(created)])
    assert (sealed.status, sealed.revision, len(sealed.steps)) == ("completed", 2, 3)
    assert await service.seal_episodes([completed(created)]) == [sealed]  # retried seal
    before = (await service.stats())["cache"]["hits"]
    assert await service.get_episodes([episode.episode_id, "unknown"]) == [sealed]
    assert (await service.stats())["cache"]["hits"] == before + 1
    assert await service.store.get_episodes([episode.episode_id]) == [sealed]


async def test_a_seal_carrying_unflushed_steps_stores_them_all(service: StorageService) -> None:
    episode = started(1)
    await service.create_episodes([episode])
    await service.append_steps([(episode.episode_id, s) for s in steps(2)])
    final = completed(episode.model_copy(update={"steps": steps(5)}))
    [sealed] = await service.seal_episodes([final])
    assert [s.step_number for s in sealed.steps] == [1, 2, 3, 4, 5]
    assert (await service.store.get_episodes([episode.episode_id]))[0].steps == sealed.steps


async def test_sealing_rules_raise_typed_errors_and_write_nothing(
    service: StorageService,
) -> None:
    sealed = await record(service, 1)
    with pytest.raises(EpisodeAlreadyCompleted):
        await service.seal_episodes([completed(started(1), TaskOutcome.failure("other"))])
    with pytest.raises(EpisodeAlreadyCompleted):
        await service.create_episodes([started(1)])
    with pytest.raises(EpisodeNotFound):
        await service.seal_episodes([completed(started(2))])
    with pytest.raises(ValidationError):
        await service.seal_episodes([started(3)])
    with pytest.raises(ValidationError):
        await service.create_episodes([completed(started(4))])
    assert await service.get_episodes(["ep-001", "ep-002", "ep-003", "ep-004"]) == [sealed]


async def test_active_episodes_are_read_from_libsql_and_never_cached(
    service: StorageService,
) -> None:
    await service.create_episodes([started(1)])
    await service.append_steps([("ep-001", s) for s in steps(2)])
    [active] = await service.get_episodes(["ep-001"])
    assert (active.status, len(active.steps)) == ("active", 2)
    assert (await service.stats())["cache"]["entries"] == 0


async def test_list_filters_and_keyword_search_find_sealed_episodes(
    service: StorageService,
) -> None:
    await record(service, 1, domain="web")
    await record(service, 2, domain="data", task_type="etl")
    await service.create_episodes([started(3)])
    listed = await service.list_episodes(EpisodeQuery(domain="web", status="completed"))
    assert [e.episode_id for e in listed] == ["ep-001"]
    newest_first = await service.list_episodes(EpisodeQuery())
    assert [e.episode_id for e in newest_first] == ["ep-003", "ep-002", "ep-001"]
    hits = await service.keyword_search("flaky login", domain="web")
    assert [h.episode_id for h in hits] == ["ep-001"]


async def test_metadata_candidates_come_most_specific_first_with_steps(
    service: StorageService,
) -> None:
    await record(service, 1, domain="web", task_type="debugging")
    await record(service, 2, domain="data", task_type="debugging")
    await record(service, 3, domain="web", task_type="refactor")
    await record(service, 4, domain="mobile", task_type="etl")
    found = await service.candidates_by_metadata("web", "debugging", limit=3)
    assert [e.episode_id for e in found] == ["ep-001", "ep-002", "ep-003"]
    assert all(len(e.steps) == 4 for e in found)
    assert [e.episode_id for e in await service.candidates_by_metadata(None, None, 2)] == [
        "ep-004",
        "ep-003",
    ]


async def test_merging_the_same_episode_twice_does_not_double_count(
    service: StorageService,
) -> None:
    sealed = await record(service, 1)
    assert await service.unlearned_episode_ids() == ["ep-001"]
    delta = learn([sealed])
    first = await service.merge_learning(delta)
    assert first["episodes"] == 1
    assert first["patterns"] > 0
    counts = {p.pattern_id: p.occurrences for p in await service.patterns(limit=1000)}
    second = await service.merge_learning(delta)
    assert second == {"episodes": 0, "patterns": 0, "heuristics": 0, "skipped": 1}
    assert {p.pattern_id: p.occurrences for p in await service.patterns(limit=1000)} == counts
    assert await service.unlearned_episode_ids() == []


async def test_patterns_and_heuristics_survive_a_restart_without_double_counting(
    tmp_path: Path,
) -> None:
    config = config_for(tmp_path / "mem")
    service = await StorageService.open(config)
    sealed = [await record(service, n) for n in (1, 2)]
    delta = learn(sealed)
    await service.merge_learning(delta)
    patterns = await service.patterns(domain="web", limit=1000)
    heuristics = await service.heuristics(domain="web", limit=1000)
    assert patterns
    assert heuristics
    await service.close()
    reopened = await StorageService.open(config)
    try:
        assert await reopened.patterns(domain="web", limit=1000) == patterns
        assert await reopened.heuristics(domain="web", limit=1000) == heuristics
        await reopened.merge_learning(learn([sealed[0]]))  # a learner retry after the restart
        after = {p.pattern_id: p.occurrences for p in await reopened.patterns(limit=1000)}
        assert after == {p.pattern_id: p.occurrences for p in patterns}
        assert await reopened.patterns(domain="elsewhere") == []
    finally:
        await reopened.close()


async def test_embeddings_round_trip_through_libsql_and_the_cache(
    service: StorageService,
) -> None:
    vectors = np.random.default_rng(3).standard_normal((3, 8)).astype("<f4")
    stored = [
        StoredEmbedding(episode_id=f"ep-{i}", model="hashing", dim=8, vector=v.tobytes())
        for i, v in enumerate(vectors)
    ]
    await service.put_embeddings(stored)
    pages = [page async for page in service.iter_embeddings("hashing", batch_size=2)]
    assert [len(p) for p in pages] == [2, 1]
    assert sorted((e for p in pages for e in p), key=lambda e: e.episode_id) == stored
    assert service.cache is not None
    assert service.cache.get_embedding("ep-1") == vectors[1].tobytes()


async def test_deleted_or_truncated_cache_files_are_rebuilt_from_libsql_at_open(
    tmp_path: Path,
) -> None:
    config = config_for(tmp_path / "mem")
    service = await StorageService.open(config)
    sealed = [await record(service, n) for n in range(1, 6)]
    await service.close()
    shutil.rmtree(config.cache_dir)
    service = await StorageService.open(config)
    try:
        stats = (await service.stats())["cache"]
        assert (stats["entries"], stats["rebuilt_at_open"]) == (5, 5)
        assert await service.sync_memories() == RepairReport(checked=5)
        assert await service.get_episodes([e.episode_id for e in sealed]) == sealed
        assert (await service.stats())["cache"]["hits"] == 5
    finally:
        await service.close()
    os.truncate(config.cache_dir / "data.mdb", 4096 + 100)
    service = await StorageService.open(config)
    try:
        stats = (await service.stats())["cache"]
        assert (stats["entries"], stats["repairs"], stats["rebuilt_at_open"]) == (5, 1, 5)
        assert await service.sync_memories() == RepairReport(checked=5)
    finally:
        await service.close()


async def test_a_second_opener_of_the_folder_in_another_process_is_refused_naming_the_holder(
    service: StorageService,
) -> None:
    code = (
        "import asyncio, sys\n"
        "from episodic_memory.config import MemoryConfig\n"
        "from episodic_memory.errors import DataFolderLocked\n"
        "from episodic_memory.storage.service import StorageService\n"
        f"folder = {str(service.config.data_dir)!r}\n"
        "try:\n"
        "    asyncio.run(StorageService.open(MemoryConfig(data_dir=folder)))\n"
        "except DataFolderLocked as exc:\n"
        "    print(exc.holder_pid, exc); sys.exit(3)\n"
    )
    done = await asyncio.to_thread(run_python, code)
    assert done.returncode == 3, done.stderr
    assert done.stdout.startswith(f"{os.getpid()} ")
    assert str(service.config.data_dir.resolve()) in done.stdout


async def test_with_the_cache_disabled_everything_works_from_libsql(tmp_path: Path) -> None:
    config = config_for(tmp_path / "mem", cache=False)
    service = await StorageService.open(config)
    try:
        sealed = await record(service, 1)
        assert await service.get_episodes(["ep-001"]) == [sealed]
        assert await service.sync_memories() == RepairReport()
        stats = await service.stats()
        assert stats["cache"] == {}
        assert stats["tables"]["episodes"] == 1
        assert stats["tables"]["steps"] == 4
    finally:
        await service.close()
    assert not config.cache_dir.exists()


async def test_a_second_service_on_the_same_folder_in_one_process_is_refused(
    service: StorageService,
) -> None:
    with pytest.raises(StorageError, match="already open in this process"):
        await StorageService.open(service.config)
    assert await service.get_episodes(["ep-001"]) == []  # the first one is unaffected


async def test_a_retrieval_slate_leaves_out_learned_records_the_caller_holds(
    service: StorageService,
) -> None:
    sealed = await record(service, 1)
    await service.merge_learning(learn([sealed]))
    first = await service.retrieval_slate(
        "step", keyword_domain="web", domain="web", task_type=None, limit=5
    )
    assert first.patterns
    assert not first.learned_unchanged
    assert sealed.episode_id in first.candidates
    again = await service.retrieval_slate(
        "step",
        keyword_domain="web",
        domain="web",
        task_type=None,
        limit=5,
        learned_version=first.learned_version,
    )
    assert (again.learned_unchanged, again.patterns, again.heuristics) == (True, [], [])
    await service.merge_learning(learn([await record(service, 2)]))
    after = await service.retrieval_slate(
        "step",
        keyword_domain="web",
        domain="web",
        task_type=None,
        limit=5,
        learned_version=first.learned_version,
    )
    assert after.learned_version != first.learned_version
    assert after.patterns
    assert not after.learned_unchanged
