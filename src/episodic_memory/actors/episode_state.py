"""One active episode as a plain object: ``EpisodeActor`` (``EpisodeHost`` keeps many).

The design asks for "an actor per active episode". A Ray actor process per episode costs ~0.5 s
and ~47 MB each and stops scaling near 100 per node (notes/ray-measurements.md §1.4), so the
episode actor is a *logical* actor: this plain object owns one episode's state — header,
ordered step buffer, step numbering, flush timer and an ``asyncio.Lock`` that serialises its
calls like a mailbox. ``EpisodeHost`` keeps many of them in one event loop and gives them one
shared writer, so flushes and seals due at the same moment reach storage in one batched call
(``GroupCommit``). The Ray layer runs an ``EpisodeHost`` either as one of a small pool of host
actors (placement ``hosted``) or alone in its own process (``dedicated``); the in-process
backend runs one directly. Nothing here imports Ray.

Guarantees:
- Steps are numbered in arrival order; a step that carries a ``step_number`` already seen is
  dropped, and a repeated ``call_id`` returns the first call's numbers, so retries are harmless.
- Steps are sanitized on arrival: secrets never reach the buffer, let alone storage.
- A call that would exceed ``limits.max_steps_per_episode`` fails whole (nothing appended).
- Buffered steps are durable after ``flush_max_steps`` steps or ``flush_interval_s`` seconds,
  whichever comes first; ``complete`` flushes, scores, reflects and seals.
- Completing twice with the same outcome returns the first result flagged
  ``already_completed``; anything else on a completed episode raises
  ``EpisodeAlreadyCompleted``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Protocol

from episodic_memory.actors.batching import Coalescer, GroupCommit
from episodic_memory.config import FlushPolicy, InputLimits
from episodic_memory.core.base import Record, utc_now
from episodic_memory.core.learning import extract_patterns
from episodic_memory.core.models import (
    Episode,
    ExecutionStep,
    Reflection,
    RewardScore,
    TaskOutcome,
    Verdict,
)
from episodic_memory.core.reflection import reflect
from episodic_memory.core.reward import compute_reward
from episodic_memory.core.sanitize import sanitize_outcome, sanitize_step
from episodic_memory.errors import (
    EpisodeAlreadyCompleted,
    ValidationError,
)

__all__ = ["CompletionResult", "EpisodeActor", "EpisodeWriter", "EpisodeWrites", "Retired"]

log = logging.getLogger(__name__)

_REMEMBERED_CALLS = 64  # call ids kept per episode for idempotent retries
_MAX_STEPS_PER_SEND = 5_000  # steps per storage call when many episodes flush together


class Retired(Exception):
    """Internal: this actor object was deactivated; activate the episode again and retry."""


class EpisodeWriter(Protocol):
    """Where episodes go: storage (+ index and learning on seal). Batched by signature."""

    async def create_episodes(self, episodes: list[Episode]) -> None: ...

    async def append_steps(self, steps: list[tuple[str, ExecutionStep]]) -> int: ...

    async def seal_episodes(self, episodes: list[Episode]) -> None:
        """Durable, indexed and handed to learning when this returns."""
        ...

    async def get_episodes(self, episode_ids: list[str]) -> list[Episode]: ...


class CompletionResult(Record):
    """What ``complete_episode`` returns: the score, the lessons and the patterns found."""

    episode_id: str
    verdict: Verdict
    reward: RewardScore
    reflection: Reflection
    steps: int
    pattern_ids: list[str]
    already_completed: bool = False

    @property
    def patterns_extracted(self) -> int:
        return len(self.pattern_ids)

    @classmethod
    def of(cls, episode: Episode, *, already_completed: bool = False) -> CompletionResult:
        if episode.outcome is None or episode.reward is None or episode.reflection is None:
            raise ValidationError("episode", "is not completed", "complete it first")
        return cls(
            episode_id=episode.episode_id,
            verdict=episode.outcome.verdict,
            reward=episode.reward,
            reflection=episode.reflection,
            steps=len(episode.steps),
            pattern_ids=list(episode.pattern_ids),
            already_completed=already_completed,
        )


class EpisodeWrites:
    """A host's one writer, shared by all its episodes: each call kind behind a group commit."""

    def __init__(self, writer: EpisodeWriter, max_items: int) -> None:
        self.writer = writer
        self.create = GroupCommit(writer.create_episodes, max_items=max_items)
        self.append = GroupCommit(writer.append_steps, max_items=_MAX_STEPS_PER_SEND)
        self.seal = GroupCommit(writer.seal_episodes, max_items=max_items)
        self.load = Coalescer(self._load, max_items=max_items)

    async def _load(self, episode_ids: list[str]) -> list[Episode | BaseException | None]:
        found = {e.episode_id: e for e in await self.writer.get_episodes(episode_ids)}
        return [found.get(episode_id) for episode_id in episode_ids]


