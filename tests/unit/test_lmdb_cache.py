"""The LMDB cache keeps what it is given losslessly, stays bounded and repairs itself.

Real LMDB environments in ``tmp_path``; the map-resize case runs a second writer in a real
``spawn`` process, because ``MapResizedError`` only happens across processes.
"""

from __future__ import annotations

import multiprocessing
import os
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import lmdb
import numpy as np
import pytest

from episodic_memory.core.models import (
    Episode,
    ExecutionStep,
    Reflection,
    RewardScore,
    TaskContext,
    TaskOutcome,
)
from episodic_memory.core.patterns import (
    ContextPattern,
    DecisionPoint,
    ErrorRecovery,
    ToolSequence,
    stable_id,
)
from episodic_memory.errors import StorageError, ValidationError
from episodic_memory.storage.lmdb_cache import LmdbCache

T0 = datetime(2025, 1, 2, 3, 4, 5, 678_901, tzinfo=UTC)


def sealed(number: int, *, steps: int = 3, revision: int = 1, payload: int = 50) -> Episode:
    return Episode(
        episode_id=f"ep-{number:04d}",
        task_description=f"task {number}: fix the flaky test ünïcödé ✓",
        context=TaskContext(language="python", domain="web", tags=["ci", "flaky"]),
        task_type="debugging",
        agent_id="agent-7",
        status="completed",
        steps=[
            ExecutionStep(
                step_number=i + 1,
                tool=f"tool_{i % 2}",
                action="run",
                parameters={"path": "tests/x.py", "depth": [1, {"k": None}]},
                latency_ms=12.5 + i,
                tokens=40 + i,
                success=i != 1,
                observation="o" * payload,
                error="boom" if i == 1 else None,
                timestamp=T0 + timedelta(seconds=i),
                metadata={"attempt": i},
            )
            for i in range(steps)
        ],
        outcome=TaskOutcome.partial(completed=["a"], failed=["b"], summary="half"),
        reward=RewardScore(
            total=0.61,
            outcome=0.5,
            efficiency=0.9,
            time_efficiency=0.8,
            step_efficiency=0.7,
            complexity_bonus=0.05,
            error_penalty=0.1,
            recovery_bonus=0.05,
        ),
        reflection=Reflection(successes=["s"], improvements=["i"], insights=["n"]),
        started_at=T0,
        completed_at=T0 + timedelta(minutes=2),
        metadata={"run": number},
        pattern_ids=["p1"],
        revision=revision,
    )


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[LmdbCache]:
    opened = LmdbCache(tmp_path / "cache", map_size_bytes=1 << 24, max_episodes=100)
    yield opened
    opened.close()


def test_episodes_with_steps_round_trip_losslessly(cache: LmdbCache) -> None:
    episodes = [sealed(1), sealed(2, steps=0)]
    assert cache.put_episodes(episodes) == 2
    got = cache.get_episodes(["ep-0001", "ep-0002", "unknown"])
    assert got == {e.episode_id: e for e in episodes}
    assert got["ep-0001"].steps[1].timestamp == T0 + timedelta(seconds=1)
    stats = cache.stats()
    assert (stats["hits"], stats["misses"], stats["entries"]) == (2, 1, 2)


def test_every_pattern_kind_round_trips_losslessly(cache: LmdbCache) -> None:
    common = {"domain": "web", "occurrences": 3, "successes": 2, "confidence": 0.4}
    patterns = [
        ToolSequence(pattern_id=stable_id("ts"), key="ts", tools=["a", "b"], **common),
        DecisionPoint(
            pattern_id=stable_id("dp"), key="dp", after_tools=["a"], chosen_tool="b", **common
        ),
        ErrorRecovery(
            pattern_id=stable_id("er"),
            key="er",
            failed_tool="a",
            error_signature="timeout",
            recovery_tools=["retry"],
            **common,
        ),
        ContextPattern(
            pattern_id=stable_id("cp"),
            key="cp",
            features={"language": "python"},
            tools=["pytest"],
            episode_ids=["ep-1"],
            **common,
        ),
    ]
    cache.put_patterns(patterns)
    got = sorted(cache.get_patterns(), key=lambda p: p.pattern_id)
    assert got == sorted(patterns, key=lambda p: p.pattern_id)
    assert {type(p) for p in got} == {ToolSequence, DecisionPoint, ErrorRecovery, ContextPattern}


def test_embeddings_keep_their_exact_float32_bytes(cache: LmdbCache) -> None:
    vector = np.random.default_rng(7).standard_normal(384).astype("<f4")
    cache.put_embeddings([("ep-0001", vector.tobytes())])
    stored = cache.get_embedding("ep-0001")
    assert stored is not None
    assert np.array_equal(np.frombuffer(stored, dtype="<f4"), vector)
    assert cache.get_embedding("missing") is None


