"""The index's blocking calls on a worker thread, and rebuilding it from storage.

``IndexService`` is synchronous (FAISS, embedding). ``ThreadedIndex`` runs its calls on
worker threads, so the event loop that owns it — the IndexActor's, or the in-process backend's —
keeps answering: two threads for queries (search, tool prediction, stats), one for writes
(adding, learning, saving, rebuilding). Queries take ~1–5 ms; a batch of writes can take
seconds (embedding and learning 2,000 ingested episodes), and a query must not queue behind it.
``IndexService`` is thread-safe: the vector index and the predictor each have a lock, and
learning takes the predictor's lock one episode at a time. No Ray here (the in-process backend
uses it too).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, Protocol, TypeVar

import numpy as np
from pydantic import JsonValue

from episodic_memory.core.context import ToolPrediction
from episodic_memory.core.models import Episode, TaskContext
from episodic_memory.index.service import IndexService, LoadResult
from episodic_memory.storage.base import StoredEmbedding

__all__ = ["IndexSource", "ThreadedIndex", "restore_index"]

R = TypeVar("R")
log = logging.getLogger(__name__)


class ThreadedIndex:
    """``IndexService`` with every call on one worker thread (never on the event loop)."""

    def __init__(self, service: IndexService) -> None:
        self.service = service
        # Two query threads: a retrieval's vector search and tool prediction run side by side
        # (both spend most of their time in FAISS/numpy, which let go of the GIL).
        self._reads = ThreadPoolExecutor(max_workers=2, thread_name_prefix="episodic-index-read")
        self._writes = ThreadPoolExecutor(max_workers=1, thread_name_prefix="episodic-index-write")
        self.dirty = False  # changed since the last save

    async def _run(self, fn: Callable[..., R], *args: Any) -> R:
        """A write: adds, learning, loading, rebuilding and saving, one at a time."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writes, partial(fn, *args))

    async def _query(self, fn: Callable[..., R], *args: Any) -> R:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._reads, partial(fn, *args))

    async def add_episodes(self, episodes: list[Episode]) -> list[StoredEmbedding]:
        self.dirty = True
        return await self._run(self.service.add_episodes, episodes)

    async def observe(self, episodes: list[Episode]) -> None:
        self.dirty = True
        await self._run(self.service.observe, episodes)

    async def search(
        self, description: str, context: TaskContext, k: int
    ) -> list[tuple[str, float]]:
        return await self._query(self.service.search, description, context, k)

    async def predict_tools(self, description: str, context: TaskContext) -> ToolPrediction:
        return await self._query(self.service.predict_tools, description, context)

    async def retrieval_hints(
        self, description: str, context: TaskContext, k: int
    ) -> tuple[list[tuple[str, float]], ToolPrediction]:
        search = self._query(self.service.search, description, context, k)
        predict = self._query(self.service.predict_tools, description, context)
        hits, prediction = await asyncio.gather(search, predict)
        return hits, prediction

    async def load(self) -> LoadResult:
        return await self._run(self.service.load)

    async def rebuild(self, embeddings: list[StoredEmbedding]) -> int:
        return await self._run(self.service.rebuild, embeddings)

    async def rebuild_vectors(self, ids: list[str], matrix: np.ndarray) -> int:
        return await self._run(self.service.rebuild_vectors, ids, matrix)

    async def save(self) -> None:
        self.dirty = False
        await self._run(self.service.save)

    async def stats(self) -> dict[str, JsonValue]:
        return await self._query(self.service.stats)

    def close(self) -> None:
        self._reads.shutdown(wait=True)
        self._writes.shutdown(wait=True)


class IndexSource(Protocol):
    """What rebuilding an index reads from storage."""

    def iter_embeddings(
        self, model: str, batch_size: int = 1000
    ) -> AsyncIterator[list[StoredEmbedding]]: ...

    def iter_completed(self, batch_size: int = 500) -> AsyncIterator[list[Episode]]: ...

    async def stats(self) -> dict[str, dict[str, int]]: ...


async def _stored_vectors(
    index: ThreadedIndex, storage: IndexSource, expected: int
) -> tuple[list[str], np.ndarray]:
    """Every stored vector of the index's embedder, page by page into one preallocated matrix
    (1M vectors are 4 GB as float32: never also held as a list of records)."""
    embedder = index.service.embedder
    assert embedder is not None
    matrix = np.empty((max(expected, 1), embedder.dim), dtype=np.float32)
    ids: list[str] = []
    skipped = 0
    async for page in storage.iter_embeddings(embedder.name):
        for stored in page:
            if not index.service.fits(stored):
                skipped += 1
                continue
            if len(ids) == len(matrix):  # more than counted: written meanwhile
                matrix = np.concatenate([matrix, np.empty_like(matrix)])
            matrix[len(ids)] = np.frombuffer(stored.vector, dtype="<f4")
            ids.append(stored.episode_id)
    if skipped:
        log.warning("index rebuild skipped %d vector(s) not made by %s", skipped, embedder.name)
    return ids, matrix[: len(ids)]


async def restore_index(index: ThreadedIndex, storage: IndexSource) -> None:
    """Load the saved index, then make it level with storage, the truth.

    Vectors are rebuilt from the stored embeddings when the saved set is missing or a
    different size; the tool predictor relearns from the stored successes (streamed oldest
    first, keyset-paged) when its state is missing. Both are cheap next to re-embedding (the
    vectors are stored).
    """
    loaded = await index.load()
    embedder = index.service.embedder
    if embedder is not None:
        stored = (await storage.stats())["tables"].get("embeddings", 0)
        held = index.service.vectors
        if not loaded.vectors or held is None or len(held) != stored:
            ids, matrix = await _stored_vectors(index, storage, stored)
            await index.rebuild_vectors(ids, matrix)
    if not loaded.predictor:
        async for episodes in storage.iter_completed(500):
            await index.observe(episodes)
    index.dirty = not (loaded.vectors and loaded.predictor)
