"""Export → import gives the same memory: every episode, step, pattern, heuristic and mark.

Runs on the in-process backend and plain ``StorageService`` objects (no Ray), on real files.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import orjson
import pytest

from episodic_memory.config import CacheConfig, LearnerConfig, MemoryConfig
from episodic_memory.core.models import ExecutionStep, TaskContext, TaskOutcome
from episodic_memory.demo import generate_episode
from episodic_memory.errors import ValidationError
from episodic_memory.memory import SelfLearningMemory
from episodic_memory.storage.service import StorageService
from episodic_memory.transfer import export_memory, import_memory


def config(folder: Path) -> MemoryConfig:
    return MemoryConfig(data_dir=folder, learner=LearnerConfig(pool_size=1))


async def fill(folder: Path, seeds: range) -> None:
    """A memory with completed (learned) episodes, and one still active."""
    memory = await SelfLearningMemory.open(config(folder), backend="in_process")
    try:
        for seed in seeds:
            task, context, steps, outcome = generate_episode(seed)
            episode_id = await memory.start_episode(task, context, agent_id=f"seed-{seed}")
            await memory.log_steps(episode_id, steps)
            await memory.complete_episode(episode_id, outcome)
        active = await memory.start_episode("still running", TaskContext(domain="web"))
        await memory.log_steps(active, [ExecutionStep(tool="read_file")])
        await memory.settle()
    finally:
        await memory.close()


async def snapshot(folder: Path) -> dict[str, Any]:
    """Every record the memory's store holds, as JSON, keyed by id."""
    plain = config(folder).model_copy(update={"cache": CacheConfig(enabled=False)})
    service = await StorageService.open(plain)
    store = service.store
    try:
        episodes = {e.episode_id: e async for page in store.iter_episodes() for e in page}
        vectors = [v async for page in store.iter_embeddings("hashing-1024") for v in page]
        return {
            "episodes": {k: e.model_dump(mode="json") for k, e in episodes.items()},
            "learned": await store.learned_episode_ids(list(episodes)),
            "patterns": {
                p.pattern_id: p.model_dump(mode="json") for p in await store.load_patterns()
            },
            "heuristics": {
                h.heuristic_id: h.model_dump(mode="json") for h in await store.load_heuristics()
            },
            "vectors": {v.episode_id: v.vector for v in vectors},
        }
    finally:
        await service.close()


@pytest.fixture(scope="module")
async def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("source")
    await fill(folder, range(24))
    return folder


async def test_export_then_import_into_an_empty_memory_gives_every_record_back(
    source: Path, tmp_path: Path
) -> None:
    seen: list[tuple[int, int | None]] = []
    exported = await export_memory(
        config(source), tmp_path / "memory.jsonl", progress=lambda *a: seen.append(a)
    )
    imported = await import_memory(config(tmp_path / "copy"), tmp_path / "memory.jsonl")

    before, after = await snapshot(source), await snapshot(tmp_path / "copy")
    assert all(before[kind] for kind in ("episodes", "patterns", "heuristics"))
    for kind in ("episodes", "patterns", "heuristics", "learned", "vectors"):
        assert after[kind] == before[kind], kind
    assert (
        exported.counts
        == imported.counts
        == {
            "pattern": len(before["patterns"]),
            "heuristic": len(before["heuristics"]),
            "episode": len(before["episodes"]),
        }
    )
    assert seen[-1] == (len(before["episodes"]), len(before["episodes"]))


async def test_an_imported_memory_retrieves_what_the_original_retrieves(
    source: Path, tmp_path: Path
) -> None:
    await export_memory(config(source), tmp_path / "memory.jsonl.gz")
    with gzip.open(tmp_path / "memory.jsonl.gz", "rb") as f:
        assert orjson.loads(f.readline())["format"] == "episodic-memory"
    await import_memory(config(tmp_path / "copy"), tmp_path / "memory.jsonl.gz")

    answers = []
    for folder in (source, tmp_path / "copy"):
        memory = await SelfLearningMemory.open(config(folder), backend="in_process")
        try:
            found = await memory.retrieve_relevant_context(
                "fix the failing login test", TaskContext(domain="web"), limit=5
            )
            answers.append(([e.episode_id for e in found.episodes], found.suggested_tools))
            assert (await memory.stats())["learners"][0]["learned"] == 0  # nothing to re-learn
        finally:
            await memory.close()
    assert answers[0] == answers[1]
    assert answers[0][0]


async def test_import_refuses_a_memory_that_holds_episodes_unless_merging(
    source: Path, tmp_path: Path
) -> None:
    await export_memory(config(source), tmp_path / "memory.jsonl")
    await fill(tmp_path / "busy", range(100, 102))
    with pytest.raises(ValidationError, match="not empty"):
        await import_memory(config(tmp_path / "busy"), tmp_path / "memory.jsonl")

    merged = await import_memory(config(tmp_path / "busy"), tmp_path / "memory.jsonl", merge=True)
    again = await import_memory(config(tmp_path / "busy"), tmp_path / "memory.jsonl", merge=True)

    total = len((await snapshot(source))["episodes"])
    assert merged.counts["episode"] == total
    assert (again.counts["episode"], again.skipped["episode"]) == (0, total)
    assert len((await snapshot(tmp_path / "busy"))["episodes"]) == total + 3


async def test_a_truncated_export_is_refused_before_anything_is_written(
    source: Path, tmp_path: Path
) -> None:
    whole = tmp_path / "memory.jsonl"
    await export_memory(config(source), whole)
    cut = tmp_path / "cut.jsonl"
    cut.write_bytes(b"".join(whole.read_bytes().splitlines(keepends=True)[:-3]))

    with pytest.raises(ValidationError, match="no end line"):
        await import_memory(config(tmp_path / "copy"), cut)
    assert (await snapshot(tmp_path / "copy"))["episodes"] == {}


async def test_a_bad_record_names_its_line_and_field(tmp_path: Path) -> None:
    lines = [
        {"type": "header", "format": "episodic-memory", "format_version": 1},
        {"type": "episode", "learned": False, "record": {"episode_id": "x"}},
        {"type": "end", "counts": {}},
    ]
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))

    with pytest.raises(ValidationError, match=r"bad\.jsonl:2: episode Episode\.task_description"):
        await import_memory(config(tmp_path / "copy"), path)


async def test_a_secret_in_a_hand_edited_export_is_redacted_on_import(tmp_path: Path) -> None:
    token = "ghp_R4nd0mL00k1ngT0k3nV4lu3abcdefghij12"
    episode = {
        "episode_id": "ep-1",
        "task_description": f"rotate the token {token}",
        "status": "completed",
        "outcome": TaskOutcome.success("done").model_dump(mode="json"),
        "steps": [{"tool": "shell", "action": f"echo {token}", "step_number": 1}],
    }
    lines = [
        {"type": "header", "format": "episodic-memory", "format_version": 1},
        {"type": "episode", "learned": False, "record": episode},
        {"type": "end", "counts": {"episode": 1}},
    ]
    path = tmp_path / "edited.jsonl"
    path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))

    await import_memory(config(tmp_path / "copy"), path)

    stored = orjson.dumps((await snapshot(tmp_path / "copy"))["episodes"])
    assert token.encode() not in stored
    assert b"[REDACTED:github_token]" in stored