def test_the_bound_evicts_the_least_recently_used_episode(tmp_path: Path) -> None:
    cache = LmdbCache(tmp_path / "c", map_size_bytes=1 << 22, max_episodes=3)
    try:
        cache.put_episodes([sealed(1), sealed(2), sealed(3)])
        assert set(cache.get_episodes(["ep-0001"])) == {"ep-0001"}  # a read refreshes 1
        cache.put_episodes([sealed(4)])
        assert set(cache.versions()) == {"ep-0001", "ep-0003", "ep-0004"}
        cache.put_episodes([sealed(5), sealed(6)])
        assert set(cache.versions()) == {"ep-0004", "ep-0005", "ep-0006"}
        stats = cache.stats()
        assert (stats["entries"], stats["evictions"]) == (3, 3)
    finally:
        cache.close()


def test_embeddings_are_bounded_like_episodes(tmp_path: Path) -> None:
    cache = LmdbCache(tmp_path / "c", map_size_bytes=1 << 22, max_episodes=2)
    try:
        cache.put_embeddings([(f"ep-{i}", bytes(16)) for i in range(5)])
        assert cache.stats()["embeddings"] == 2
        assert cache.get_embedding("ep-4") is not None
        assert cache.get_embedding("ep-0") is None
    finally:
        cache.close()


def test_a_zero_bound_caches_no_episodes(tmp_path: Path) -> None:
    cache = LmdbCache(tmp_path / "c", map_size_bytes=1 << 20, max_episodes=0)
    try:
        assert cache.put_episodes([sealed(1)]) == 0
        assert cache.get_episodes(["ep-0001"]) == {}
    finally:
        cache.close()


def test_a_full_map_grows_and_the_whole_batch_survives(tmp_path: Path) -> None:
    cache = LmdbCache(tmp_path / "c", map_size_bytes=1 << 16, max_episodes=1000)
    try:
        batch = [sealed(i, steps=4, payload=400) for i in range(300)]
        assert cache.put_episodes(batch) == 300
        stats = cache.stats()
        assert stats["entries"] == 300
        assert stats["map_growths"] >= 1
        assert stats["map_size_bytes"] > 1 << 16
        assert cache.get_episodes([e.episode_id for e in batch]) == {e.episode_id: e for e in batch}
    finally:
        cache.close()


def _grow_map_from_another_process(path: str) -> None:
    other = LmdbCache(Path(path), map_size_bytes=1 << 26, max_episodes=1000)
    other.put_episodes([sealed(i, steps=4, payload=400) for i in range(100, 250)])
    other.close()


def test_a_map_grown_by_another_process_is_adopted_on_the_next_transaction(
    tmp_path: Path,
) -> None:
    cache = LmdbCache(tmp_path / "c", map_size_bytes=1 << 16, max_episodes=1000)
    try:
        cache.put_episodes([sealed(1)])
        child = multiprocessing.get_context("spawn").Process(
            target=_grow_map_from_another_process, args=(str(tmp_path / "c"),)
        )
        child.start()
        child.join(timeout=120)
        assert child.exitcode == 0
        got = cache.get_episodes(["ep-0001", "ep-0100", "ep-0249"])
        assert set(got) == {"ep-0001", "ep-0100", "ep-0249"}
        assert cache.put_episodes([sealed(2)]) == 1
        assert cache.stats()["map_size_bytes"] >= 1 << 26
    finally:
        cache.close()


def test_a_truncated_data_file_is_recreated_empty_and_reported(tmp_path: Path) -> None:
    path = tmp_path / "c"
    cache = LmdbCache(path, map_size_bytes=1 << 22, max_episodes=1000)
    cache.put_episodes([sealed(i, payload=2000) for i in range(50)])
    cache.close()
    os.truncate(path / "data.mdb", 9000)
    reopened = LmdbCache(path, map_size_bytes=1 << 22, max_episodes=1000)
    try:
        assert reopened.versions() == {}
        assert reopened.stats()["repairs"] == 1
        assert reopened.last_repair is not None
        assert "data.mdb" in reopened.last_repair
        assert reopened.put_episodes([sealed(1)]) == 1
        assert set(reopened.get_episodes(["ep-0001"])) == {"ep-0001"}
    finally:
        reopened.close()


def test_a_garbage_data_file_is_recreated_empty(tmp_path: Path) -> None:
    path = tmp_path / "c"
    path.mkdir()
    (path / "data.mdb").write_bytes(np.random.default_rng(1).bytes(50_000))
    cache = LmdbCache(path, map_size_bytes=1 << 20, max_episodes=10)
    try:
        assert cache.stats()["repairs"] == 1
        assert cache.put_episodes([sealed(1)]) == 1
    finally:
        cache.close()


