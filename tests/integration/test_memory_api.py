"""The rest of the public API over Ray, the in-process backend, and the demo end to end."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import ray

from episodic_memory import demo
from episodic_memory.actors.episode_host import EpisodeHost
from episodic_memory.actors.index_thread import ThreadedIndex
from episodic_memory.actors.pipeline import LearningWorker, ServiceWriter
from episodic_memory.config import MemoryConfig
from episodic_memory.core.models import Episode, ExecutionStep, TaskContext, TaskOutcome
from episodic_memory.errors import ValidationError
from episodic_memory.index.service import IndexService
from episodic_memory.memory import SelfLearningMemory
from episodic_memory.storage.service import StorageService

FIX = [
    ExecutionStep(tool="read_file"),
    ExecutionStep(tool="run_tests", success=False, error="AssertionError: expected 200"),
    ExecutionStep(tool="edit_file"),
    ExecutionStep(tool="run_tests"),
]


async def record(memory: SelfLearningMemory, description: str, domain: str, verdict: str) -> str:
    episode_id = await memory.start_episode(description, TaskContext(domain=domain))
    await memory.log_steps(episode_id, FIX)
    outcome = TaskOutcome.success() if verdict == "success" else TaskOutcome.failure("gave up")
    await memory.complete_episode(episode_id, outcome)
    return episode_id


async def test_learning_off_the_hot_path_feeds_patterns_into_retrieval(
    open_memory: Callable[..., Any],
) -> None:
    memory = await open_memory()
    for n in range(4):
        await record(memory, f"fix the failing checkout test {n}", "web", "success")
    await memory.settle()
    stats = await memory.stats()
    assert stats["storage"]["tables"]["patterns"] > 0
    assert stats["learners"][0]["learned"] == 4
    found = await memory.retrieve_relevant_context(
        "fix the failing login test", TaskContext(domain="web"), limit=3
    )
    assert len(found.episodes) == 3
    assert found.patterns
    assert [t.tool for t in found.suggested_tools][:1] == ["read_file"]


async def test_list_episodes_filters_by_domain_and_verdict(open_memory: Callable[..., Any]) -> None:
    memory = await open_memory()
    web = await record(memory, "fix the signup form", "web", "success")
    await record(memory, "repair the ETL job", "data", "success")
    failed = await record(memory, "fix the search page", "web", "failure")
    assert {e.episode_id for e in await memory.list_episodes(domain="web")} == {web, failed}
    assert [e.episode_id for e in await memory.list_episodes(verdict="failure")] == [failed]
    assert len(await memory.list_episodes(limit=1)) == 1


async def test_sync_memories_repairs_the_cache_from_the_store(
    open_memory: Callable[..., Any],
) -> None:
    memory = await open_memory()
    await record(memory, "tidy the README", "docs", "success")
    report = await memory.sync_memories()
    assert report.repaired == 0
    assert report.checked >= 1


async def test_bad_input_is_refused_at_the_edge_with_the_field_named(
    open_memory: Callable[..., Any],
) -> None:
    memory = await open_memory()
    episode_id = await memory.start_episode("validate me")
    cases: list[tuple[Callable[[], Any], str]] = [
        (lambda: memory.log_step(episode_id, {"tool": ""}), "steps.0.tool"),
        (lambda: memory.log_steps(episode_id, [{"tool": "ok"}, {"tokens": -1}]), "steps.1"),
        (lambda: memory.retrieve_relevant_context("anything", limit=0), "limit"),
        (lambda: memory.retrieve_relevant_context("anything", limit=10_000), "limit"),
        (lambda: memory.start_episode("   "), "description"),
        (lambda: memory.start_episode("ok", {"tags": "not-a-list"}), "context.tags"),
        (lambda: memory.complete_episode(episode_id, {"verdict": "great"}), "outcome.verdict"),
        (lambda: memory.get_episode(""), "episode_id"),
        (lambda: memory.list_episodes(verdict="meh"), "filters.verdict"),  # type: ignore[arg-type]
    ]
    for call, field in cases:
        with pytest.raises(ValidationError) as caught:
            await call()
        assert caught.value.field.startswith(field), caught.value.field
    assert (await memory.get_episode(episode_id)).steps == []


async def test_the_in_process_backend_keeps_episodes_across_reopening(tmp_path: Path) -> None:
    config = MemoryConfig(data_dir=tmp_path)
    memory = await SelfLearningMemory.open(config, backend="in_process")
    episode_id = await record(memory, "fix the failing checkout test", "web", "success")
    active = await memory.start_episode("still running when we close")
    await memory.log_step(active, {"tool": "read_file"})
    await memory.close()

    reopened = await SelfLearningMemory.open(config, backend="in_process")
    try:
        assert (await reopened.get_episode(episode_id)).status == "completed"
        assert [s.tool for s in (await reopened.get_episode(active)).steps] == ["read_file"]
        found = await reopened.retrieve_relevant_context("fix the checkout test", limit=1)
        assert [e.episode_id for e in found.episodes] == [episode_id]
    finally:
        await reopened.close()


def test_the_demo_runs_twice_on_the_same_folder(
    ray_session: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--data-dir", str(tmp_path), "--agents", "6", "--episodes", "2", "--workers", "2"]
    demo.main(args)
    first = capsys.readouterr().out
    demo.main(args)
    second = capsys.readouterr().out
    assert "12 episodes in" in first
    assert "12 episodes in" in second
    assert "holds 12 episodes" in first
    assert "holds 24 episodes" in second
    assert "Advice for a new task" in second
    assert ray.is_initialized()  # the demo used the session's Ray and left it running


async def test_learning_lost_with_a_learner_is_recovered_from_storage(tmp_path: Path) -> None:
    config = MemoryConfig(data_dir=tmp_path)
    storage = await StorageService.open(config)
    index = ThreadedIndex(IndexService(config.index, config.index_dir))
    try:
        lost: list[str] = []  # the hand-off goes nowhere: the learner "died"
        host = EpisodeHost(
            ServiceWriter(storage, index, lost.extend), flush=config.flush, limits=config.limits
        )
        for n in range(3):
            episode = Episode(task_description=f"fix the failing test {n}")
            await host.start(episode)
            await host.log_steps(episode.episode_id, FIX)
            await host.complete(episode.episode_id, TaskOutcome.success())
        assert sorted(await storage.unlearned_episode_ids()) == sorted(lost)

        learner = LearningWorker(storage, index, max_in_flight=2, batch_size=2)
        assert await learner.recover() == 3
        assert await storage.unlearned_episode_ids() == []
        assert (await storage.stats())["learned"]["patterns"] > 0
        assert await learner.recover() == 0  # nothing is learned twice
    finally:
        index.close()
        await storage.close()
