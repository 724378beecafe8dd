"""EpisodeHostActor: the Ray shell over ``EpisodeHost``, for both placements.

- ``hosted`` (default): a small pool of these (``default:host:0..n-1``) each holds many episode
  actors; an episode lives on host ``crc32(episode_id) % n``.
- ``dedicated``: the pool host of an episode creates one more of these, named
  ``default:episode:<id>``, holding only that episode in its own process; the pool host owns
  it and kills it once the episode completes (``release_dedicated``). If it dies, clients
  fall back to the pool host, which adopts the episode from storage.

Either way the state machine is the same plain ``EpisodeHost``; this shell only wires its
writer to the storage, index and learner actors (found by name, lazily, so a restarted host
comes back without help), counts what passes through for Ray's metrics export, and every few
seconds deactivates episodes idle for ``IDLE_DEACTIVATE_S`` (their agents may have died).
"""

from __future__ import annotations

import asyncio
from typing import Any

import ray
from ray.util import metrics

from episodic_memory.actors.episode_host import EpisodeHost
from episodic_memory.actors.episode_state import CompletionResult
from episodic_memory.actors.pipeline import ServiceWriter
from episodic_memory.actors.proxies import ActorGone, IndexProxy, StorageProxy, call
from episodic_memory.actors.service import ServiceNames, actor_class, actor_options, shard
from episodic_memory.config import MemoryConfig
from episodic_memory.core.models import Episode, ExecutionStep, TaskOutcome
from episodic_memory.errors import EpisodicMemoryError, ServiceError

__all__ = ["EpisodeHostActor"]

idempotent = ray.method(max_task_retries=3)

HOUSEKEEPING_INTERVAL_S = 5.0
IDLE_DEACTIVATE_S = 600.0
"""An episode untouched this long is flushed and dropped from memory (reactivated on use)."""
_METRICS = {
    "started": ("episodic_memory_episodes_started", "Episodes started."),
    "completed": ("episodic_memory_episodes_completed", "Episodes completed."),
    "steps": ("episodic_memory_steps_logged", "Steps accepted by episode actors."),
}


