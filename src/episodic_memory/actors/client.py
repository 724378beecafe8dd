"""RayBackend: the memory's calls routed to its named actors.

Episodes go to their host (``crc32(id) % hosts``) or, with placement ``dedicated``, to their own
actor — found by name, cached, and replaced by the pool host (which adopts the episode from
storage) if it has died. Reads and retrieval go to the storage and index actors through the
proxies, so ``retrieval.Retriever`` runs here, in the caller, unchanged.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Sequence
from functools import partial
from typing import Any

import ray
from ray.util import metrics

from episodic_memory.actors.batching import Coalescer
from episodic_memory.actors.episode_state import CompletionResult
from episodic_memory.actors.ingest_task import ingest_batch, parallel_batches
from episodic_memory.actors.proxies import ActorGone, IndexProxy, StorageProxy, call
from episodic_memory.actors.service import Service, connect, shard
from episodic_memory.config import InputLimits, MemoryConfig
from episodic_memory.core.context import RetrievedContext
from episodic_memory.core.models import Episode, ExecutionStep, TaskContext, TaskOutcome
from episodic_memory.core.patterns import Heuristic, Pattern
from episodic_memory.core.task_type import classify_task
from episodic_memory.errors import ServiceError
from episodic_memory.retrieval import Retriever
from episodic_memory.storage.base import EpisodeQuery
from episodic_memory.storage.bulk import BatchResult
from episodic_memory.storage.reconcile import RepairReport

__all__ = ["RayBackend", "ensure_ray"]

LogCall = tuple[str, list[ExecutionStep], str | None]
log = logging.getLogger(__name__)

_LATENCY_BOUNDS_MS: list[float] = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000]
_COALESCE_CALLS = 16  # client calls carried by one host call at most
_DEDICATED_CACHE = 10_000  # episode id → its actor handle, most recent
_SETTLE_ROUNDS = 200  # x _SETTLE_POLL_S: how long settle() waits for hand-offs in transit
_SETTLE_POLL_S = 0.05


def ensure_ray(config: MemoryConfig) -> bool:
    """Connect this process to Ray; return True when it started a local Ray (and owns it).

    Must run on the main thread the first time (``ray.init`` installs signal handlers).
    """
    if ray.is_initialized():
        return False
    if config.ray.address:
        ray.init(address=config.ray.address, namespace=config.ray.namespace, log_to_driver=False)
        return False
    # Loopback only: without this Ray binds 0.0.0.0 and advertises the machine's address.
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray.init(
        address="local",
        num_cpus=config.ray.num_cpus,
        include_dashboard=False,
        namespace=config.ray.namespace,
        object_store_memory=config.ray.object_store_memory_bytes,
        log_to_driver=False,
    )
    return True


class RayBackend:
    kind = "ray"

    def __init__(self, service: Service, *, owns_ray: bool) -> None:
        self.service = service
        self.config = service.config
        self._owns_ray = owns_ray
        self._dedicated = self.config.ray.placement == "dedicated"
        self._handles: OrderedDict[str, Any] = OrderedDict()
        # Concurrent bursts (many agents in this process) to one host share one actor call.
        self._logs = [
            Coalescer(partial(self._log_many, host), max_items=_COALESCE_CALLS)
            for host in service.hosts
        ]
        self._storage = StorageProxy(service.storage)
        self._creates = Coalescer(self._create_many, max_items=self.config.storage.write_batch_size)
        self._index = IndexProxy(service.index)
        self._retriever = Retriever(self._storage, self._index, classify=classify_task)
        self.ingest_parallelism = parallel_batches()
        self._latency = metrics.Histogram(
            "episodic_memory_retrieval_latency_ms",
            "Latency of retrieve_relevant_context, as seen by the caller.",
            boundaries=_LATENCY_BOUNDS_MS,
            tag_keys=("memory",),
        )
        self._latency.set_default_tags({"memory": self.config.ray.memory_name})

    @classmethod
    async def open(
        cls, config: MemoryConfig, *, create: bool = True, owns_ray: bool | None = None
    ) -> RayBackend:
        owns = ensure_ray(config) if owns_ray is None else owns_ray
        try:
            return cls(await connect(config, create=create), owns_ray=owns)
        except BaseException:
            if owns:
                ray.shutdown()
            raise

    # --- episodes ---------------------------------------------------------------------------
    async def start(self, header: Episode) -> None:
        """Hosted: write the header straight to storage (concurrent starts share one call);
        the host activates the episode actor on its first call. Dedicated: the pool host
        creates the episode's own actor, which writes the header."""
        if not self._dedicated:
            await self._creates.submit(header)
            return
        host = self.service.host_for(header.episode_id)
        handle = await call(host.place_dedicated.remote(header), "host.place_dedicated")
        self._remember(header.episode_id, handle)

    async def _create_many(self, headers: list[Episode]) -> list[BaseException | None]:
        await self._storage.create_episodes(headers)
        return [None] * len(headers)

    async def log_steps(
        self, episode_id: str, steps: list[ExecutionStep], call_id: str
    ) -> list[int]:
        if self._dedicated:
            numbers: list[int] = await self._on_episode(
                episode_id, "log_steps", episode_id, steps, call_id
            )
            return numbers
        logs = self._logs[shard(episode_id, len(self._logs))]
        return await logs.submit((episode_id, steps, call_id))

    @staticmethod
    async def _log_many(host: Any, calls: list[LogCall]) -> list[list[int] | BaseException]:
        result: list[list[int] | BaseException] = await call(
            host.log_many.remote(calls), "host.log_many"
        )
        return result

    async def complete(self, episode_id: str, outcome: TaskOutcome) -> CompletionResult:
        result: CompletionResult = await self._on_episode(
            episode_id, "complete", episode_id, outcome
        )
        if self._dedicated:
            self._handles.pop(episode_id, None)
            # Its owner kills it; nothing waits on that.
            self.service.host_for(episode_id).release_dedicated.remote(episode_id)
        return result

    async def get_episode(self, episode_id: str) -> Episode:
        episode: Episode = await self._on_episode(episode_id, "get", episode_id)
        return episode

    async def _on_episode(self, episode_id: str, method: str, *args: Any) -> Any:
        """Call the episode's actor; a dead dedicated actor falls back to its pool host."""
        if self._dedicated:
            handle = self._find(episode_id)
            if handle is not None:
                try:
                    return await call(getattr(handle, method).remote(*args), f"episode.{method}")
                except ActorGone:
                    self._handles.pop(episode_id, None)
        host = self.service.host_for(episode_id)
        return await call(getattr(host, method).remote(*args), f"host.{method}")

    def _find(self, episode_id: str) -> Any:
        handle = self._handles.get(episode_id)
        if handle is None:
            try:
                handle = ray.get_actor(
                    self.service.names.episode(episode_id), namespace=self.service.names.namespace
                )
            except ValueError:
                return None
            self._remember(episode_id, handle)
        return handle

    def _remember(self, episode_id: str, handle: Any) -> None:
        self._handles[episode_id] = handle
        self._handles.move_to_end(episode_id)
        while len(self._handles) > _DEDICATED_CACHE:
            self._handles.popitem(last=False)

    # --- reads ------------------------------------------------------------------------------
    async def list_episodes(self, query: EpisodeQuery) -> list[Episode]:
        return await self._storage.list_episodes(query)

    async def retrieve(
        self, description: str, context: TaskContext | None, limit: int
    ) -> RetrievedContext:
        started = time.perf_counter()
        found = await self._retriever.retrieve(description, context, limit)
        self._latency.observe((time.perf_counter() - started) * 1000)
        return found

    # --- bulk ingest ------------------------------------------------------------------------
    async def ingest(
        self, items: Sequence[tuple[str, object]], *, learn: bool, limits: InputLimits
    ) -> BatchResult:
        """One batch, prepared and written by a Ray task (``actors/ingest_task.py``)."""
        ref = ingest_batch.remote(
            self.service.storage, self.service.index, list(items), learn, limits
        )
        result: BatchResult = await call(ref, "ingest task")
        return result

    async def add_learned_records(
        self, patterns: list[Pattern], heuristics: list[Heuristic]
    ) -> dict[str, int]:
        return await self._storage.add_learned_records(patterns, heuristics)

    def learn_in_background(self) -> None:
        """Nothing to start: every learner re-learns its shard's unlearned episodes at start
        and every ``RECOVER_INTERVAL_S``; a second pass started here could overlap it."""

    # --- maintenance ------------------------------------------------------------------------
    async def flush(self, episode_id: str | None = None) -> int:
        """Flush buffered steps: of the host holding ``episode_id`` (and the dedicated actors
        it owns) when given, else of every host."""
        hosts = self.service.hosts if episode_id is None else [self.service.host_for(episode_id)]
        refs = [host.flush.remote() for host in hosts]
        counts = await asyncio.gather(*(call(ref, "host.flush") for ref in refs))
        return sum(counts)

    async def settle(self) -> None:
        """Flush, then wait (bounded) until storage has every completed episode learned.

        A hand-off can still be on its way to a learner when ``drain`` answers, so the
        authority is storage's ``unlearned_episode_ids``; a last recovery pass catches any
        episode whose hand-off was lost.
        """
        await self.flush()
        learners = self.service.learners
        for _ in range(_SETTLE_ROUNDS):
            await asyncio.gather(*(call(lr.drain.remote(), "learner.drain") for lr in learners))
            if not await self._storage.unlearned_episode_ids(limit=1):
                return
            await asyncio.sleep(_SETTLE_POLL_S)
        await asyncio.gather(*(call(lr.recover.remote(), "learner.recover") for lr in learners))

    async def sync_memories(self) -> RepairReport:
        await self.flush()
        report: RepairReport = await call(
            self.service.storage.sync_memories.remote(), "storage.sync_memories"
        )
        return report

    async def stats(self) -> dict[str, Any]:
        hosts = [call(h.stats.remote(), "host.stats") for h in self.service.hosts]
        learners = [call(lr.stats.remote(), "learner.stats") for lr in self.service.learners]
        storage, index, *rest = await asyncio.gather(
            self._storage.stats(), self._index.stats(), *hosts, *learners
        )
        host_stats = rest[: len(hosts)]
        totals: dict[str, int] = {}
        for one in host_stats:
            for key, value in one.items():
                totals[key] = totals.get(key, 0) + value
        return {
            "backend": self.kind,
            "placement": self.config.ray.placement,
            "storage": storage,
            "index": index,
            "episodes": totals,
            "learners": rest[len(hosts) :],
        }

    async def close(self, *, stop_service: bool = False) -> None:
        """Let go of the service; stop it when asked, or when this client owns it.

        A non-detached service belongs to the client that created it: Ray would end it when
        that client lets go anyway, so it is stopped here in order — buffers flushed, index
        saved, files closed — rather than killed mid-write.
        """
        owned = self.service.created and not self.config.ray.detached
        stop = stop_service or owned
        try:
            if stop or self._owns_ray:
                await self.flush()
                try:
                    await call(self.service.index.save.remote(), "index.save")
                except ServiceError:  # the index is rebuilt from storage when it starts
                    log.warning("saving the index failed; it will be rebuilt", exc_info=True)
                await call(self.service.storage.close.remote(), "storage.close")
        finally:
            if stop:
                self.service.kill()
            if self._owns_ray:
                ray.shutdown()
