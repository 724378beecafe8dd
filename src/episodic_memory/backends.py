"""The two backends behind ``SelfLearningMemory``: the Ray service, or plain classes in-process.

Both expose the same methods (``Backend``), so the memory's API, its validation and its tests
are shared. The in-process backend runs exactly the objects the Ray actors wrap — one
``EpisodeHost``, ``StorageService``, the threaded index and a ``LearningWorker`` — in the
caller's event loop. It is the no-Ray reference for benchmarks and the quality benchmark, and
fits single-process tools; it cannot be shared with other processes.

Learning what storage holds unlearned (a learner lost mid-batch, a bulk ingest) runs in the
background in both: Ray's learners re-scan at start and every 30 s; the in-process backend runs
one pass at open and after an ingest, as a task that ``close()`` stops between batches (what is
left stays unlearned in storage for the next pass) and ``settle()`` waits for. Opening a memory
with a million unlearned episodes therefore returns at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, Literal, Protocol

from episodic_memory.actors.episode_host import EpisodeHost
from episodic_memory.actors.episode_state import CompletionResult
from episodic_memory.actors.index_thread import ThreadedIndex, restore_index
from episodic_memory.actors.pipeline import LearningWorker, ServiceWriter
from episodic_memory.config import InputLimits, MemoryConfig
from episodic_memory.core.context import RetrievedContext
from episodic_memory.core.models import Episode, ExecutionStep, TaskContext, TaskOutcome
from episodic_memory.core.patterns import Heuristic, Pattern
from episodic_memory.core.task_type import classify_task
from episodic_memory.index.service import IndexService
from episodic_memory.ingest.run import IN_FLIGHT, BatchWriter
from episodic_memory.retrieval import Retriever
from episodic_memory.storage.base import EpisodeQuery
from episodic_memory.storage.bulk import BatchResult
from episodic_memory.storage.reconcile import RepairReport
from episodic_memory.storage.service import StorageService

__all__ = ["Backend", "BackendKind", "InProcessBackend", "open_backend"]

BackendKind = Literal["ray", "in_process"]
log = logging.getLogger(__name__)


class Backend(Protocol):
    kind: str
    config: MemoryConfig

    async def start(self, header: Episode) -> None: ...

    async def log_steps(
        self, episode_id: str, steps: list[ExecutionStep], call_id: str
    ) -> list[int]: ...

    async def complete(self, episode_id: str, outcome: TaskOutcome) -> CompletionResult: ...

    async def get_episode(self, episode_id: str) -> Episode: ...

    async def list_episodes(self, query: EpisodeQuery) -> list[Episode]: ...

    async def retrieve(
        self, description: str, context: TaskContext | None, limit: int
    ) -> RetrievedContext: ...

    async def sync_memories(self) -> RepairReport: ...

    async def settle(self) -> None: ...

    async def flush(self, episode_id: str | None = None) -> int: ...

    async def stats(self) -> dict[str, Any]: ...

    async def close(self, *, stop_service: bool = False) -> None: ...

    # bulk ingest (``episodic_memory.ingest``)
    ingest_parallelism: int

    async def ingest(
        self, items: Sequence[tuple[str, object]], *, learn: bool, limits: InputLimits
    ) -> BatchResult: ...

    async def add_learned_records(
        self, patterns: list[Pattern], heuristics: list[Heuristic]
    ) -> dict[str, int]: ...

    def learn_in_background(self) -> None: ...


async def open_backend(
    config: MemoryConfig,
    kind: BackendKind,
    *,
    create: bool = True,
    owns_ray: bool | None = None,
) -> Backend:
    """Open a backend. ``owns_ray``: whether the caller already started Ray for it."""
    if kind == "in_process":
        return await InProcessBackend.open(config)
    from episodic_memory.actors.client import RayBackend

    return await RayBackend.open(config, create=create, owns_ray=owns_ray)


class InProcessBackend:
    kind = "in_process"
    ingest_parallelism = IN_FLIGHT

    def __init__(
        self,
        config: MemoryConfig,
        storage: StorageService,
        index: ThreadedIndex,
    ) -> None:
        self.config = config
        self._storage = storage
        self._index = index
        self._learner = LearningWorker(
            storage,
            index,
            max_in_flight=config.learner.max_in_flight,
            batch_size=config.learner.merge_batch_size,
        )
        self._learning: set[asyncio.Task[int]] = set()
        self._host = EpisodeHost(
            ServiceWriter(storage, index, self._hand_off),
            flush=config.flush,
            limits=config.limits,
            write_batch_size=config.storage.write_batch_size,
        )
        self._retriever = Retriever(storage, index, classify=classify_task)
        self._writer = BatchWriter(storage, index, headers_only=False)
        self._background: asyncio.Task[None] | None = None
        self._stopping = False

    @classmethod
    async def open(cls, config: MemoryConfig) -> InProcessBackend:
        storage = await StorageService.open(config)
        try:
            service = await asyncio.to_thread(IndexService, config.index, config.index_dir)
            index = ThreadedIndex(service)
            await restore_index(index, storage)
        except BaseException:
            await storage.close()
            raise
        backend = cls(config, storage, index)
        backend.learn_in_background()
        return backend

    def _hand_off(self, episode_ids: list[str]) -> None:
        task = asyncio.get_running_loop().create_task(self._learn(episode_ids))
        self._learning.add(task)
        task.add_done_callback(self._learning.discard)

    async def _learn(self, episode_ids: list[str]) -> int:
        try:
            return await self._learner.learn(episode_ids)
        except Exception:
            return 0  # logged by the worker; recover() on the next open redoes it

    def learn_in_background(self) -> None:
        """Start a pass over storage's unlearned episodes, unless one is running."""
        if self._background is None or self._background.done():
            loop = asyncio.get_running_loop()
            self._background = loop.create_task(self._learn_unlearned())

    async def _learn_unlearned(self) -> None:
        """``LearningWorker.recover`` in small batches, stopping between them on close."""
        size = self.config.learner.merge_batch_size
        while True:
            # Fetched 16 batches at a time: the unlearned-ids query sorts what it finds.
            pending = await self._storage.unlearned_episode_ids(limit=size * 16)
            learned = 0
            for start in range(0, len(pending), size):
                if self._stopping:
                    return
                learned += await self._learn(pending[start : start + size])
            if not learned:
                return  # done, or those are being learned elsewhere (settle() catches up)

    async def ingest(
        self, items: Sequence[tuple[str, object]], *, learn: bool, limits: InputLimits
    ) -> BatchResult:
        return await self._writer.prepare_and_write(items, learn=learn, limits=limits)

    async def add_learned_records(
        self, patterns: list[Pattern], heuristics: list[Heuristic]
    ) -> dict[str, int]:
        return await self._storage.add_learned_records(patterns, heuristics)

    async def start(self, header: Episode) -> None:
        await self._host.start(header)

    async def log_steps(
        self, episode_id: str, steps: list[ExecutionStep], call_id: str
    ) -> list[int]:
        return await self._host.log_steps(episode_id, steps, call_id)

    async def complete(self, episode_id: str, outcome: TaskOutcome) -> CompletionResult:
        return await self._host.complete(episode_id, outcome)

    async def get_episode(self, episode_id: str) -> Episode:
        return await self._host.get(episode_id)

    async def list_episodes(self, query: EpisodeQuery) -> list[Episode]:
        return await self._storage.list_episodes(query)

    async def retrieve(
        self, description: str, context: TaskContext | None, limit: int
    ) -> RetrievedContext:
        return await self._retriever.retrieve(description, context, limit)

    async def flush(self, episode_id: str | None = None) -> int:
        """Make buffered steps durable now (every episode's: there is one host)."""
        return await self._host.flush()

    async def settle(self) -> None:
        await self._host.flush()
        while self._learning:
            await asyncio.gather(*list(self._learning))
        if self._background is not None:
            await self._background
        await self._learner.recover()

    async def sync_memories(self) -> RepairReport:
        await self._host.flush()
        return await self._storage.sync_memories()

    async def stats(self) -> dict[str, Any]:
        return {
            "backend": self.kind,
            "placement": "in_process",
            "storage": await self._storage.stats(),
            "index": await self._index.stats(),
            "episodes": self._host.stats(),
            "learners": [self._learner.stats()],
        }

    async def close(self, *, stop_service: bool = False) -> None:
        self._stopping = True
        try:
            await self._host.close()
            if self._learning:
                await asyncio.gather(*list(self._learning))
            if self._background is not None:
                await self._background
            try:
                await self._index.save()
            except Exception:  # best effort: the index is rebuilt from storage on the next open
                log.warning("saving the index failed; it will be rebuilt", exc_info=True)
        finally:
            self._index.close()
            await self._storage.close()
