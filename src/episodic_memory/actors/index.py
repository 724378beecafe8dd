"""IndexActor: embeddings, FAISS search and the tool predictor, as an async Ray actor.

Embedding and FAISS calls block, so they run on the ``ThreadedIndex`` worker thread and the
actor's event loop stays free to accept calls. On (re)start the actor loads the saved index
from ``config.index_dir`` and levels it with storage (stored vectors, stored successes for the
predictor) before answering: ``restore_index``. It saves itself every ``SAVE_INTERVAL_S`` while
changed, and on ``save()`` (called at shutdown), so a restart rarely has much to rebuild.
``add_episodes`` is an upsert by episode id, so Ray may retry it across a restart.
"""

from __future__ import annotations

import asyncio
import logging

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

__all__ = ["SAVE_INTERVAL_S", "IndexActor"]

log = logging.getLogger(__name__)
idempotent = ray.method(max_task_retries=3)

SAVE_INTERVAL_S = 30.0
"""How often a changed index is written to ``index_dir``."""


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
        while True:
            await asyncio.sleep(SAVE_INTERVAL_S)
            index = self._index
            if index is not None and index.dirty:
                try:
                    await index.save()
                except Exception:
                    log.warning("periodic index save failed; will retry", exc_info=True)

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
