"""StorageActor: the one writer of libSQL and LMDB, as an async Ray actor over StorageService.

LMDB and the libSQL connection are opened inside this actor's process, lazily on the first call
(``__init__`` must stay synchronous, and a restart reruns it), so a restarted actor reopens the
same files and has lost nothing: all of its state is on disk. ``StorageService`` keeps blocking
work on worker threads, so the event loop serves concurrent callers. It also holds the
service's configuration, which every client adopts (see ``actors/service.py``). Idempotent
calls (upserts, step appends keyed by number, reads) are retried by Ray across a restart;
``merge_learning`` is not — the learners' recovery pass redoes what a crash lost.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import ray
from ray.util import metrics

from episodic_memory.actors.heap import keep_long_lived_frozen
from episodic_memory.config import MemoryConfig
from episodic_memory.core.learning import LearningDelta
from episodic_memory.core.models import Episode, ExecutionStep
from episodic_memory.core.patterns import Heuristic, Pattern
from episodic_memory.core.ranking import Candidate
from episodic_memory.storage.base import EpisodeQuery, KeywordHit, RetrievalSlate, StoredEmbedding
from episodic_memory.storage.bulk import BatchResult, IngestRows
from episodic_memory.storage.reconcile import RepairReport
from episodic_memory.storage.service import StorageService

__all__ = ["StorageActor"]

idempotent = ray.method(max_task_retries=3)

METRICS_INTERVAL_S = 5.0
"""How often the LMDB cache's hit and miss counts are handed to Ray's metrics."""
_BATCH_BOUNDS: list[float] = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000]


class StorageActor:
    def __init__(self, config: MemoryConfig) -> None:
        self._config = config
        self._service: StorageService | None = None
        self._opening = asyncio.Lock()
        self._reporter: asyncio.Task[None] | None = None
        self._batch_steps = metrics.Histogram(
            "episodic_memory_flush_batch_steps",
            "Steps per batch flushed to storage by the episode hosts.",
            boundaries=_BATCH_BOUNDS,
            tag_keys=("memory",),
        )
        self._batch_steps.set_default_tags({"memory": config.ray.memory_name})

    async def _svc(self) -> StorageService:
        if self._service is None:
            async with self._opening:
                if self._service is None:
                    self._service = await StorageService.open(self._config)
                    keep_long_lived_frozen()
                    self._reporter = asyncio.get_running_loop().create_task(self._report())
        return self._service

    async def _report(self) -> None:
        """Every ``METRICS_INTERVAL_S``: the cache's new hits and misses to Ray's metrics."""
        counters: dict[str, metrics.Counter] = {}
        for key in ("hits", "misses"):
            counter = metrics.Counter(
                f"episodic_memory_cache_{key}", f"Episode reads the LMDB cache {key}.", ("memory",)
            )
            counter.set_default_tags({"memory": self._config.ray.memory_name})
            counters[key] = counter
        seen = dict.fromkeys(counters, 0)
        while True:
            await asyncio.sleep(METRICS_INTERVAL_S)
            cache = self._service.cache if self._service is not None else None
            try:
                stats = await asyncio.to_thread(cache.stats) if cache is not None else {}
            except Exception:  # closing meanwhile; the next round reads again
                continue
            for key, counter in counters.items():
                if stats.get(key, 0) > seen[key]:
                    counter.inc(stats[key] - seen[key])
                    seen[key] = stats[key]

    @idempotent
    async def ready(self) -> None:
        await self._svc()

    @idempotent
    async def config(self) -> MemoryConfig:
        await self._svc()
        return self._config

    @idempotent
    async def create_episodes(self, episodes: list[Episode]) -> None:
        await (await self._svc()).create_episodes(episodes)

    @idempotent
    async def append_steps(self, steps: list[tuple[str, ExecutionStep]]) -> int:
        self._batch_steps.observe(len(steps))  # ~3 µs
        return await (await self._svc()).append_steps(steps)

    @idempotent
    async def seal_episodes(self, episodes: list[Episode]) -> None:
        await (await self._svc()).seal_episodes(episodes)

    @idempotent
    async def put_embeddings(self, embeddings: list[StoredEmbedding]) -> None:
        await (await self._svc()).put_embeddings(embeddings)

    async def merge_learning(self, delta: LearningDelta) -> dict[str, int]:
        return await (await self._svc()).merge_learning(delta)

    @idempotent
    async def get_episodes(self, episode_ids: list[str]) -> list[Episode]:
        return await (await self._svc()).get_episodes(episode_ids)

    @idempotent
    async def list_episodes(self, query: EpisodeQuery) -> list[Episode]:
        return await (await self._svc()).list_episodes(query)

    @idempotent
    async def keyword_search(
        self, text: str, domain: str | None = None, limit: int = 50
    ) -> list[KeywordHit]:
        return await (await self._svc()).keyword_search(text, domain, limit)

    @idempotent
    async def candidates(self, episode_ids: list[str]) -> dict[str, Candidate]:
        return await (await self._svc()).candidates(episode_ids)

    @idempotent
    async def retrieval_slate(
        self,
        text: str,
        keyword_domain: str | None,
        domain: str | None,
        task_type: str | None,
        limit: int,
        learned_version: str | None = None,
        learned: bool = True,
    ) -> RetrievalSlate:
        return await (await self._svc()).retrieval_slate(
            text,
            keyword_domain=keyword_domain,
            domain=domain,
            task_type=task_type,
            limit=limit,
            learned_version=learned_version,
            learned=learned,
        )

    @idempotent
    async def patterns(self, domain: str | None = None, limit: int = 50) -> list[Pattern]:
        return await (await self._svc()).patterns(domain, limit)

    @idempotent
    async def heuristics(self, domain: str | None = None, limit: int = 50) -> list[Heuristic]:
        return await (await self._svc()).heuristics(domain, limit)

    @idempotent
    async def unlearned_episode_ids(self, limit: int = 1000) -> list[str]:
        return await (await self._svc()).unlearned_episode_ids(limit)

    @ray.method(num_returns="streaming")
    async def iter_embeddings(
        self, model: str, batch_size: int = 1000
    ) -> AsyncIterator[list[StoredEmbedding]]:
        async for page in (await self._svc()).iter_embeddings(model, batch_size):
            yield page

    @idempotent
    async def stored_episode_ids(self, episode_ids: list[str]) -> list[str]:
        return await (await self._svc()).stored_episode_ids(episode_ids)

    @idempotent  # stored episodes are skipped, steps are keyed by number: a retry adds nothing
    async def ingest_rows(self, batch: IngestRows) -> BatchResult:
        return await (await self._svc()).ingest_rows(batch)

    @idempotent  # records it holds are kept
    async def add_learned_records(
        self, patterns: list[Pattern], heuristics: list[Heuristic]
    ) -> dict[str, int]:
        return await (await self._svc()).add_learned_records(patterns, heuristics)

    @ray.method(num_returns="streaming")
    async def iter_completed(self, batch_size: int = 500) -> AsyncIterator[list[Episode]]:
        async for page in (await self._svc()).iter_completed(batch_size):
            yield page

    @idempotent
    async def sync_memories(self) -> RepairReport:
        return await (await self._svc()).sync_memories()

    @idempotent
    async def stats(self) -> dict[str, dict[str, int]]:
        return await (await self._svc()).stats()

    async def close(self) -> None:
        """Close the files (before the actor is killed, so LMDB and WAL end cleanly)."""
        if self._service is not None:
            await self._service.close()
            self._service = None
