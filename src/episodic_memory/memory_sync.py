"""SyncMemory: the memory's API as blocking calls, for code that is not async (most Ray tasks).

No logic is copied: every method runs the matching ``SelfLearningMemory`` coroutine on one
private event loop per process, on a daemon thread, so validation, routing and errors are the
async API's own. Several ``SyncMemory`` objects in one process share that loop. Like the async
handle, a ``SyncMemory`` pickles to the memory's names and reconnects in the receiving worker.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterable, Coroutine, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, ClassVar, TypeVar

from episodic_memory.actors.episode_state import CompletionResult
from episodic_memory.backends import BackendKind
from episodic_memory.config import MemoryConfig
from episodic_memory.core.context import RetrievedContext
from episodic_memory.core.models import Episode, TaskContext, TaskOutcome, Verdict
from episodic_memory.errors import ServiceError
from episodic_memory.ingest import (
    DEFAULT_BATCH_SIZE,
    IngestCheckpoint,
    IngestItem,
    IngestReport,
    Progress,
)
from episodic_memory.memory import Durability, SelfLearningMemory, StepInput
from episodic_memory.storage.reconcile import RepairReport

__all__ = ["SyncMemory"]

T = TypeVar("T")


class _LoopThread:
    """One event loop on a daemon thread, shared by every SyncMemory of the process."""

    _shared: ClassVar[_LoopThread | None] = None
    _guard: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="episodic-memory-loop", daemon=True
        )
        self.thread.start()

    @classmethod
    def shared(cls) -> _LoopThread:
        with cls._guard:
            if cls._shared is None or not cls._shared.thread.is_alive():
                cls._shared = cls()
            return cls._shared

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        if threading.current_thread() is self.thread:
            coroutine.close()
            raise ServiceError("SyncMemory called from its own loop; use SelfLearningMemory there")
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()


class SyncMemory:
    """Blocking twin of ``SelfLearningMemory``: same method names, same arguments."""

    def __init__(self, memory: SelfLearningMemory) -> None:
        self.memory = memory
        self._loop = _LoopThread.shared()

    @classmethod
    def open(
        cls, config: MemoryConfig | None = None, *, backend: BackendKind = "ray"
    ) -> SyncMemory:
        config = config if config is not None else MemoryConfig.from_env()
        owns_ray = False
        if backend == "ray":
            from episodic_memory.actors.client import ensure_ray

            owns_ray = ensure_ray(config)  # ray.init must run on the calling (main) thread
        opening = SelfLearningMemory._open(config, backend, owns_ray=owns_ray)
        return cls(_LoopThread.shared().run(opening))

    @property
    def config(self) -> MemoryConfig:
        return self.memory.config

    def start_episode(
        self,
        description: str,
        context: TaskContext | Mapping[str, Any] | None = None,
        *,
        agent_id: str | None = None,
    ) -> str:
        return self._loop.run(self.memory.start_episode(description, context, agent_id=agent_id))

    def log_step(
        self, episode_id: str, step: StepInput, *, durability: Durability = "buffered"
    ) -> int:
        return self._loop.run(self.memory.log_step(episode_id, step, durability=durability))

    def log_steps(
        self, episode_id: str, steps: Sequence[StepInput], *, durability: Durability = "buffered"
    ) -> list[int]:
        return self._loop.run(self.memory.log_steps(episode_id, steps, durability=durability))

    def complete_episode(
        self, episode_id: str, outcome: TaskOutcome | Mapping[str, Any]
    ) -> CompletionResult:
        return self._loop.run(self.memory.complete_episode(episode_id, outcome))

    def retrieve_relevant_context(
        self,
        description: str,
        context: TaskContext | Mapping[str, Any] | None = None,
        limit: int = 5,
    ) -> RetrievedContext:
        return self._loop.run(self.memory.retrieve_relevant_context(description, context, limit))

    def get_episode(self, episode_id: str) -> Episode:
        return self._loop.run(self.memory.get_episode(episode_id))

    def list_episodes(
        self,
        *,
        domain: str | None = None,
        task_type: str | None = None,
        verdict: Verdict | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 50,
    ) -> list[Episode]:
        return self._loop.run(
            self.memory.list_episodes(
                domain=domain,
                task_type=task_type,
                verdict=verdict,
                since=since,
                until=until,
                limit=limit,
            )
        )

    def bulk_ingest(
        self,
        episodes: Iterable[IngestItem] | AsyncIterable[IngestItem],
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        progress: Progress | None = None,
        checkpoint: IngestCheckpoint | str | os.PathLike[str] | None = None,
        learn: bool = True,
    ) -> IngestReport:
        return self._loop.run(
            self.memory.bulk_ingest(
                episodes,
                batch_size=batch_size,
                progress=progress,
                checkpoint=checkpoint,
                learn=learn,
            )
        )

    def import_file(
        self,
        path: str | os.PathLike[str],
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        progress: Progress | None = None,
        checkpoint: bool | str | os.PathLike[str] = True,
        learn: bool = True,
    ) -> IngestReport:
        return self._loop.run(
            self.memory.import_file(
                path, batch_size=batch_size, progress=progress, checkpoint=checkpoint, learn=learn
            )
        )

    def sync_memories(self) -> RepairReport:
        return self._loop.run(self.memory.sync_memories())

    def settle(self) -> None:
        self._loop.run(self.memory.settle())

    def stats(self) -> dict[str, Any]:
        return self._loop.run(self.memory.stats())

    def close(self, *, stop_service: bool = False) -> None:
        self._loop.run(self.memory.close(stop_service=stop_service))

    def __enter__(self) -> SyncMemory:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def __reduce__(self) -> tuple[Any, ...]:
        return (SyncMemory, (self.memory,))
