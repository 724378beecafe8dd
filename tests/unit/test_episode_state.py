"""Episode actors and their host as plain objects: numbering, bounds, flushing, completion."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from episodic_memory.actors.batching import Coalescer
from episodic_memory.actors.episode_host import EpisodeHost
from episodic_memory.config import DEFAULT_LIMITS, FlushPolicy, InputLimits
from episodic_memory.core.models import Episode, ExecutionStep, TaskContext, TaskOutcome
from episodic_memory.errors import (
    EpisodeAlreadyCompleted,
    EpisodeNotFound,
    StorageError,
    ValidationError,
)


class RecordingWriter:
    """An in-memory store that records every call, so tests can count batches."""

    def __init__(self) -> None:
        self.headers: dict[str, Episode] = {}
        self.steps: dict[str, dict[int, ExecutionStep]] = {}
        self.sealed: dict[str, Episode] = {}
        self.append_calls: list[int] = []
        self.seal_calls: list[int] = []
        self.fail_appends = 0

    async def create_episodes(self, episodes: list[Episode]) -> None:
        for episode in episodes:
            self.headers[episode.episode_id] = episode
            self.steps.setdefault(episode.episode_id, {})

    async def append_steps(self, steps: list[tuple[str, ExecutionStep]]) -> int:
        if self.fail_appends:
            self.fail_appends -= 1
            raise StorageError("disk on fire")
        self.append_calls.append(len(steps))
        new = 0
        for episode_id, step in steps:
            assert step.step_number is not None
            rows = self.steps[episode_id]
            if step.step_number not in rows:
                rows[step.step_number] = step
                new += 1
        return new

    async def seal_episodes(self, episodes: list[Episode]) -> None:
        self.seal_calls.append(len(episodes))
        for episode in episodes:
            self.sealed[episode.episode_id] = episode

    async def get_episodes(self, episode_ids: list[str]) -> list[Episode]:
        found = []
        for episode_id in episode_ids:
            if episode_id in self.sealed:
                found.append(self.sealed[episode_id])
            elif episode_id in self.headers:
                rows = self.steps[episode_id]
                steps = [rows[n] for n in sorted(rows)]
                found.append(self.headers[episode_id].model_copy(update={"steps": steps}))
        return found

    def durable(self, episode_id: str) -> list[int]:
        return sorted(self.steps.get(episode_id, {}))


def make_host(
    writer: RecordingWriter,
    *,
    max_steps: int = 1000,
    interval_s: float = 60.0,
    limits: InputLimits = DEFAULT_LIMITS,
) -> EpisodeHost:
    policy = FlushPolicy(flush_max_steps=max_steps, flush_interval_s=interval_s)
    return EpisodeHost(writer, flush=policy, limits=limits)


def header(description: str = "fix the flaky login test", domain: str = "web") -> Episode:
    return Episode(task_description=description, context=TaskContext(domain=domain))


def step(tool: str = "pytest", number: int | None = None, **fields: object) -> ExecutionStep:
    return ExecutionStep(tool=tool, step_number=number, **fields)  # type: ignore[arg-type]


async def wait_until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Bounded polling: yield to the loop until the condition holds or the bound passes."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_steps_are_numbered_in_arrival_order() -> None:
    writer = RecordingWriter()
    host = make_host(writer)
    episode = header()
    await host.start(episode)
    assert await host.log_steps(episode.episode_id, [step("a"), step("b")]) == [1, 2]
    assert await host.log_steps(episode.episode_id, [step("c")]) == [3]
    snapshot = await host.get(episode.episode_id)
    assert [s.tool for s in snapshot.steps] == ["a", "b", "c"]
    assert [s.step_number for s in snapshot.steps] == [1, 2, 3]


async def test_the_header_is_durable_when_start_returns() -> None:
    writer = RecordingWriter()
    host = make_host(writer)
    episode = header()
    await host.start(episode)
    assert episode.episode_id in writer.headers


async def test_a_retried_call_with_the_same_call_id_appends_nothing() -> None:
    host = make_host(RecordingWriter())
    episode = header()
    await host.start(episode)
    first = await host.log_steps(episode.episode_id, [step("a"), step("b")], call_id="c1")
    again = await host.log_steps(episode.episode_id, [step("a"), step("b")], call_id="c1")
    assert first == again == [1, 2]
    assert len((await host.get(episode.episode_id)).steps) == 2


async def test_a_step_whose_number_is_already_held_is_dropped() -> None:
    host = make_host(RecordingWriter())
    episode = header()
    await host.start(episode)
    await host.log_steps(episode.episode_id, [step("a", 1), step("b", 2)])
    assert await host.log_steps(episode.episode_id, [step("b", 2), step("c")]) == [2, 3]
    tools = [s.tool for s in (await host.get(episode.episode_id)).steps]
    assert tools == ["a", "b", "c"]


async def test_secrets_in_steps_are_redacted_before_they_reach_storage() -> None:
    writer = RecordingWriter()
    host = make_host(writer, max_steps=1)
    episode = header()
    await host.start(episode)
    secret = "sk-" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6"
    await host.log_steps(episode.episode_id, [step("http", observation=f"key={secret}")])
    stored = writer.steps[episode.episode_id][1]
    assert secret not in stored.observation
    assert "[REDACTED" in stored.observation


async def test_a_call_that_would_exceed_the_episode_limit_appends_nothing() -> None:
    limits = InputLimits(max_steps_per_episode=3)
    host = make_host(RecordingWriter(), limits=limits)
    episode = header()
    await host.start(episode)
    await host.log_steps(episode.episode_id, [step("a"), step("b")])
    with pytest.raises(ValidationError) as caught:
        await host.log_steps(episode.episode_id, [step("c"), step("d")])
    assert caught.value.field == "steps"
    assert len((await host.get(episode.episode_id)).steps) == 2
    assert await host.log_steps(episode.episode_id, [step("c")]) == [3]


async def test_the_buffer_flushes_when_it_reaches_flush_max_steps() -> None:
    writer = RecordingWriter()
    host = make_host(writer, max_steps=3)
    episode = header()
    await host.start(episode)
    await host.log_steps(episode.episode_id, [step("a"), step("b")])
    assert writer.durable(episode.episode_id) == []
    await host.log_steps(episode.episode_id, [step("c")])
    assert writer.durable(episode.episode_id) == [1, 2, 3]


async def test_the_buffer_flushes_after_flush_interval_s() -> None:
    writer = RecordingWriter()
    host = make_host(writer, interval_s=0.05)
    episode = header()
    await host.start(episode)
    await host.log_steps(episode.episode_id, [step("a")])
    await wait_until(lambda: writer.durable(episode.episode_id) == [1])


async def test_timed_flushes_of_many_episodes_go_to_storage_in_one_call() -> None:
    writer = RecordingWriter()
    host = make_host(writer, interval_s=0.05)
    episodes = [header(f"task {i}") for i in range(20)]
    for episode in episodes:
        await host.start(episode)
    # Log to all of them within one loop turn so their timers come due together.
    await asyncio.gather(*(host.log_steps(e.episode_id, [step("a")]) for e in episodes))
    await wait_until(lambda: sum(writer.append_calls) == 20)
    assert len(writer.append_calls) < 20
    assert all(writer.durable(e.episode_id) == [1] for e in episodes)


async def test_a_failed_flush_keeps_the_steps_and_a_later_flush_writes_them() -> None:
    writer = RecordingWriter()
    host = make_host(writer, interval_s=0.05)
    episode = header()
    await host.start(episode)
    writer.fail_appends = 1
    await host.log_steps(episode.episode_id, [step("a"), step("b")])
    await wait_until(lambda: writer.durable(episode.episode_id) == [1, 2])


async def test_complete_flushes_scores_reflects_and_seals() -> None:
    writer = RecordingWriter()
    host = make_host(writer)
    episode = header()
    await host.start(episode)
    await host.log_steps(
        episode.episode_id,
        [step("read_file"), step("pytest", success=False, error="AssertionError"), step("edit")],
    )
    result = await host.complete(episode.episode_id, TaskOutcome.success("tests green"))
    assert result.verdict == "success"
    assert result.steps == 3
    assert result.already_completed is False
    assert 0.0 < result.reward.total <= 1.0
    assert result.patterns_extracted == len(result.pattern_ids) > 0
    assert writer.durable(episode.episode_id) == [1, 2, 3]
    sealed = writer.sealed[episode.episode_id]
    assert sealed.status == "completed"
    assert sealed.reward == result.reward
    assert sealed.reflection == result.reflection


async def test_completing_twice_with_the_same_outcome_is_idempotent_and_says_so() -> None:
    writer = RecordingWriter()
    host = make_host(writer)
    episode = header()
    await host.start(episode)
    first = await host.complete(episode.episode_id, TaskOutcome.success("done"))
    again = await host.complete(episode.episode_id, TaskOutcome.success("done"))
    assert again.already_completed is True
    assert again.reward == first.reward
    assert writer.seal_calls == [1]


async def test_completing_with_a_different_outcome_raises() -> None:
    host = make_host(RecordingWriter())
    episode = header()
    await host.start(episode)
    await host.complete(episode.episode_id, TaskOutcome.success("done"))
    with pytest.raises(EpisodeAlreadyCompleted):
        await host.complete(episode.episode_id, TaskOutcome.failure("it broke"))


async def test_steps_after_completion_raise_and_the_host_releases_the_episode() -> None:
    host = make_host(RecordingWriter())
    episode = header()
    await host.start(episode)
    await host.complete(episode.episode_id, TaskOutcome.success())
    assert not host.holds(episode.episode_id)
    with pytest.raises(EpisodeAlreadyCompleted):
        await host.log_steps(episode.episode_id, [step("late")])
    assert (await host.get(episode.episode_id)).status == "completed"


async def test_an_unknown_episode_raises_episode_not_found() -> None:
    host = make_host(RecordingWriter())
    with pytest.raises(EpisodeNotFound):
        await host.log_steps("no-such-episode", [step()])
    with pytest.raises(EpisodeNotFound):
        await host.get("no-such-episode")


async def test_a_new_host_adopts_an_active_episode_with_its_durable_steps() -> None:
    writer = RecordingWriter()
    first = make_host(writer, max_steps=2)
    episode = header()
    await first.start(episode)
    await first.log_steps(episode.episode_id, [step("a"), step("b")])
    restarted = make_host(writer, max_steps=2)  # the old host died with its memory
    assert await restarted.log_steps(episode.episode_id, [step("c")]) == [3]
    result = await restarted.complete(episode.episode_id, TaskOutcome.success())
    assert result.steps == 3


async def test_concurrent_calls_on_one_episode_keep_every_step_exactly_once() -> None:
    writer = RecordingWriter()
    host = make_host(writer, max_steps=7)
    episode = header()
    await host.start(episode)
    calls = [host.log_steps(episode.episode_id, [step(f"t{i}"), step(f"u{i}")]) for i in range(25)]
    numbers = [n for batch in await asyncio.gather(*calls) for n in batch]
    assert sorted(numbers) == list(range(1, 51))
    await host.complete(episode.episode_id, TaskOutcome.success())
    assert writer.durable(episode.episode_id) == list(range(1, 51))


async def test_log_many_answers_each_call_on_its_own_and_keeps_per_episode_order() -> None:
    host = make_host(RecordingWriter())
    episode = header()
    await host.start(episode)
    eid = episode.episode_id
    results = await host.log_many(
        [(eid, [step("a")], None), ("missing", [step("x")], None), (eid, [step("b")], None)]
    )
    assert results[0] == [1]
    assert isinstance(results[1], EpisodeNotFound)
    assert results[2] == [2]


async def test_concurrent_submissions_share_one_send_and_get_their_own_answers() -> None:
    sends: list[list[int]] = []

    async def send(items: list[int]) -> list[int | BaseException]:
        sends.append(items)
        return [ValueError(str(i)) if i < 0 else i * 10 for i in items]

    coalescer: Coalescer[int, int] = Coalescer(send, max_items=100)
    answers = await asyncio.gather(
        *(coalescer.submit(i) for i in (1, 2, -3, 4)), return_exceptions=True
    )
    assert answers[:2] == [10, 20]
    assert isinstance(answers[2], ValueError)
    assert answers[3] == 40
    assert sends == [[1, 2, -3, 4]]


async def test_an_episode_stored_by_a_client_is_activated_once_on_first_touch() -> None:
    writer = RecordingWriter()
    episode = header()
    await writer.create_episodes([episode])  # a client wrote the header; no host.start
    reads: list[list[str]] = []
    original = writer.get_episodes

    async def counting(episode_ids: list[str]) -> list[Episode]:
        reads.append(episode_ids)
        return await original(episode_ids)

    writer.get_episodes = counting  # type: ignore[method-assign]
    host = make_host(writer)
    calls = [host.log_steps(episode.episode_id, [step(f"t{i}")]) for i in range(10)]
    numbers = sorted(n for batch in await asyncio.gather(*calls) for n in batch)
    assert numbers == list(range(1, 11))
    assert reads == [[episode.episode_id]]
    assert host.holds(episode.episode_id)


async def test_an_idle_episode_is_deactivated_and_a_waiting_call_reaches_its_next_activation() -> (
    None
):
    writer = RecordingWriter()
    host = make_host(writer)
    episode = header()
    await host.start(episode)
    await host.log_steps(episode.episode_id, [step("a"), step("b")])  # buffered only
    released, numbers = await asyncio.gather(
        host.deactivate_idle(0.0), host.log_steps(episode.episode_id, [step("c")])
    )
    assert released == 1
    assert numbers == [3]  # numbered after the steps the deactivation made durable
    assert writer.durable(episode.episode_id) == [1, 2]
    assert host.holds(episode.episode_id)  # activated again by the waiting call
    result = await host.complete(episode.episode_id, TaskOutcome.success())
    assert result.steps == 3
    assert writer.durable(episode.episode_id) == [1, 2, 3]


async def test_a_recently_touched_episode_is_not_deactivated() -> None:
    host = make_host(RecordingWriter())
    busy = header("busy")
    await host.start(busy)
    await host.log_steps(busy.episode_id, [step("a")])
    assert await host.deactivate_idle(3600.0) == 0
    assert host.holds(busy.episode_id)
