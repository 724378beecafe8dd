"""StorageService: the one writer of libSQL and the LMDB cache; the StorageActor wraps it.

libSQL is written first and is the truth; the cache is filled after, best-effort (a cache
failure is logged and never fails a durable write). Header writes bump ``Episode.revision`` from
the stored value, which is what the cache and ``sync_memories()`` compare. Retried calls are
harmless: a repeated create or seal returns the stored episode, steps are unique by number, and
learning skips episodes it has already absorbed. LMDB runs in worker threads so an async actor's
event loop never blocks on it.

For the embedded store (a ``file:`` database) the service owns its data folder: it holds an
exclusive lock on ``<data_dir>/.lock`` while open (``storage/folder_lock.py``), so a second
opener gets ``DataFolderLocked`` naming the holder's PID. A cache that was damaged (recreated
empty) or missing at open is rebuilt from libSQL before the service answers, and says so in a
warning and in ``stats()["cache"]["rebuilt_at_open"]``.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import TypeVar

from episodic_memory.config import MemoryConfig
from episodic_memory.core.base import utc_now
from episodic_memory.core.learning import LearningDelta, merge_heuristics, merge_patterns
from episodic_memory.core.models import Episode, ExecutionStep
from episodic_memory.core.patterns import Heuristic, Pattern
from episodic_memory.core.ranking import Candidate
from episodic_memory.errors import (
    EpisodeAlreadyCompleted,
    EpisodeNotFound,
    StorageError,
    ValidationError,
)
from episodic_memory.storage import bulk
from episodic_memory.storage.base import (
    EpisodeQuery,
    EpisodeStore,
    KeywordHit,
    RetrievalSlate,
    StoredEmbedding,
)
from episodic_memory.storage.folder_lock import FolderLock
from episodic_memory.storage.libsql_store import open_store
from episodic_memory.storage.lmdb_cache import LmdbCache
from episodic_memory.storage.reconcile import RepairReport, reconcile

__all__ = ["StorageService"]

logger = logging.getLogger(__name__)
T = TypeVar("T")

RECENTLY_LEARNED = 100_000
"""Episode ids remembered as learned in memory (the first guard against re-learning)."""


def _numbered(episode: Episode, index: int) -> list[tuple[str, ExecutionStep]]:
    for number, step in enumerate(episode.steps):
        if step.step_number is None:
            raise ValidationError(
                f"episodes.{index}.steps.{number}.step_number",
                "is missing",
                "number every step before storing it (the episode actor does this)",
            )
    return [(episode.episode_id, step) for step in episode.steps]


def _ranked(
    records: Iterable[T], key: Callable[[T], tuple[float, float, str]], limit: int
) -> list[T]:
    """Sorted by ``key`` ascending (callers negate scores; the id breaks ties stably)."""
    return sorted(records, key=key)[: max(0, limit)]


class StorageService:
    """Async facade over one ``EpisodeStore`` and an optional ``LmdbCache``."""

    def __init__(
        self,
        config: MemoryConfig,
        store: EpisodeStore,
        cache: LmdbCache | None,
        patterns: Sequence[Pattern] = (),
        heuristics: Sequence[Heuristic] = (),
    ) -> None:
        self.config = config
        self.store = store
        self.cache = cache
        self._patterns: dict[str, Pattern] = {p.pattern_id: p for p in patterns}
        self._heuristics: dict[str, Heuristic] = {h.heuristic_id: h for h in heuristics}
        self._learned: OrderedDict[str, None] = OrderedDict()
        self._learning_lock = asyncio.Lock()
        # A new token per process: a client's cached version never matches a restarted service.
        self._learned_version = f"{uuid.uuid4().hex}:0"
        self._cache_errors = 0
        self._closed = False
        self.folder_lock: FolderLock | None = None
        self.rebuilt_at_open: RepairReport | None = None

    @classmethod
    async def open(cls, config: MemoryConfig) -> StorageService:
        """Open the store (migrated), the cache under ``config.cache_dir``, and learned state."""
        lock = None
        if config.database_url.startswith("file:"):  # the embedded store: one owner
            lock = await asyncio.to_thread(FolderLock(config.data_dir).acquire)
        cache: LmdbCache | None = None
        try:
            store = await open_store(config)
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        try:
            cache_was_there = (config.cache_dir / "data.mdb").exists()
            if config.cache.enabled:
                cache = await asyncio.to_thread(
                    LmdbCache,
                    config.cache_dir,
                    config.cache.map_size_bytes,
                    config.cache.max_episodes_cache,
                )
            patterns = await store.load_patterns()
            heuristics = await store.load_heuristics()
            service = cls(config, store, cache, patterns, heuristics)
            service.folder_lock = lock
            if cache is not None and (cache.last_repair is not None or not cache_was_there):
                await service._rebuild_cache(cache.last_repair or "missing")
        except BaseException:
            if cache is not None:
                await asyncio.to_thread(cache.close)
            await store.close()
            if lock is not None:
                lock.release()
            raise
        return service

    async def _rebuild_cache(self, reason: str) -> None:
        """Refill a cache found damaged or missing at open from libSQL, and say so."""
        report = await self.sync_memories()
        if report.repaired or reason != "missing":  # a brand-new folder has nothing to say
            self.rebuilt_at_open = report
        if report.repaired:
            logger.warning(
                "LMDB cache %s was %s; rebuilt from libSQL: %d episode(s) restored",
                self.config.cache_dir,
                reason,
                report.missing,
            )

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self.cache is not None:
                await asyncio.to_thread(self.cache.close)
        finally:
            try:
                await self.store.close()
            finally:
                if self.folder_lock is not None:
                    self.folder_lock.release()

    # --- episodes: writes -------------------------------------------------------------------
    async def create_episodes(self, episodes: Sequence[Episode]) -> list[Episode]:
        """Store new active episodes (headers, plus any numbered steps they carry).

        A repeated create of an active episode is a no-op returning the stored one.
        """
        carried: list[tuple[str, ExecutionStep]] = []
        for index, episode in enumerate(episodes):
            if episode.status != "active":
                raise ValidationError(
                    f"episodes.{index}.status", "is completed", "create active episodes, then seal"
                )
            carried += _numbered(episode, index)
        stored = {e.episode_id: e for e in await self.store.get_episodes(_ids(episodes))}
        for episode in episodes:
            if (old := stored.get(episode.episode_id)) is not None and old.status == "completed":
                raise EpisodeAlreadyCompleted(episode.episode_id, "it cannot be created again")
        fresh = {
            e.episode_id: e.model_copy(update={"revision": e.revision + 1})
            for e in episodes
            if e.episode_id not in stored
        }
        if fresh:
            await self.store.put_episodes(list(fresh.values()))
        if carried:
            await self.store.append_steps(carried)
        return [stored[eid] if eid in stored else fresh[eid] for eid in _ids(episodes)]

    async def append_steps(self, steps: Sequence[tuple[str, ExecutionStep]]) -> int:
        """Append ``(episode_id, step)`` rows; returns how many were new (retries add none)."""
        return await self.store.append_steps(steps) if steps else 0

    async def seal_episodes(self, episodes: Sequence[Episode]) -> list[Episode]:
        """Write the final headers (revision bumped) and cache the sealed episodes.

        Steps carried by the episodes that libSQL lacks (a final flush that never arrived) are
        appended first, so the cached copy has every stored step. Sealing again with the same
        outcome returns the stored episode; a different one raises ``EpisodeAlreadyCompleted``.
        """
        for index, episode in enumerate(episodes):
            if episode.status != "completed":
                raise ValidationError(
                    f"episodes.{index}.status", "is active", "set status='completed' and outcome"
                )
            _numbered(episode, index)
        stored = {e.episode_id: e for e in await self.store.get_episodes(_ids(episodes))}
        sealed: dict[str, Episode] = {}
        unflushed: list[tuple[str, ExecutionStep]] = []
        for episode in episodes:
            old = stored.get(episode.episode_id)
            if old is None:
                raise EpisodeNotFound(episode.episode_id)
            if old.status == "completed":
                if old.outcome != episode.outcome:
                    raise EpisodeAlreadyCompleted(episode.episode_id, "sealed with another outcome")
                continue
            known = {s.step_number for s in old.steps}
            extra = [s for s in episode.steps if s.step_number not in known]
            unflushed += [(episode.episode_id, s) for s in extra]
            sealed[episode.episode_id] = episode.model_copy(
                update={
                    "revision": old.revision + 1,
                    "steps": sorted([*old.steps, *extra], key=lambda s: s.step_number or 0),
                }
            )
        if unflushed:
            await self.store.append_steps(unflushed)
        if sealed:
            await self.store.put_episodes(list(sealed.values()))
        result = [sealed[eid] if eid in sealed else stored[eid] for eid in _ids(episodes)]
        await self._cache_put(result)
        return result

    # --- episodes: reads --------------------------------------------------------------------
    async def get_episodes(self, episode_ids: Sequence[str]) -> list[Episode]:
        """Episodes with steps, each id once in the order asked (unknown skipped); cache first."""
        wanted = list(dict.fromkeys(episode_ids))
        found: dict[str, Episode] = {}
        if self.cache is not None and wanted:
            try:
                found = await asyncio.to_thread(self.cache.get_episodes, wanted)
            except StorageError:
                self._cache_failed("read")
        misses = [eid for eid in wanted if eid not in found]
        if misses:
            loaded = await self.store.get_episodes(misses)
            found.update((e.episode_id, e) for e in loaded)
            await self._cache_put(loaded)
        return [found[eid] for eid in wanted if eid in found]

    async def list_episodes(self, query: EpisodeQuery) -> list[Episode]:
        return await self.store.list_episodes(query)

    async def keyword_search(
        self, text: str, domain: str | None = None, limit: int = 50
    ) -> list[KeywordHit]:
        return await self.store.keyword_search(text, domain=domain, limit=limit)

    async def candidates_by_metadata(
        self, domain: str | None, task_type: str | None, limit: int
    ) -> list[Episode]:
        """Latest completed episodes sharing the task type and/or domain, most specific first.

        Order: same task type and domain, then same task type, then same domain; newest first
        within each. Full episodes, from the cache first (retrieval uses ``retrieval_slate``).
        """
        return await self.get_episodes(
            await self.store.metadata_candidate_ids(domain, task_type, limit)
        )

    async def candidates(self, episode_ids: Sequence[str]) -> dict[str, Candidate]:
        """Ranking rows of the completed episodes among ``episode_ids`` (no steps)."""
        return await self.store.candidates(episode_ids) if episode_ids else {}

    async def retrieval_slate(
        self,
        text: str,
        *,
        keyword_domain: str | None,
        domain: str | None,
        task_type: str | None,
        limit: int,
        learned_version: str | None = None,
        learned: bool = True,
    ) -> RetrievalSlate:
        """The store's share of one retrieval: full-text and metadata candidates as ranking
        rows, with the domain's patterns and heuristics — one call instead of five. Patterns
        and heuristics are left out when ``learned_version`` is still current, or when the
        caller does not want them (``learned=False``: it holds a recent enough copy)."""
        keyword, metadata = await self.store.candidate_ids(
            text, keyword_domain, domain, task_type, limit
        )
        unchanged = not learned or learned_version == self._learned_version
        return RetrievalSlate(
            keyword=[(hit.episode_id, hit.score) for hit in keyword],
            metadata=metadata,
            candidates=await self.candidates([hit.episode_id for hit in keyword] + metadata),
            patterns=[] if unchanged else await self.patterns(domain),
            heuristics=[] if unchanged else await self.heuristics(domain),
            learned_version=self._learned_version,
            learned_unchanged=unchanged,
        )

    def _learned_changed(self) -> None:
        """Patterns or heuristics changed: retrieval callers must fetch them again."""
        nonce, count = self._learned_version.split(":")
        self._learned_version = f"{nonce}:{int(count) + 1}"

    # --- learning ---------------------------------------------------------------------------
    async def merge_learning(self, delta: LearningDelta) -> dict[str, int]:
        """Fold a learner's delta into patterns and heuristics; mark its episodes learned.

        Serialised, and merged from the in-memory state that is only updated after libSQL
        accepted the writes; records and learned marks commit in one transaction, so a crash
        leaves both or neither and a failed call can simply be retried. A delta whose episodes
        were all learned already (checked in libSQL, so it holds across restarts) changes
        nothing; one that overlaps partly is applied whole (its pre-merged shares cannot be
        split), minus what ``core.merge`` recognises.
        """
        async with self._learning_lock:
            fresh = [eid for eid in dict.fromkeys(delta.episode_ids) if eid not in self._learned]
            if fresh:  # the durable guard: survives restarts, unlike the in-memory set
                already = await self.store.learned_episode_ids(fresh)
                self._remember_learned(list(already))
                fresh = [eid for eid in fresh if eid not in already]
            skipped = len(set(delta.episode_ids)) - len(fresh)
            if delta.episode_ids and not fresh:
                return {"episodes": 0, "patterns": 0, "heuristics": 0, "skipped": skipped}
            now = utc_now()
            patterns = merge_patterns(self._patterns, delta.patterns, now)
            heuristics = merge_heuristics(self._heuristics, delta.heuristics, now)
            await self.store.commit_learning(patterns, heuristics, fresh)
            self._patterns.update((p.pattern_id, p) for p in patterns)
            self._heuristics.update((h.heuristic_id, h) for h in heuristics)
            self._learned_changed()
            self._remember_learned(fresh)
        if patterns and self.cache is not None:
            await self._cache_call(self.cache.put_patterns, patterns)
        return {
            "episodes": len(fresh),
            "patterns": len(patterns),
            "heuristics": len(heuristics),
            "skipped": skipped,
        }

    async def patterns(self, domain: str | None = None, limit: int = 50) -> list[Pattern]:
        """Learned patterns (of ``domain`` when given), most confident first."""
        chosen = (p for p in self._patterns.values() if domain is None or p.domain == domain)
        return _ranked(chosen, lambda p: (-p.confidence, -p.occurrences, p.pattern_id), limit)

    async def heuristics(self, domain: str | None = None, limit: int = 50) -> list[Heuristic]:
        """Learned heuristics (of ``domain`` when given), most confident first."""
        chosen = (h for h in self._heuristics.values() if domain is None or h.domain == domain)
        return _ranked(chosen, lambda h: (-h.confidence, -h.evidence_count, h.heuristic_id), limit)

    async def unlearned_episode_ids(self, limit: int = 1000) -> list[str]:
        return await self.store.unlearned_episode_ids(limit)

    # --- embeddings -------------------------------------------------------------------------
    async def put_embeddings(self, embeddings: Sequence[StoredEmbedding]) -> None:
        if not embeddings:
            return
        await self.store.put_embeddings(embeddings)
        if self.cache is not None:
            rows = [(e.episode_id, e.vector) for e in embeddings]
            await self._cache_call(self.cache.put_embeddings, rows)

    async def iter_embeddings(
        self, model: str, batch_size: int = 1000
    ) -> AsyncIterator[list[StoredEmbedding]]:
        """Stored vectors of ``model`` in pages (to rebuild an index after a restart)."""
        async for page in self.store.iter_embeddings(model, batch_size):
            yield page

    # --- bulk ingest ------------------------------------------------------------------------
    async def stored_episode_ids(self, episode_ids: Sequence[str]) -> list[str]:
        """Which of these episodes are stored (any status): ingest skips them."""
        return sorted(await bulk.stored_ids(self.store, episode_ids))

    async def ingest_rows(self, batch: bulk.IngestRows) -> bulk.BatchResult:
        """Write a prepared ingest batch (``storage/bulk.py``): steps, vectors, headers and
        learned marks of the episodes not stored yet, in one transaction (file store).

        The cache is left alone: ingested episodes are cached when first read, so a million of
        them do not churn it.
        """
        result = await bulk.write_rows(self.store, batch, self.config.storage.write_batch_size)
        written = set(result.written)
        marked = [r.episode_id for r in batch.episodes if r.learned and r.episode_id in written]
        self._remember_learned(marked)
        return result

    async def add_learned_records(
        self, patterns: Sequence[Pattern], heuristics: Sequence[Heuristic]
    ) -> dict[str, int]:
        """Add patterns and heuristics this memory lacks (an import); ones it has are kept.

        Serialised with ``merge_learning`` and folded into the in-memory state only after
        libSQL accepted them, like a learning delta.
        """
        async with self._learning_lock:
            new_p = {p.pattern_id: p for p in patterns if p.pattern_id not in self._patterns}
            new_h = {
                h.heuristic_id: h for h in heuristics if h.heuristic_id not in self._heuristics
            }
            if new_p or new_h:
                await self.store.commit_learning(list(new_p.values()), list(new_h.values()), [])
            self._patterns.update(new_p)
            self._heuristics.update(new_h)
            self._learned_changed()
        if new_p and self.cache is not None:
            await self._cache_call(self.cache.put_patterns, list(new_p.values()))
        return {
            "patterns": len(new_p),
            "heuristics": len(new_h),
            "skipped": len(patterns) + len(heuristics) - len(new_p) - len(new_h),
        }

    async def iter_completed(self, batch_size: int = 500) -> AsyncIterator[list[Episode]]:
        """Completed episodes with steps, oldest first, in keyset-paged batches (relearning)."""
        async for page in self.store.iter_episodes(batch_size):
            completed = [e for e in page if e.status == "completed"]
            if completed:
                yield completed

    # --- maintenance ------------------------------------------------------------------------
    async def sync_memories(self) -> RepairReport:
        """Repair the cache from libSQL; an empty report when the cache is off."""
        if self.cache is None:
            return RepairReport()
        return await reconcile(
            self.cache, self.store, warm_limit=self.config.cache.max_episodes_cache
        )

    async def stats(self) -> dict[str, dict[str, int]]:
        """Rows per table, cache statistics, and the learned state held in memory."""
        cache = await asyncio.to_thread(self.cache.stats) if self.cache is not None else {}
        if self.rebuilt_at_open is not None:
            cache = {**cache, "rebuilt_at_open": self.rebuilt_at_open.missing}
        return {
            "tables": await self.store.counts(),
            "cache": {**cache, "errors": self._cache_errors} if self.cache is not None else {},
            "learned": {"patterns": len(self._patterns), "heuristics": len(self._heuristics)},
        }

    # --- internals --------------------------------------------------------------------------
    async def _cache_put(self, episodes: Sequence[Episode]) -> None:
        if self.cache is None:
            return
        sealed = [e for e in episodes if e.status == "completed"]
        if sealed:
            await self._cache_call(self.cache.put_episodes, sealed)

    async def _cache_call(self, method: Callable[[T], int], argument: T) -> None:
        """Run a cache write off the loop; a failure is logged, counted and never raised."""
        try:
            await asyncio.to_thread(method, argument)
        except StorageError:
            self._cache_failed("write")

    def _cache_failed(self, what: str) -> None:
        self._cache_errors += 1
        logger.warning("LMDB cache %s failed; libSQL answered instead", what, exc_info=True)

    def _remember_learned(self, episode_ids: Iterable[str]) -> None:
        for eid in episode_ids:
            self._learned[eid] = None
            self._learned.move_to_end(eid)
        while len(self._learned) > RECENTLY_LEARNED:
            self._learned.popitem(last=False)


def _ids(episodes: Iterable[Episode]) -> list[str]:
    return list(dict.fromkeys(e.episode_id for e in episodes))
