"""Episodes through the Ray service, for both placements: ordering, flushing, completion, errors."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
import ray

from episodic_memory.core.models import ExecutionStep, TaskContext, TaskOutcome
from episodic_memory.errors import EpisodeAlreadyCompleted, EpisodeNotFound, ValidationError
from episodic_memory.memory import SelfLearningMemory


def agent_steps(agent: int, count: int) -> list[ExecutionStep]:
    return [
        ExecutionStep(tool=f"tool-{i % 3}", action=f"agent {agent} step {i}", latency_ms=5.0)
        for i in range(count)
    ]


async def test_episodes_from_many_concurrent_agents_never_mix_steps(
    memory: SelfLearningMemory,
) -> None:
    async def agent(n: int) -> str:
        episode_id = await memory.start_episode(f"agent {n} refactors module {n}")
        steps = agent_steps(n, 12)
        for step in steps[:4]:  # one at a time, interleaved with the other agents
            await memory.log_step(episode_id, step)
        await memory.log_steps(episode_id, steps[4:])  # then one burst
        await memory.complete_episode(episode_id, TaskOutcome.success())
        return episode_id

    ids = await asyncio.gather(*(agent(n) for n in range(6)))
    for n, episode_id in enumerate(ids):
        episode = await memory.get_episode(episode_id)
        assert [s.action for s in episode.steps] == [f"agent {n} step {i}" for i in range(12)]
        assert [s.step_number for s in episode.steps] == list(range(1, 13))


async def test_steps_arrive_in_order_per_episode(memory: SelfLearningMemory) -> None:
    episode_id = await memory.start_episode("migrate the billing schema")
    numbers = [
        await memory.log_step(episode_id, {"tool": "sql", "action": f"m{i}"}) for i in range(5)
    ]
    numbers += await memory.log_steps(
        episode_id, [{"tool": "sql", "action": f"m{i}"} for i in range(5, 9)]
    )
    assert numbers == list(range(1, 10))
    live = await memory.get_episode(episode_id)
    assert [s.action for s in live.steps] == [f"m{i}" for i in range(9)]


async def test_a_full_buffer_is_flushed_to_storage_by_count(
    open_memory: Callable[..., Any], placement: str, durable_steps: Callable[..., Any]
) -> None:
    memory = await open_memory(placement=placement, flush_max_steps=5, flush_interval_s=3600)
    episode_id = await memory.start_episode("count flush")
    await memory.log_steps(episode_id, agent_steps(0, 4))
    assert await durable_steps(memory, episode_id) == []
    await memory.log_step(episode_id, agent_steps(0, 1)[0])
    assert await durable_steps(memory, episode_id) == [1, 2, 3, 4, 5]


async def test_buffered_steps_are_flushed_to_storage_by_time(
    open_memory: Callable[..., Any],
    placement: str,
    durable_steps: Callable[..., Any],
    poll: Callable[..., Any],
) -> None:
    memory = await open_memory(placement=placement, flush_max_steps=1000, flush_interval_s=0.2)
    episode_id = await memory.start_episode("time flush")
    await memory.log_steps(episode_id, agent_steps(0, 3))

    async def flushed() -> bool:
        return await durable_steps(memory, episode_id) == [1, 2, 3]

    await poll(flushed)


async def test_a_completed_episode_is_retrievable_when_complete_returns(
    memory: SelfLearningMemory,
) -> None:
    context = TaskContext(domain="payments", language="python")
    episode_id = await memory.start_episode("reconcile stripe payouts with the ledger", context)
    await memory.log_steps(
        episode_id,
        [
            ExecutionStep(tool="fetch_payouts", success=True),
            ExecutionStep(tool="diff_ledger", success=False, error="KeyError: currency"),
            ExecutionStep(tool="normalize_currency"),
            ExecutionStep(tool="diff_ledger"),
        ],
    )
    result = await memory.complete_episode(episode_id, TaskOutcome.success("ledger matches"))
    assert result.verdict == "success"
    assert result.steps == 4
    assert result.patterns_extracted > 0

    found = await memory.retrieve_relevant_context("reconcile stripe payouts", context, limit=3)
    assert episode_id in [e.episode_id for e in found.episodes]
    stored = await memory.get_episode(episode_id)
    assert stored.status == "completed"
    assert stored.reward == result.reward


async def test_unknown_episodes_raise_episode_not_found_through_ray(
    memory: SelfLearningMemory,
) -> None:
    with pytest.raises(EpisodeNotFound):
        await memory.log_step("no-such-episode", {"tool": "x"})
    with pytest.raises(EpisodeNotFound):
        await memory.get_episode("no-such-episode")
    with pytest.raises(EpisodeNotFound):
        await memory.complete_episode("no-such-episode", TaskOutcome.success())


async def test_completed_episodes_refuse_steps_and_other_outcomes_through_ray(
    memory: SelfLearningMemory,
) -> None:
    episode_id = await memory.start_episode("ship the release notes")
    await memory.log_step(episode_id, {"tool": "write"})
    first = await memory.complete_episode(episode_id, TaskOutcome.success("shipped"))
    with pytest.raises(EpisodeAlreadyCompleted):
        await memory.log_step(episode_id, {"tool": "late"})
    again = await memory.complete_episode(episode_id, TaskOutcome.success("shipped"))
    assert again.already_completed is True
    assert again.reward == first.reward
    with pytest.raises(EpisodeAlreadyCompleted):
        await memory.complete_episode(episode_id, TaskOutcome.failure("never mind"))


async def test_too_many_steps_for_an_episode_fail_whole_through_ray(
    memory: SelfLearningMemory,
) -> None:
    limit = memory.config.limits.max_steps_per_call
    episode_id = await memory.start_episode("bounded")
    with pytest.raises(ValidationError) as caught:
        await memory.log_steps(episode_id, [{"tool": "t"}] * (limit + 1))
    assert caught.value.field == "steps"
    assert (await memory.get_episode(episode_id)).steps == []


async def test_a_dedicated_episode_actor_is_gone_after_completion(
    open_memory: Callable[..., Any], poll: Callable[..., Any]
) -> None:
    memory = await open_memory(placement="dedicated")
    episode_id = await memory.start_episode("long refactor in its own process")
    names = memory.config.ray
    name = f"{names.memory_name}:episode:{episode_id}"
    assert ray.get_actor(name, namespace=names.namespace) is not None
    await memory.complete_episode(episode_id, TaskOutcome.success())

    async def gone() -> bool:
        try:
            ray.get_actor(name, namespace=names.namespace)
        except ValueError:
            return True
        return False

    await poll(gone)
    assert (await memory.get_episode(episode_id)).status == "completed"


async def test_a_restarted_host_adopts_its_episodes_from_storage(
    open_memory: Callable[..., Any], poll: Callable[..., Any]
) -> None:
    memory = await open_memory(flush_max_steps=2, flush_interval_s=3600)
    episode_id = await memory.start_episode("survive a host crash")
    await memory.log_steps(episode_id, agent_steps(0, 2))  # flushed by count
    names = memory.config.ray
    host = ray.get_actor(f"{names.memory_name}:host:0", namespace=names.namespace)
    ray.kill(host, no_restart=False)  # Ray restarts it (max_restarts=-1) with empty memory

    async def restarted() -> bool:
        try:  # the old instance holds the episode; a fresh one holds nothing yet
            return (await host.stats.remote())["active_episodes"] == 0
        except ray.exceptions.RayActorError:
            return False

    await poll(restarted)
    assert await memory.log_steps(episode_id, agent_steps(0, 1)) == [3]
    result = await memory.complete_episode(episode_id, TaskOutcome.success())
    assert result.steps == 3


async def test_a_dead_dedicated_actor_is_replaced_by_its_pool_host(
    open_memory: Callable[..., Any], poll: Callable[..., Any]
) -> None:
    memory = await open_memory(placement="dedicated", flush_max_steps=2, flush_interval_s=3600)
    episode_id = await memory.start_episode("heavy episode whose process dies")
    await memory.log_steps(episode_id, agent_steps(0, 2))  # durable (flushed by count)
    names = memory.config.ray
    own = ray.get_actor(f"{names.memory_name}:episode:{episode_id}", namespace=names.namespace)
    ray.kill(own, no_restart=True)

    async def continued() -> list[int] | None:
        try:
            return await memory.log_steps(episode_id, agent_steps(0, 1))
        except EpisodeNotFound:
            raise
        except Exception:
            return None

    assert await poll(continued) == [3]
    result = await memory.complete_episode(episode_id, TaskOutcome.success())
    assert result.steps == 3