def test_deleted_files_reopen_as_an_empty_cache(tmp_path: Path) -> None:
    path = tmp_path / "c"
    LmdbCache(path, map_size_bytes=1 << 20, max_episodes=10).close()
    for name in ("data.mdb", "lock.mdb"):
        (path / name).unlink()
    cache = LmdbCache(path, map_size_bytes=1 << 20, max_episodes=10)
    try:
        assert cache.versions() == {}
        assert cache.stats()["repairs"] == 0
    finally:
        cache.close()


def test_an_unreadable_entry_is_a_miss_and_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "c"
    cache = LmdbCache(path, map_size_bytes=1 << 20, max_episodes=10)
    cache.put_episodes([sealed(1), sealed(2)])
    cache.close()
    env = lmdb.open(str(path), max_dbs=8)
    with env.begin(write=True) as txn:
        txn.put(b"ep-0001", b"{not json", db=env.open_db(b"episodes", txn=txn))
    env.close()
    cache = LmdbCache(path, map_size_bytes=1 << 20, max_episodes=10)
    try:
        assert set(cache.get_episodes(["ep-0001", "ep-0002"])) == {"ep-0002"}
        assert set(cache.versions()) == {"ep-0002"}
        assert cache.stats()["repairs"] == 1
    finally:
        cache.close()


def test_a_lower_revision_never_replaces_a_higher_one(cache: LmdbCache) -> None:
    cache.put_episodes([sealed(1, revision=3)])
    assert cache.put_episodes([sealed(1, revision=2)]) == 0
    assert cache.versions() == {"ep-0001": 3}
    assert cache.put_episodes([sealed(1, revision=4)]) == 1
    assert cache.versions() == {"ep-0001": 4}


def test_an_active_episode_is_refused_and_nothing_is_written(cache: LmdbCache) -> None:
    active = Episode(episode_id="ep-active", task_description="still running")
    with pytest.raises(ValidationError):
        cache.put_episodes([sealed(1), active])
    assert cache.versions() == {}


def test_delete_and_clear_remove_entries(cache: LmdbCache) -> None:
    cache.put_episodes([sealed(1), sealed(2), sealed(3)])
    assert cache.delete_episodes(["ep-0001", "ep-0009"]) == 1
    assert set(cache.versions()) == {"ep-0002", "ep-0003"}
    cache.put_embeddings([("ep-0002", bytes(8))])
    cache.clear()
    assert cache.versions() == {}
    assert cache.get_embedding("ep-0002") is None
    assert cache.put_episodes([sealed(4)]) == 1


def test_entries_and_counters_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "c"
    cache = LmdbCache(path, map_size_bytes=1 << 20, max_episodes=10)
    cache.put_episodes([sealed(1)])
    cache.get_episodes(["ep-0001", "nope"])
    cache.close()
    cache.close()  # closing twice is harmless
    reopened = LmdbCache(path, map_size_bytes=1 << 20, max_episodes=10)
    try:
        assert reopened.get_episodes(["ep-0001"]) == {"ep-0001": sealed(1)}
        stats = reopened.stats()
        assert (stats["hits"], stats["misses"]) == (2, 1)
    finally:
        reopened.close()


def test_a_second_handle_on_the_same_path_in_one_process_is_refused(cache: LmdbCache) -> None:
    with pytest.raises(StorageError, match="already open in this process"):
        LmdbCache(cache.path, map_size_bytes=1 << 20, max_episodes=10)


def test_a_closed_cache_raises_a_storage_error(tmp_path: Path) -> None:
    cache = LmdbCache(tmp_path / "c", map_size_bytes=1 << 20, max_episodes=10)
    cache.close()
    with pytest.raises(StorageError, match="closed"):
        cache.get_episodes(["ep-0001"])


def _use_after_fork(cache: LmdbCache, queue: multiprocessing.Queue[str]) -> None:
    try:
        cache.get_episodes(["ep-0001"])
        queue.put("no error")
    except StorageError as exc:
        queue.put(str(exc))


def test_a_cache_inherited_across_fork_refuses_to_work(cache: LmdbCache) -> None:
    context = multiprocessing.get_context("fork")
    queue: multiprocessing.Queue[str] = context.Queue()
    child = context.Process(target=_use_after_fork, args=(cache, queue))
    with warnings.catch_warnings():  # 3.12+ warns about fork with threads: that is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        child.start()
    message = queue.get(timeout=60)
    child.join(timeout=60)
    assert "after fork" in message
    cache.put_episodes([sealed(1)])  # the parent's handle is unaffected
    assert set(cache.versions()) == {"ep-0001"}
