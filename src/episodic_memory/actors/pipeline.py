"""The service's plumbing as plain classes, shared by the Ray actors and the in-process backend.

- ``ServiceWriter``: what an episode host writes through. Sealing is the one place the write
  path fans out: index the episode, store the sealed header and its vector together (the
  vector is kept so a restarted index rebuilds without re-embedding), then hand the episode
  to learning without waiting.
- ``LearningWorker``: learning off the hot path, at most ``max_in_flight`` batches at a time;
  ``recover()`` re-learns what storage says was never learned (a learner died mid-batch).

Each talks to storage and the index through small protocols that both the plain services and
the Ray proxies (``actors/proxies.py``) satisfy.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from episodic_memory.core.learning import LearningDelta, learn
from episodic_memory.core.models import Episode, ExecutionStep
from episodic_memory.storage.base import StoredEmbedding

__all__ = ["IndexLike", "LearningWorker", "ServiceWriter", "StorageLike"]

log = logging.getLogger(__name__)


class StorageLike(Protocol):
    async def create_episodes(self, episodes: list[Episode]) -> object: ...

    async def append_steps(self, steps: list[tuple[str, ExecutionStep]]) -> int: ...

    async def seal_episodes(self, episodes: list[Episode]) -> object: ...

    async def get_episodes(self, episode_ids: Sequence[str]) -> list[Episode]: ...

    async def put_embeddings(self, embeddings: list[StoredEmbedding]) -> None: ...

    async def merge_learning(self, delta: LearningDelta) -> Any: ...

    async def unlearned_episode_ids(self, limit: int = 1000) -> list[str]: ...


class IndexLike(Protocol):
    async def add_episodes(self, episodes: list[Episode]) -> list[StoredEmbedding]: ...

    async def observe(self, episodes: list[Episode]) -> None: ...


class ServiceWriter:
    """``EpisodeWriter`` over storage + index + a learning hand-off."""

    def __init__(
        self, storage: StorageLike, index: IndexLike, hand_off: Callable[[list[str]], None]
    ) -> None:
        self._storage = storage
        self._index = index
        self._hand_off = hand_off

    async def create_episodes(self, episodes: list[Episode]) -> None:
        await self._storage.create_episodes(episodes)

    async def append_steps(self, steps: list[tuple[str, ExecutionStep]]) -> int:
        return await self._storage.append_steps(steps)

    async def get_episodes(self, episode_ids: list[str]) -> list[Episode]:
        return await self._storage.get_episodes(episode_ids)

    async def seal_episodes(self, episodes: list[Episode]) -> None:
        """Index, then store the sealed headers and the vectors at once (two round trips).

        Indexing first is safe: retrieval keeps only episodes storage holds as completed, and
        a retried seal re-adds the same vectors (an upsert). The host flushed every step
        before sealing and storage keeps the ones it holds, so headers travel without them.
        """
        embeddings = await self._index.add_episodes(episodes)
        headers = [e.model_copy(update={"steps": []}) for e in episodes]
        writes = [self._storage.seal_episodes(headers)]
        if embeddings:
            writes.append(self._storage.put_embeddings(embeddings))
        await asyncio.gather(*writes)
        self._hand_off([e.episode_id for e in episodes])


class LearningWorker:
    """Learn batches of completed episodes with bounded concurrency; recover lost ones."""

    def __init__(
        self,
        storage: StorageLike,
        index: IndexLike,
        *,
        max_in_flight: int,
        batch_size: int,
    ) -> None:
        self._storage = storage
        self._index = index
        self._slots = asyncio.Semaphore(max_in_flight)
        self._batch_size = batch_size
        self._in_flight: set[str] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._running = 0
        self.learned = 0
        self.failures = 0

    async def learn(self, episode_ids: Sequence[str]) -> int:
        """Learn from these episodes; return how many completed ones were absorbed."""
        ids = [i for i in dict.fromkeys(episode_ids) if i not in self._in_flight]
        if not ids:
            return 0
        self._in_flight.update(ids)
        self._running += 1
        self._idle.clear()
        try:
            async with self._slots:
                episodes = [
                    e for e in await self._storage.get_episodes(ids) if e.status == "completed"
                ]
                if not episodes:
                    return 0
                merged = await self._storage.merge_learning(learn(episodes))
                if not isinstance(merged, dict) or merged.get("episodes", 1):
                    await self._index.observe(episodes)  # not when all were learned before
                self.learned += len(episodes)
                return len(episodes)
        except Exception:
            self.failures += 1
            log.warning(
                "learning %d episode(s) failed; recovery will retry", len(ids), exc_info=True
            )
            raise
        finally:
            self._in_flight.difference_update(ids)
            self._running -= 1
            if self._running == 0:
                self._idle.set()

    async def recover(self, owns: Callable[[str], bool] = lambda _: True) -> int:
        """Re-learn every completed episode storage has not seen learned (that ``owns``)."""
        total = 0
        seen: set[str] = set()
        while True:
            pending = await self._storage.unlearned_episode_ids(limit=self._batch_size * 4)
            fresh = [i for i in pending if i not in seen and owns(i) and i not in self._in_flight]
            if not fresh:
                return total
            seen.update(fresh)
            for start in range(0, len(fresh), self._batch_size):
                total += await self.learn(fresh[start : start + self._batch_size])

    async def drain(self) -> None:
        """Wait until no batch is in flight."""
        await self._idle.wait()

    def stats(self) -> dict[str, int]:
        return {"learned": self.learned, "failures": self.failures, "in_flight": self._running}