class EpisodeActor:
    """One episode's state; every public method is serialised by the episode's own lock."""

    def __init__(
        self, episode: Episode, writes: EpisodeWrites, flush: FlushPolicy, limits: InputLimits
    ) -> None:
        self.episode_id = episode.episode_id
        self._header = episode.model_copy(update={"steps": []})
        self._steps: list[ExecutionStep] = list(episode.steps)  # durable + buffered, in order
        self._numbers = {s.step_number for s in self._steps if s.step_number is not None}
        self._next = max(self._numbers, default=0) + 1
        self._buffer: list[ExecutionStep] = []
        self._writes = writes
        self._flush = flush
        self._limits = limits
        self._lock = asyncio.Lock()
        self._calls: OrderedDict[str, list[int]] = OrderedDict()
        self._sealed: Episode | None = episode if episode.status == "completed" else None
        self._timer: asyncio.TimerHandle | None = None
        self._timed_flush: asyncio.Task[None] | None = None
        self.flushes = 0
        self.touched = time.monotonic()  # last call, for idle deactivation
        self.retired = False  # deactivated by its host; callers must activate it afresh

    @property
    def completed(self) -> bool:
        return self._sealed is not None

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def snapshot(self) -> Episode:
        """The episode as it stands, buffered steps included."""
        self.touched = time.monotonic()
        if self._sealed is not None:
            return self._sealed
        return self._header.model_copy(update={"steps": list(self._steps)})

    async def log_steps(
        self, steps: Sequence[ExecutionStep], call_id: str | None = None
    ) -> list[int]:
        """Append steps in arrival order; return their step numbers."""
        async with self._lock:
            self._check_live()
            if self._sealed is not None:
                raise EpisodeAlreadyCompleted(self.episode_id, "start a new episode to log steps")
            if call_id is not None and call_id in self._calls:
                return list(self._calls[call_id])
            fresh, numbers = self._number(steps)
            self._steps.extend(fresh)
            self._buffer.extend(fresh)
            self._numbers.update(numbers)
            if call_id is not None:
                self._calls[call_id] = numbers
                while len(self._calls) > _REMEMBERED_CALLS:
                    self._calls.popitem(last=False)
            if len(self._buffer) >= self._flush.flush_max_steps:
                await self._flush_locked()
            elif self._buffer and self._timer is None:
                loop = asyncio.get_running_loop()
                self._timer = loop.call_later(self._flush.flush_interval_s, self._on_timer)
            return numbers

    def _number(self, steps: Sequence[ExecutionStep]) -> tuple[list[ExecutionStep], list[int]]:
        """Number and sanitize a call's steps without touching state (all or nothing)."""
        limit = self._limits.max_steps_per_episode
        if len(steps) > self._limits.max_steps_per_call:
            raise ValidationError(
                "steps",
                f"{len(steps)} steps in one call",
                f"send at most {self._limits.max_steps_per_call} per call",
            )
        fresh: list[ExecutionStep] = []
        numbers: list[int] = []
        taken: set[int] = set()
        next_number = self._next
        for step in steps:
            number = step.step_number
            if number is not None and (number in self._numbers or number in taken):
                numbers.append(number)  # a retry of a step we already hold: drop it
                continue
            if number is None:
                number = next_number
            next_number = max(next_number, number + 1)
            taken.add(number)
            numbers.append(number)
            fresh.append(step.model_copy(update={"step_number": number}))
        if len(self._steps) + len(fresh) > limit:
            raise ValidationError(
                "steps",
                f"the episode would hold {len(self._steps) + len(fresh)} steps; "
                f"max_steps_per_episode is {limit}",
                "complete this episode and continue in a new one",
            )
        if next_number - 1 > limit:
            raise ValidationError(
                "steps.step_number",
                f"step {next_number - 1} is beyond max_steps_per_episode={limit}",
                "number steps from 1 without large gaps",
            )
        self._next = next_number
        return [sanitize_step(s) for s in fresh], numbers

    async def flush(self) -> int:
        """Make buffered steps durable now; return how many were written."""
        async with self._lock:
            if self.retired:
                return 0  # it flushed when it retired
            return await self._flush_locked()

    async def _flush_locked(self) -> int:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._buffer:
            return 0
        batch, self._buffer = self._buffer, []
        try:
            await self._writes.append.submit([(self.episode_id, s) for s in batch])
        except BaseException:
            self._buffer = batch + self._buffer  # keep them; the timer retries
            if self._timer is None and self._sealed is None:
                loop = asyncio.get_running_loop()
                self._timer = loop.call_later(self._flush.flush_interval_s, self._on_timer)
            raise
        self.flushes += 1
        return len(batch)

    def _on_timer(self) -> None:
        self._timer = None
        self._timed_flush = asyncio.get_running_loop().create_task(self._flush_quietly())

    async def _flush_quietly(self) -> None:
        try:
            await self.flush()
        except Exception:
            log.warning(
                "timed flush of episode %s failed; will retry", self.episode_id, exc_info=True
            )

    async def complete(self, outcome: TaskOutcome) -> CompletionResult:
        """Final flush, reward, reflection, patterns found, seal. Idempotent per outcome."""
        async with self._lock:
            self._check_live()
            clean = sanitize_outcome(outcome)
            if self._sealed is not None:
                if self._sealed.outcome == clean:
                    return CompletionResult.of(self._sealed, already_completed=True)
                raise EpisodeAlreadyCompleted(
                    self.episode_id,
                    f"it ended with verdict {self._sealed.verdict!r}; a different outcome "
                    "cannot replace it",
                )
            await self._flush_locked()
            episode = self._header.model_copy(
                update={
                    "steps": list(self._steps),
                    "outcome": clean,
                    "status": "completed",
                    "completed_at": utc_now(),
                }
            )
            reward = compute_reward(episode)
            found = extract_patterns(episode)
            episode = episode.model_copy(
                update={
                    "reward": reward,
                    "reflection": reflect(episode, reward),
                    "pattern_ids": list(dict.fromkeys(p.pattern_id for p in found)),
                }
            )
            await self._writes.seal.submit([episode])
            self._sealed = episode
            self._calls.clear()
            return CompletionResult.of(episode)

    def _check_live(self) -> None:
        if self.retired:
            raise Retired(self.episode_id)
        self.touched = time.monotonic()

    async def retire(self, idle_since: float) -> bool:
        """Flush and stop, if nothing touched the episode since ``idle_since`` (monotonic).

        Its host then forgets it; the next call activates it again from storage, where every
        step now is. Calls already waiting on this actor get ``Retired`` and go round again.
        """
        async with self._lock:
            if self.touched > idle_since or self._sealed is not None:
                return False
            await self._flush_locked()
            self.cancel_timer()
            self.retired = True
            return True

    def cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
