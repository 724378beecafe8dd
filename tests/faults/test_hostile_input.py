"""Hostile input through the public API of a running memory: typed errors, nothing partial.

Hypothesis drives random and hostile values (wrong types, huge strings, NaN/inf, negative
numbers, control characters, lone surrogates, deep nesting, unknown ids) into every argument
of the blocking API (``SyncMemory``: the async API's own code on a private loop). Each call
either succeeds (the value happened to be valid) or raises one of our typed errors naming the
argument; after a rejected call the stored and buffered counts are unchanged; afterwards a
normal episode still works. The in-process backend takes the volume, the Ray backend a
smaller run. Each test prints how many cases ran and how many were refused.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fault_helpers import config, step
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from episodic_memory.core.models import TaskOutcome
from episodic_memory.errors import (
    EpisodeAlreadyCompleted,
    EpisodeNotFound,
    EpisodicMemoryError,
    ValidationError,
)
from episodic_memory.memory import SelfLearningMemory
from episodic_memory.memory_sync import SyncMemory

pytestmark = pytest.mark.slow

NASTY_TEXT = st.text(
    alphabet=st.one_of(
        st.characters(codec="utf-8"),
        st.sampled_from(["\x00", "\x07", "\x1b", "\ud800", "\udfff", "\u202e", "\ufeff"]),
    ),
    max_size=50,
)
HUGE = st.sampled_from(["x" * 300_000, "é" * 120_000, "\x00" * 50_000])
NUMBERS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
)
LEAVES = st.one_of(st.none(), st.booleans(), NUMBERS, NASTY_TEXT, st.binary(max_size=8))
NESTED = st.recursive(
    LEAVES,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(NASTY_TEXT, inner, max_size=3)
    ),
    max_leaves=30,
)


def deep(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(levels):
        value = {"n": value}
    return value


HOSTILE = st.one_of(LEAVES, HUGE, NESTED, st.builds(deep, st.integers(15, 40)), st.just(object()))
STEP_FIELDS = ["tool", "action", "latency_ms", "tokens", "success", "observation", "error"]
STEP_FIELDS += ["parameters", "step_number", "timestamp", "unknown_field"]
OUTCOME_FIELDS = ["verdict", "summary", "reason", "artifacts", "metadata", "error_count"]
CONTEXT_FIELDS = ["language", "domain", "tags", "framework", "task_type", "extra"]


@pytest.fixture
def sync_memory(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[SyncMemory]:
    backend = getattr(request, "param", "in_process")
    if backend == "ray":
        request.getfixturevalue("ray_session")
    memory = SelfLearningMemory.open_sync(config(tmp_path), backend=backend)
    try:
        yield memory
    finally:
        memory.close(stop_service=True)


def footprint(memory: SyncMemory, episode_id: str) -> tuple[int, int, int]:
    """Stored episodes, and the target's steps (buffered + durable: a timed flush moves steps
    from one to the other, so the durable count alone is not a footprint)."""
    tables = memory.stats()["storage"]["tables"]
    target = memory.get_episode(episode_id)
    return tables["episodes"], len(target.steps), int(target.status == "completed")


Call = Callable[[SyncMemory, Any], Any]


def _in(make: Callable[[Any], Any]) -> Call:
    return lambda _m, v: make(v)


def calls(m: SyncMemory, eid: str) -> list[tuple[str, Call]]:
    """(argument the error must name, call with the hostile value)."""
    made: list[tuple[str, Call]] = [
        ("description", _in(lambda v: m.start_episode(v))),
        ("context", _in(lambda v: m.start_episode("ok", v))),
        ("agent_id", _in(lambda v: m.start_episode("ok", agent_id=v))),
        ("episode_id", _in(lambda v: m.log_steps(v, [step(1)]))),
        ("steps", _in(lambda v: m.log_steps(eid, v))),
        ("outcome", _in(lambda v: m.complete_episode(eid, v))),
        ("description", _in(lambda v: m.retrieve_relevant_context(v))),
        ("limit", _in(lambda v: m.retrieve_relevant_context("fix it", None, v))),
        ("episode_id", _in(lambda v: m.get_episode(v))),
    ]
    for f in CONTEXT_FIELDS:
        made.append(("context", _in(lambda v, f=f: m.start_episode("ok", {f: v}))))
    for f in STEP_FIELDS:
        made.append(("steps", _in(lambda v, f=f: m.log_steps(eid, [{"tool": "t", f: v}]))))
    base = {"verdict": "failure", "reason": "hostile"}
    for f in OUTCOME_FIELDS:
        made.append(("outcome", _in(lambda v, f=f: m.complete_episode(eid, {**base, f: v}))))
    return made


def attempt(call: Call, memory: SyncMemory, value: Any) -> BaseException | None:
    try:
        call(memory, value)
    except EpisodicMemoryError as exc:
        return exc
    return None


def hammer(memory: SyncMemory, max_examples: int) -> Counter[str]:
    eid = memory.start_episode("the target episode")
    memory.log_steps(eid, [step(1), step(2)])
    targets = calls(memory, eid)
    seen: Counter[str] = Counter()

    @settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.sampled_from(range(len(targets))), HOSTILE)
    def one(which: int, value: Any) -> None:
        field, call = targets[which]
        before = footprint(memory, eid)
        error = attempt(call, memory, value)
        seen["cases"] += 1
        if error is None:
            seen["accepted"] += 1
        elif isinstance(error, ValidationError):
            seen["validation_error"] += 1
            assert error.field.split(".")[0] == field, (field, error.field)
            assert footprint(memory, eid) == before, f"partial write after refusing {field}"
        elif isinstance(error, EpisodeNotFound | EpisodeAlreadyCompleted):
            seen["not_found_or_completed"] += 1
            assert footprint(memory, eid)[1:] == before[1:]  # unknown ids: headers may exist
        else:
            pytest.fail(f"{field}={value!r:.80} raised {type(error).__name__}: {error}")

    one()
    # The service is still up: a normal episode works end to end.
    after = memory.start_episode("a normal episode after the storm")
    memory.log_steps(after, [step(1), step(2)], durability="strict")
    assert memory.complete_episode(after, TaskOutcome.success("fine")).steps == 2
    return seen


def test_hostile_values_in_process_get_typed_errors_and_write_nothing(
    sync_memory: SyncMemory,
) -> None:
    seen = hammer(sync_memory, max_examples=1500)
    print(f"\nhostile input, in_process: {dict(seen)}")
    assert seen["validation_error"] > seen["cases"] // 3


@pytest.mark.ray
@pytest.mark.parametrize("sync_memory", ["ray"], indirect=True)
def test_hostile_values_through_ray_get_typed_errors_and_write_nothing(
    sync_memory: SyncMemory,
) -> None:
    seen = hammer(sync_memory, max_examples=150)
    print(f"\nhostile input, ray: {dict(seen)}")
    assert seen["validation_error"] > seen["cases"] // 3


def test_steps_after_completion_and_unknown_ids_are_refused_without_writes(
    sync_memory: SyncMemory,
) -> None:
    eid = sync_memory.start_episode("complete me once")
    sync_memory.log_steps(eid, [step(1)])
    sync_memory.complete_episode(eid, TaskOutcome.success("done"))
    before = footprint(sync_memory, eid)
    with pytest.raises(EpisodeAlreadyCompleted):
        sync_memory.log_steps(eid, [step(2)])
    with pytest.raises(EpisodeNotFound):
        sync_memory.log_steps("no-such-episode", [step(1)])
    with pytest.raises(EpisodeNotFound):
        sync_memory.complete_episode("no-such-episode", TaskOutcome.success())
    assert footprint(sync_memory, eid) == before


@pytest.mark.parametrize("backend", ["in_process", pytest.param("ray", marks=pytest.mark.ray)])
async def test_ten_concurrent_completes_of_one_episode_have_exactly_one_winner(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    if backend == "ray":
        request.getfixturevalue("ray_session")
    memory = await SelfLearningMemory.open(config(tmp_path), backend=backend)  # type: ignore[arg-type]
    try:
        same = await memory.start_episode("complete me ten times at once")
        await memory.log_steps(same, [step(1), step(2)])
        results = await asyncio.gather(
            *(memory.complete_episode(same, TaskOutcome.success("done")) for _ in range(10))
        )
        assert sorted(r.already_completed for r in results) == [False] + [True] * 9
        assert all(r.reward == results[0].reward for r in results)

        mixed = await memory.start_episode("complete me with ten different outcomes")
        answers = await asyncio.gather(
            *(memory.complete_episode(mixed, TaskOutcome.failure(f"try {i}")) for i in range(10)),
            return_exceptions=True,
        )
        winners = [a for a in answers if not isinstance(a, BaseException)]
        assert len(winners) == 1
        assert all(isinstance(a, EpisodeAlreadyCompleted) for a in answers if a not in winners)
        stored = await memory.get_episode(mixed)
        assert stored.status == "completed"
        assert (await memory.stats())["storage"]["tables"]["episodes"] == 2
    finally:
        await memory.close(stop_service=True)
