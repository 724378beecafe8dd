"""EpisodeHost: many episode actors in one event loop, sharing one batched writer.

Runs as a Ray actor (a pool member for placement ``hosted``, or alone in its own process for
``dedicated``: ``actors/episode.py``) or directly in the in-process backend. No Ray here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from episodic_memory.actors.episode_state import (
    CompletionResult,
    EpisodeActor,
    EpisodeWriter,
    EpisodeWrites,
    Retired,
)
from episodic_memory.config import FlushPolicy, InputLimits
from episodic_memory.core.models import Episode, ExecutionStep, TaskOutcome
from episodic_memory.errors import EpisodeNotFound, EpisodicMemoryError

__all__ = ["EpisodeHost"]

log = logging.getLogger(__name__)


class EpisodeHost:
    """Many episode actors in one event loop, sharing one batched writer.

    An episode it does not hold is activated from storage on first touch: an active one (just
    started by a client that wrote its header, or its host restarted, or its dedicated actor
    died) comes back with its durable steps; a completed one answers ``get``/``complete`` from
    the stored record and refuses new steps; an unknown one raises ``EpisodeNotFound``.
    """

    def __init__(
        self,
        writer: EpisodeWriter,
        *,
        flush: FlushPolicy,
        limits: InputLimits,
        write_batch_size: int = 500,
    ) -> None:
        self._writes = EpisodeWrites(writer, write_batch_size)
        self._flush = flush
        self._limits = limits
        self._episodes: dict[str, EpisodeActor] = {}
        self._activating: dict[str, asyncio.Future[EpisodeActor]] = {}
        self.started = 0
        self.completed = 0

    async def start(self, header: Episode) -> None:
        """Make the header durable, then hold the episode. Safe to retry."""
        if header.episode_id in self._episodes:
            return
        await self._writes.create.submit([header])
        self._episodes.setdefault(
            header.episode_id, EpisodeActor(header, self._writes, self._flush, self._limits)
        )
        self.started += 1

    async def log_steps(
        self, episode_id: str, steps: Sequence[ExecutionStep], call_id: str | None = None
    ) -> list[int]:
        while True:
            actor = await self._resolve(episode_id)
            try:
                return await actor.log_steps(steps, call_id)
            except Retired:
                continue  # deactivated while this call waited: activate it afresh

    async def log_many(
        self, calls: Sequence[tuple[str, Sequence[ExecutionStep], str | None]]
    ) -> list[list[int] | EpisodicMemoryError]:
        """Several clients' ``log_steps`` calls in one: each succeeds or fails on its own.

        Calls on one episode keep their order (each waits on that episode's lock in turn).
        """

        async def one(call: tuple[str, Sequence[ExecutionStep], str | None]) -> Any:
            try:
                return await self.log_steps(*call)
            except EpisodicMemoryError as exc:
                return exc

        return list(await asyncio.gather(*(one(call) for call in calls)))

    async def complete(self, episode_id: str, outcome: TaskOutcome) -> CompletionResult:
        while True:
            actor = await self._resolve(episode_id)
            try:
                result = await actor.complete(outcome)
                break
            except Retired:
                continue
        if self._episodes.pop(episode_id, None) is not None:
            actor.cancel_timer()
            self.completed += 1
        return result

    async def get(self, episode_id: str) -> Episode:
        return (await self._resolve(episode_id)).snapshot()

    async def flush(self) -> int:
        """Flush every held episode now (shutdown, tests, ``sync_memories``)."""
        counts = await asyncio.gather(*(a.flush() for a in list(self._episodes.values())))
        return sum(counts)

    async def close(self) -> int:
        written = await self.flush()
        for actor in self._episodes.values():
            actor.cancel_timer()
        return written

    async def deactivate_idle(self, max_idle_s: float) -> int:
        """Flush and forget episodes untouched for ``max_idle_s``; return how many.

        Agents that die mid-episode would otherwise pin their steps in memory forever. A
        deactivated episode loses nothing: the next call activates it again from storage.
        """
        idle_since = time.monotonic() - max_idle_s
        idle = [(i, a) for i, a in self._episodes.items() if a.touched <= idle_since]
        released = 0
        for episode_id, actor in idle:
            try:
                retired = await actor.retire(idle_since)
            except EpisodicMemoryError:
                log.warning("could not deactivate episode %s; keeping it", episode_id)
                continue
            if retired and self._episodes.get(episode_id) is actor:
                del self._episodes[episode_id]
                released += 1
        return released

    def holds(self, episode_id: str) -> bool:
        return episode_id in self._episodes

    def stats(self) -> dict[str, int]:
        return {
            "active_episodes": len(self._episodes),
            "buffered_steps": sum(a.buffered for a in self._episodes.values()),
            "episodes_started": self.started,
            "episodes_completed": self.completed,
            "step_sends": self._writes.append.sends,
            "steps_sent": self._writes.append.items,
            "seal_sends": self._writes.seal.sends,
        }

    async def _resolve(self, episode_id: str) -> EpisodeActor:
        """The episode's actor, activated from storage on first touch (a virtual actor).

        Concurrent first touches of one episode share one activation; activations of many
        episodes at once share one storage read.
        """
        actor = self._episodes.get(episode_id)
        if actor is not None:
            return actor
        activation = self._activating.get(episode_id)
        if activation is None:
            activation = asyncio.ensure_future(self._activate(episode_id))
            self._activating[episode_id] = activation
            activation.add_done_callback(lambda _: self._activating.pop(episode_id, None))
        return await asyncio.shield(activation)

    async def _activate(self, episode_id: str) -> EpisodeActor:
        found = await self._writes.load.submit(episode_id)
        if found is None:
            raise EpisodeNotFound(episode_id)
        actor = self._episodes.get(episode_id)  # started meanwhile
        if actor is None:
            actor = EpisodeActor(found, self._writes, self._flush, self._limits)
            if not actor.completed:
                self._episodes[episode_id] = actor
                if not found.steps:  # a fresh episode, not one adopted after a restart
                    self.started += 1
        return actor
