"""LearnerActor: one of a pool of async actors that learn patterns off the hot path.

Episode hosts hand sealed episodes to learner ``crc32(id) % pool_size`` without waiting.
Each learner runs at most ``config.learner.max_in_flight`` batches at once (a semaphore;
further calls wait inside the actor). Nothing is lost when a learner dies: storage records
which episodes learning absorbed, and every learner re-learns the unlearned episodes of its own
shard when it starts and every ``recover_interval_s`` after — its own shard, so it knows which
of them are already in flight here. ``StorageService.merge_learning`` skips episodes it has
already absorbed, so the rare double hand-off is harmless.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import ray
from ray.util import metrics

from episodic_memory.actors.pipeline import LearningWorker
from episodic_memory.actors.proxies import IndexProxy, StorageProxy
from episodic_memory.actors.service import ServiceNames, shard
from episodic_memory.config import MemoryConfig
from episodic_memory.errors import ServiceError

__all__ = ["RECOVER_INTERVAL_S", "LearnerActor"]

log = logging.getLogger(__name__)

RECOVER_INTERVAL_S = 30.0
"""How often a learner looks for completed episodes whose learning was lost."""


class LearnerActor:
    def __init__(
        self, config: MemoryConfig, index: int, recover_interval_s: float = RECOVER_INTERVAL_S
    ) -> None:
        self._config = config
        self._index = index
        self._interval_s = recover_interval_s
        self._names = ServiceNames.of(config)
        self._worker: LearningWorker | None = None
        self._recovery: asyncio.Task[None] | None = None
        self._failures = metrics.Counter(
            "episodic_memory_learner_failures", "Learning batches that failed.", ("memory",)
        )
        self._failures.set_default_tags({"memory": config.ray.memory_name})
        self._queued = 0  # learn() calls here, waiting for a slot or running
        self._queue = metrics.Gauge(
            "episodic_memory_learner_queue_depth",
            "Learning batches waiting or running in one learner.",
            ("memory", "learner"),
        )
        self._queue.set_default_tags({"memory": config.ray.memory_name, "learner": str(index)})

    def _lookup(self, name: str) -> Any:
        try:
            return ray.get_actor(name, namespace=self._names.namespace)
        except ValueError:
            raise ServiceError(f"learner cannot find actor {name!r}") from None

    def _learning(self) -> LearningWorker:
        if self._worker is None:
            self._worker = LearningWorker(
                StorageProxy(self._lookup(self._names.storage)),
                IndexProxy(self._lookup(self._names.index)),
                max_in_flight=self._config.learner.max_in_flight,
                batch_size=self._config.learner.merge_batch_size,
            )
            self._recovery = asyncio.get_running_loop().create_task(self._recover_forever())
        return self._worker

    def _owns(self, episode_id: str) -> bool:
        return shard(episode_id, self._config.learner.pool_size) == self._index

    async def _recover_forever(self) -> None:
        while True:
            try:
                await self._learning().recover(self._owns)
            except Exception:
                log.warning("learner recovery pass failed; retrying later", exc_info=True)
            await asyncio.sleep(self._interval_s)

    async def ready(self) -> None:
        self._learning()

    async def learn(self, episode_ids: list[str]) -> int:
        """Learn a batch; failures are logged and counted, never raised (nobody waits)."""
        self._queued += 1
        self._queue.set(self._queued)
        try:
            return await self._learning().learn(episode_ids)
        except Exception:
            self._failures.inc()
            return 0
        finally:
            self._queued -= 1
            self._queue.set(self._queued)

    async def recover(self) -> int:
        """Re-learn this shard's unlearned episodes now; return how many were absorbed."""
        return await self._learning().recover(self._owns)

    async def drain(self) -> None:
        """Wait until no learning batch is in flight here."""
        await self._learning().drain()

    async def stats(self) -> dict[str, int]:
        return self._learning().stats()
