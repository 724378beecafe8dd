"""IndexActor: embeddings, FAISS search and the tool predictor, as an async Ray actor.

Embedding and FAISS calls block, so they run on the ``ThreadedIndex`` worker thread and the
actor's event loop stays free to accept calls. On (re)start the actor loads the saved index
from ``config.index_dir`` and levels it with storage (stored vectors, stored successes for the
predictor) before answering: ``restore_index``. It saves itself every ``SAVE_INTERVAL_S`` while
changed (less often once saves take long: ``SAVE_SHARE``), and on ``save()`` (called at
shutdown), so a restart rarely has much to rebuild. After a crash the vectors are rebuilt from
storage when the saved set differs from it, while a saved predictor is kept as it is: what it
learned since its last save is missing until relearned (delete ``tool_predictor.json``).
``add_episodes`` is an upsert by episode id, so Ray may retry it across a restart.
"""

from __future__ import annotations

import asyncio
import logging
import time

import ray
from pydantic import JsonValue

from episodic_memory.actors.heap import keep_long_lived_frozen
from episodic_memory.actors.index_thread import ThreadedIndex, restore_index
from episodic_memory.actors.proxies import StorageProxy
from episodic_memory.actors.service import ServiceNames
from episodic_memory.config import MemoryConfig
from episodic_memory.core.context import ToolPrediction
from episodic_memory.core.models import Episode, TaskContext
from episodic_memory.errors import ServiceError
from episodic_memory.index.service import IndexService
from episodic_memory.storage.base import StoredEmbedding

__all__ = ["SAVE_INTERVAL_S", "SAVE_SHARE", "IndexActor", "next_save_delay"]

log = logging.getLogger(__name__)
idempotent = ray.method(max_task_retries=3)

SAVE_INTERVAL_S = 30.0
"""How often, at most, a changed index is written to ``index_dir``."""
SAVE_SHARE = 0.05
"""The largest share of the time the index spends on periodic saves. A save at a million
episodes takes ~5.5 s (a 3 GB clone and write, the predictor copy) and competes with queries
for the CPU: every 30 s that was ~18% of a core. Past ~1.5 s a save, the interval stretches."""


def next_save_delay(last_save_s: float) -> float:
    """Seconds until the next periodic save, given how long the last one took."""
    return max(SAVE_INTERVAL_S, last_save_s / SAVE_SHARE)


class IndexActor:
    def __init__(self, config: MemoryConfig) -> None:
        self._config = config
        self._index: ThreadedIndex | None = None
        self._opening = asyncio.Lock()
        self._saver: asyncio.Task[None] | None = None

    async def _idx(self) -> ThreadedIndex:
        if self._index is None:
            async with self._opening:
                if self._index is None:
                    self._index = await self._open()
                    self._saver = asyncio.get_running_loop().create_task(self._save_forever())
        return self._index

    async def _open(self) -> ThreadedIndex:
        names = ServiceNames.of(self._config)
        try:
            storage = StorageProxy(ray.get_actor(names.storage, namespace=names.namespace))
        except ValueError:
            raise ServiceError(f"index cannot find actor {names.storage!r}") from None
        service = await asyncio.to_thread(IndexService, self._config.index, self._config.index_dir)
        index = ThreadedIndex(service)
        await restore_index(index, storage)
        await asyncio.to_thread(keep_long_lived_frozen)  # the restored predictor: ~0.5M objects
        return index

    async def _save_forever(self) -> None:
        delay = SAVE_INTERVAL_S
        while True:
            await asyncio.sleep(delay)
            index = self._index
            if index is not None and index.dirty:
                begun = time.monotonic()
                try:
                    await index.save()
                except Exception:
                    log.warning("periodic index save failed; will retry", exc_info=True)
                delay = next_save_delay(time.monotonic() - begun)

    @idempotent
    async def ready(self) -> None:
        await self._idx()

    @idempotent
    async def add_episodes(self, episodes: list[Episode]) -> list[StoredEmbedding]:
        return await (await self._idx()).add_episodes(episodes)

    async def observe(self, episodes: list[Episode]) -> None:  # not retried: it counts
        await (await self._idx()).observe(episodes)

    @idempotent
    async def search(
        self, description: str, context: TaskContext, k: int
    ) -> list[tuple[str, float]]:
        return await (await self._idx()).search(description, context, k)

    @idempotent
    async def predict_tools(self, description: str, context: TaskContext) -> ToolPrediction:
        return await (await self._idx()).predict_tools(description, context)

    @idempotent
    async def retrieval_hints(
        self, description: str, context: TaskContext, k: int
    ) -> tuple[list[tuple[str, float]], ToolPrediction]:
        return await (await self._idx()).retrieval_hints(description, context, k)

    @idempotent
    async def save(self) -> None:
        await (await self._idx()).save()

    @idempotent
    async def stats(self) -> dict[str, JsonValue]:
        return await (await self._idx()).stats()