class EpisodeHostActor:
    def __init__(self, config: MemoryConfig) -> None:
        self._config = config
        self._names = ServiceNames.of(config)
        self._host: EpisodeHost | None = None
        self._learners: list[Any] = []
        self._dedicated: dict[str, Any] = {}
        self._placed = 0
        self._released = 0
        self._counts = {"started": 0, "completed": 0, "steps": 0}
        self._reported = {"started": 0, "completed": 0}  # the plain host's totals, handed over
        self._metrics: dict[str, metrics.Counter] = {}
        self._alone = False  # a dedicated episode actor: reports before its owner kills it
        self._housekeeper: asyncio.Task[None] | None = None

    async def _housekeeping(self) -> None:
        """Every ``HOUSEKEEPING_INTERVAL_S``: hand counts to Ray's metrics (batched rather
        than recorded per call) and deactivate idle episodes."""
        while True:
            await asyncio.sleep(HOUSEKEEPING_INTERVAL_S)
            self._report()
            if self._host is not None:
                await self._host.deactivate_idle(IDLE_DEACTIVATE_S)

    def _report(self) -> None:
        """Counts since the last report to Ray's metrics. Started and completed come from the
        plain host, which also counts episodes activated on first touch (hosted starts
        write the header straight to storage and never call ``start`` here)."""
        if self._host is not None:
            for key, total in (
                ("started", self._host.started),
                ("completed", self._host.completed),
            ):
                self._counts[key] += max(0, total - self._reported[key])
                self._reported[key] = total
        for key, counter in self._metrics.items():
            if self._counts[key]:
                counter.inc(self._counts[key])
                self._counts[key] = 0

    def _lookup(self, name: str) -> Any:
        try:
            return ray.get_actor(name, namespace=self._names.namespace)
        except ValueError:
            raise ServiceError(f"episode host cannot find actor {name!r}") from None

    def _episodes(self) -> EpisodeHost:
        if self._host is None:
            for key, (name, text) in _METRICS.items():
                counter = metrics.Counter(name, text, ("memory",))
                counter.set_default_tags({"memory": self._config.ray.memory_name})
                self._metrics[key] = counter
            actor_name = ray.get_runtime_context().get_actor_name() or ""
            self._alone = actor_name.startswith(self._names.episode(""))
            self._housekeeper = asyncio.get_running_loop().create_task(self._housekeeping())
            storage = StorageProxy(self._lookup(self._names.storage))
            index = IndexProxy(self._lookup(self._names.index))
            pool = self._config.learner.pool_size
            self._learners = [self._lookup(self._names.learner(i)) for i in range(pool)]
            self._host = EpisodeHost(
                ServiceWriter(storage, index, self._hand_off),
                flush=self._config.flush,
                limits=self._config.limits,
                write_batch_size=self._config.storage.write_batch_size,
            )
        return self._host

    def _hand_off(self, episode_ids: list[str]) -> None:
        """Send sealed episodes to their learners without waiting (learning is off-path)."""
        by_learner: dict[int, list[str]] = {}
        for episode_id in episode_ids:
            by_learner.setdefault(shard(episode_id, len(self._learners)), []).append(episode_id)
        for i, ids in by_learner.items():
            self._learners[i].learn.remote(ids)

    @idempotent
    async def ready(self) -> None:
        self._episodes()

    @idempotent
    async def start(self, header: Episode) -> None:
        await self._episodes().start(header)

    async def log_steps(
        self, episode_id: str, steps: list[ExecutionStep], call_id: str | None = None
    ) -> list[int]:
        numbers = await self._episodes().log_steps(episode_id, steps, call_id)
        self._counts["steps"] += len(numbers)
        return numbers

    async def log_many(
        self, calls: list[tuple[str, list[ExecutionStep], str | None]]
    ) -> list[list[int] | EpisodicMemoryError]:
        """Many clients' bursts in one call (clients coalesce concurrent ``log_steps``)."""
        results = await self._episodes().log_many(calls)
        self._counts["steps"] += sum(len(r) for r in results if isinstance(r, list))
        return results

    @idempotent
    async def complete(self, episode_id: str, outcome: TaskOutcome) -> CompletionResult:
        result = await self._episodes().complete(episode_id, outcome)
        if self._alone:
            self._report()  # its pool host kills it next
        return result

    @idempotent
    async def get(self, episode_id: str) -> Episode:
        return await self._episodes().get(episode_id)

    @idempotent
    async def flush(self) -> int:
        """Flush every episode here, and in the dedicated actors this host owns."""
        owned = list(self._dedicated.items())
        answers = await asyncio.gather(
            *(call(handle.flush.remote(), "episode.flush") for _, handle in owned),
            return_exceptions=True,
        )
        written = 0
        for (episode_id, _), answer in zip(owned, answers, strict=True):
            if isinstance(answer, ActorGone):  # died; its episode is adopted on next touch
                self._dedicated.pop(episode_id, None)
            elif isinstance(answer, BaseException):
                raise answer
            else:
                written += answer
        return await self._episodes().flush() + written

    async def stats(self) -> dict[str, int]:
        """Counts of this host, plus the dedicated episodes it placed and released."""
        stats = self._episodes().stats()
        stats["episodes_started"] += self._placed
        stats["episodes_completed"] += self._released
        return {**stats, "dedicated_actors": len(self._dedicated)}

    async def place_dedicated(self, header: Episode) -> Any:
        """Create (or find) the episode's own actor, start the episode in it, return it."""
        name = self._names.episode(header.episode_id)
        options = actor_options("episode", self._config, name)
        handle = actor_class("episode").options(**options).remote(self._config)
        await call(handle.start.remote(header), "episode.start")
        self._dedicated[header.episode_id] = handle
        self._placed += 1
        return handle

    async def release_dedicated(self, episode_id: str) -> None:
        """Kill a completed episode's own actor (this host created and owns it)."""
        handle = self._dedicated.pop(episode_id, None)
        if handle is not None:
            ray.kill(handle, no_restart=True)
            self._released += 1
