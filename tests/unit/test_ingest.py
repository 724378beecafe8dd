"""Bulk ingest on the in-process backend: real libSQL file, real LMDB, real FAISS, no Ray.

What is promised (``episodic_memory.ingest``): ingested episodes are retrievable and scored as
completed ones are; secrets never reach storage; re-ingesting writes nothing twice; a bad record
names its position and field and nothing of its batch is written; a checkpointed run that dies
resumes and ends exactly like an uninterrupted one.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from episodic_memory import Episode, ExecutionStep, MemoryConfig, TaskOutcome
from episodic_memory.config import LearnerConfig
from episodic_memory.demo import generate_episode
from episodic_memory.errors import ValidationError
from episodic_memory.ingest import IngestCheckpoint
from episodic_memory.memory import SelfLearningMemory
from episodic_memory.memory_sync import SyncMemory
from support.secrets_corpus import SECRETS

T0 = datetime(2025, 3, 1, tzinfo=UTC)


def config(folder: Path) -> MemoryConfig:
    return MemoryConfig(data_dir=folder, learner=LearnerConfig(pool_size=1))


def record(seed: int) -> dict[str, Any]:
    """A completed demo episode as plain JSON, with a fixed id and fixed times."""
    task, context, steps, outcome = generate_episode(seed)
    started = T0 + timedelta(minutes=seed)
    return {
        "episode_id": str(uuid.UUID(int=seed + 1)),
        "task_description": task,
        "context": context.model_dump(mode="json"),
        "status": "completed",
        "started_at": started.isoformat(),
        "steps": [
            s.model_dump(mode="json", exclude={"step_number"})
            | {"timestamp": (started + timedelta(seconds=i)).isoformat()}
            for i, s in enumerate(steps)
        ],
        "outcome": outcome.model_dump(mode="json"),
    }


def records(seeds: range) -> Iterator[dict[str, Any]]:
    return (record(seed) for seed in seeds)


def rows(folder: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(folder / "memory.db") as db:
        return db.execute(sql).fetchall()


def counts(folder: Path) -> dict[str, int]:
    tables = ("episodes", "steps", "embeddings", "episodes_fts")
    return {t: rows(folder, f"SELECT count(*) FROM {t}")[0][0] for t in tables}


def content(folder: Path) -> dict[str, Any]:
    """Every stored episode and step row, without the columns a run stamps (learned_at)."""
    return {
        "episodes": rows(
            folder,
            "SELECT episode_id, task_type, status, verdict, reward_total, tool_path, recovered, "
            "revision, data FROM episodes ORDER BY episode_id",
        ),
        "steps": rows(folder, "SELECT episode_id, step_number, data FROM steps ORDER BY 1, 2"),
        "vectors": rows(folder, "SELECT episode_id, vector FROM embeddings ORDER BY 1"),
    }


@pytest.fixture
async def memory(tmp_path: Path) -> AsyncIterator[SelfLearningMemory]:
    opened = await SelfLearningMemory.open(config(tmp_path / "memory"), backend="in_process")
    yield opened
    await opened.close()


async def test_ingested_episodes_are_scored_stored_once_and_retrievable(
    memory: SelfLearningMemory,
) -> None:
    report = await memory.bulk_ingest(records(range(30)), batch_size=8)
    assert (report.episodes, report.skipped, report.batches) == (30, 0, 4)
    folder = memory.config.data_dir
    assert counts(folder) == {
        "episodes": 30, "steps": report.steps, "embeddings": 30, "episodes_fts": 30,
    }  # fmt: skip

    stored = await memory.get_episode(str(uuid.UUID(int=1)))
    assert stored.status == "completed"
    assert stored.reward is not None  # as complete_episode would give it
    assert stored.reflection is not None
    assert [s.step_number for s in stored.steps] == list(range(1, len(stored.steps) + 1))
    debugging = await memory.get_episode(str(uuid.UUID(int=3)))  # "fix the failing login test"
    assert debugging.task_type == "debugging"  # classified from the description, as at start
    [(tool_path,)] = rows(folder, "SELECT tool_path FROM episodes WHERE seq = 1")
    assert tool_path is not None  # ranking columns filled, as at seal

    task, context, *_ = generate_episode(0)
    found = await memory.retrieve_relevant_context(task, context, limit=5)
    assert str(uuid.UUID(int=1)) in [e.episode_id for e in found.episodes]
    keyword = await memory._backend._storage.keyword_search(task)  # type: ignore[union-attr]
    assert keyword, "full-text rows carry the description and the steps' text"


async def test_reingesting_the_same_ids_adds_no_step_and_learns_nothing_twice(
    memory: SelfLearningMemory, tmp_path: Path
) -> None:
    folder = memory.config.data_dir
    first = await memory.bulk_ingest(records(range(20)), batch_size=7)
    await memory.settle()
    before = content(folder)

    again = await memory.bulk_ingest(list(records(range(25))), batch_size=7)
    assert (again.episodes, again.skipped) == (5, 20)
    twice = await memory.bulk_ingest(records(range(25)))
    assert (twice.episodes, twice.skipped, twice.steps) == (0, 25, 0)
    await memory.settle()
    after = content(folder)
    assert len(after["steps"]) == first.steps + again.steps
    old_ids = {row[0] for row in before["episodes"]}
    for part in ("episodes", "steps", "vectors"):
        assert [row for row in after[part] if row[0] in old_ids] == before[part]
    assert rows(folder, "SELECT count(*) FROM episodes WHERE learned_at IS NULL") == [(0,)]

    once = await SelfLearningMemory.open(config(tmp_path / "once"), backend="in_process")
    try:
        await once.bulk_ingest(records(range(25)))
        await once.settle()
    finally:
        await once.close()
    occurrences = "SELECT pattern_id, occurrences FROM patterns ORDER BY 1"
    assert rows(folder, occurrences) == rows(tmp_path / "once", occurrences)


async def test_secrets_in_every_field_never_reach_storage(memory: SelfLearningMemory) -> None:
    items = []
    for index, (_kind, text, _secret) in enumerate(SECRETS):
        items.append(
            {
                "task_description": f"deploy with {text}",
                "context": {"domain": "ops", "tags": ["deploy"]},
                "status": "completed",
                "metadata": {"note": text},
                "steps": [
                    {
                        "tool": "shell",
                        "action": f"run {text}",
                        "parameters": {"env": text, "password": "hunter2-" + str(index)},
                        "observation": text,
                        "error": text,
                        "success": False,
                    },
                    {"tool": "shell", "action": "retry", "metadata": {"raw": text}},
                ],
                "outcome": {"verdict": "success", "summary": text, "artifacts": [text]},
            }
        )
    report = await memory.bulk_ingest(items, batch_size=16)
    assert report.episodes == len(SECRETS)
    await memory.close()
    blobs = b"".join(p.read_bytes() for p in memory.config.data_dir.rglob("*") if p.is_file())
    leaked = [kind for kind, _text, secret in SECRETS if secret.encode() in blobs]
    assert leaked == []
    assert b"[REDACTED:" in blobs


async def test_a_bad_record_names_its_position_and_field_and_its_batch_is_not_written(
    memory: SelfLearningMemory,
) -> None:
    items = list(records(range(25)))
    items[17]["steps"][2]["tool"] = ""
    with pytest.raises(ValidationError) as raised:
        await memory.bulk_ingest(items, batch_size=10)
    assert raised.value.field == "episodes[17].steps.2.tool"
    stored = {r[0] for r in rows(memory.config.data_dir, "SELECT episode_id FROM episodes")}
    batch = lambda seeds: {str(uuid.UUID(int=n + 1)) for n in seeds}  # noqa: E731
    assert batch(range(10)) <= stored  # the batch before it is in
    assert not batch(range(10, 20)) & stored  # nothing of its own batch
    # (a batch after it may have been in flight, and written: a rerun skips what is stored)

    with pytest.raises(ValidationError, match=r"episodes\[0\]: is a str"):
        await memory.bulk_ingest(["not an episode"])
    with pytest.raises(ValidationError, match="batch_size"):
        await memory.bulk_ingest([], batch_size=0)


async def test_older_record_shapes_and_active_episodes_load(memory: SelfLearningMemory) -> None:
    old = {  # schema 1, no revision / pattern_ids / reflection / step numbers or timestamps
        "schema_version": 1,
        "episode_id": "old-1",
        "task_description": "rotate the log files",
        "context": {"domain": "ops"},
        "status": "completed",
        "steps": [{"tool": "logrotate"}, {"tool": "ls", "success": False}],
        "outcome": {"verdict": "partial", "completed": ["rotate"], "failed": ["verify"]},
    }
    active = Episode(
        episode_id="live-1",
        task_description="still running",
        steps=[ExecutionStep(tool="read_file")],
    )

    async def stream() -> AsyncIterator[object]:
        for item in (old, active):
            yield item

    report = await memory.bulk_ingest(stream())
    assert report.episodes == 2
    loaded = await memory.get_episode("old-1")
    assert (loaded.revision, [s.step_number for s in loaded.steps]) == (1, [1, 2])
    assert loaded.completed_at is not None
    assert loaded.reward is not None

    # An ingested active episode is adopted by the live path and can be finished there.
    await memory.log_steps("live-1", [ExecutionStep(tool="edit_file")])
    result = await memory.complete_episode("live-1", TaskOutcome.success("done"))
    assert result.steps == 2


async def test_a_checkpointed_ingest_that_dies_resumes_and_ends_like_an_uninterrupted_one(
    tmp_path: Path,
) -> None:
    checkpoint = tmp_path / "ingest.checkpoint"
    seen: list[tuple[int, int | None]] = []

    def dying(seeds: range, after: int) -> Iterator[dict[str, Any]]:
        for seed in seeds:
            if seed == after:
                raise RuntimeError("killed mid-run")
            yield record(seed)

    broken = await SelfLearningMemory.open(config(tmp_path / "a"), backend="in_process")
    try:
        with pytest.raises(RuntimeError, match="killed"):
            await broken.bulk_ingest(dying(range(40), 27), batch_size=6, checkpoint=checkpoint)
        state = orjson.loads(checkpoint.read_bytes())
        assert state["position"] == 24  # the four batches before the failure, all committed
        resumed = await broken.bulk_ingest(
            records(range(40)),
            batch_size=6,
            checkpoint=checkpoint,
            progress=lambda *a: seen.append(a),
        )
        await broken.settle()
    finally:
        await broken.close()
    assert resumed.resumed_from == 24
    assert (resumed.episodes, resumed.skipped, resumed.handled) == (40, 0, 16)
    assert not checkpoint.exists()  # done: removed
    assert seen[0] == (24, None)
    assert seen[-1] == (40, None)

    whole = await SelfLearningMemory.open(config(tmp_path / "b"), backend="in_process")
    try:
        uninterrupted = await whole.bulk_ingest(records(range(40)), batch_size=6)
        await whole.settle()
    finally:
        await whole.close()
    assert (uninterrupted.episodes, uninterrupted.steps) == (resumed.episodes, resumed.steps)
    assert content(tmp_path / "a") == content(tmp_path / "b")


async def test_a_checkpoint_refuses_a_different_input_or_memory(
    memory: SelfLearningMemory, tmp_path: Path
) -> None:
    checkpoint = IngestCheckpoint(tmp_path / "c.checkpoint")
    checkpoint.write(
        {"target": "file:/elsewhere/memory.db", "kind": "records", "position": 1, "digest": "x"}
    )
    with pytest.raises(ValidationError, match="belongs to an ingest into"):
        await memory.bulk_ingest(records(range(3)), checkpoint=checkpoint)
    target = f"file:{memory.config.data_dir / 'memory.db'}"
    checkpoint.write({"target": target, "kind": "records", "position": 1, "digest": "x"})
    with pytest.raises(ValidationError, match="differ from"):
        await memory.bulk_ingest(records(range(3)), checkpoint=checkpoint)
    assert counts(memory.config.data_dir)["episodes"] == 0


async def test_learn_false_marks_episodes_learned_and_teaches_the_tool_predictor(
    memory: SelfLearningMemory,
) -> None:
    report = await memory.bulk_ingest(records(range(12)), learn=False)
    assert report.learning == "skipped"
    await memory.settle()
    folder = memory.config.data_dir
    assert rows(folder, "SELECT count(*) FROM episodes WHERE learned_at IS NULL") == [(0,)]
    assert rows(folder, "SELECT count(*) FROM patterns") == [(0,)]
    stats = await memory.stats()
    assert stats["index"]["predictor_episodes"] > 0


def test_the_sync_facade_ingests_too(tmp_path: Path) -> None:
    memory = SyncMemory.open(config(tmp_path), backend="in_process")
    try:
        report = memory.bulk_ingest([record(seed) for seed in range(5)])
        assert report.episodes == 5
        assert memory.retrieve_relevant_context(generate_episode(3)[0]).episodes
    finally:
        memory.close()


async def test_records_without_ids_get_the_same_id_on_every_run(
    memory: SelfLearningMemory,
) -> None:
    plain = [{k: v for k, v in record(seed).items() if k != "episode_id"} for seed in range(6)]
    first = await memory.bulk_ingest(plain)
    second = await memory.bulk_ingest(plain)
    assert (first.episodes, second.episodes, second.skipped) == (6, 0, 6)
