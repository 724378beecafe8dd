"""The memory's edge promises: strict durability per call, and rate limits per agent.

In-process backend (no Ray): the same ``SelfLearningMemory`` code paths, fast. The Ray backend
runs ``durability="strict"`` in test_kill_actors.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fault_helpers import config, count, durable_steps, step

from episodic_memory.config import RateLimitConfig
from episodic_memory.core.models import TaskContext, TaskOutcome
from episodic_memory.errors import RateLimitExceeded, ValidationError
from episodic_memory.memory import SelfLearningMemory

pytestmark = pytest.mark.slow


async def test_a_strict_step_is_in_libsql_when_log_step_returns(tmp_path: Path) -> None:
    # A flush interval far longer than the test: only "strict" can make the step durable.
    memory = await SelfLearningMemory.open(
        config(tmp_path, flush_interval_s=3600.0), backend="in_process"
    )
    try:
        eid = await memory.start_episode("strictly durable steps", TaskContext(domain="ops"))
        await memory.log_steps(eid, [step(1), step(2)])
        assert durable_steps(tmp_path, eid) == []  # buffered: in the episode actor only
        number = await memory.log_step(eid, step(3), durability="strict")
        assert number == 3
        assert durable_steps(tmp_path, eid) == [1, 2, 3]
    finally:
        await memory.close()


async def test_an_unknown_durability_is_refused_naming_the_field(tmp_path: Path) -> None:
    memory = await SelfLearningMemory.open(config(tmp_path), backend="in_process")
    try:
        eid = await memory.start_episode("durability typo")
        with pytest.raises(ValidationError) as refused:
            await memory.log_step(eid, step(1), durability="fsync")  # type: ignore[arg-type]
        assert refused.value.field == "durability"
        await memory.settle()
        assert durable_steps(tmp_path, eid) == []
    finally:
        await memory.close()


async def test_the_rate_limit_refuses_an_agent_over_budget_and_writes_nothing(
    tmp_path: Path,
) -> None:
    limits = RateLimitConfig(
        enabled=True, episodes_per_s=0.001, episodes_burst=2, steps_per_s=0.001, steps_burst=5
    )
    opened = config(tmp_path, rate_limit=limits)
    memory = await SelfLearningMemory.open(opened, backend="in_process")
    try:
        first = await memory.start_episode("one", agent_id="agent-a")
        await memory.start_episode("two", agent_id="agent-a")
        with pytest.raises(RateLimitExceeded) as refused:
            await memory.start_episode("three", agent_id="agent-a")
        assert refused.value.key == "agent-a"
        assert refused.value.retry_after_s > 0
        other = await memory.start_episode("another agent's", agent_id="agent-b")

        await memory.log_steps(first, [step(i) for i in range(4)])
        with pytest.raises(RateLimitExceeded) as over:
            await memory.log_steps(first, [step(9), step(10)])  # charged to agent-a
        assert over.value.what == "steps"
        await memory.log_steps(other, [step(1), step(2)])  # agent-b's own steps budget
        await memory.complete_episode(first, TaskOutcome.success("done"))
        await memory.settle()

        assert count(tmp_path, "episodes") == 3
        assert durable_steps(tmp_path, first) == [1, 2, 3, 4]
        stats = await memory.stats()
        assert stats["rate_limit"]["rejected_episodes"] == 1
        assert stats["rate_limit"]["rejected_steps"] == 1
    finally:
        await memory.close()
