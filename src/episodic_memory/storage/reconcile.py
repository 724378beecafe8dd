"""Repair the LMDB cache from libSQL, the durable truth.

The cache drifts only through failures (a crash between the libSQL write and the cache write,
files deleted or truncated, a cache recreated empty), so repair compares revisions, which is
cheap: one keyset-paged scan of ``(episode_id, revision)`` in libSQL and one cursor scan of the
cache. Entries libSQL does not have are deleted, entries whose revision differs are refetched,
and missing ones are warmed newest first up to the cache bound. Concurrent seals are safe: the
cache never lets an older revision replace a newer one.
"""

from __future__ import annotations

import asyncio

from pydantic import Field

from episodic_memory.core.base import Record
from episodic_memory.core.models import Episode
from episodic_memory.storage.base import EpisodeQuery, EpisodeStore
from episodic_memory.storage.lmdb_cache import LmdbCache

__all__ = ["RepairReport", "reconcile"]

PAGE = 500
"""Episodes fetched from libSQL per round trip while refreshing or warming."""


class RepairReport(Record):
    """What one reconciliation fixed (``checked``: cache entries compared with libSQL)."""

    missing: int = Field(default=0, ge=0)
    stale: int = Field(default=0, ge=0)
    extra: int = Field(default=0, ge=0)
    checked: int = Field(default=0, ge=0)

    @property
    def repaired(self) -> int:
        return self.missing + self.stale + self.extra


async def _fill(cache: LmdbCache, store: EpisodeStore, ids: list[str]) -> int:
    """Fetch ``ids`` (newest first) from libSQL and cache them, oldest written first.

    Writing the oldest first gives the newest the freshest stamps, so they are evicted last.
    """
    oldest_first = ids[::-1]
    written = 0
    for start in range(0, len(oldest_first), PAGE):
        episodes = await store.get_episodes(oldest_first[start : start + PAGE])
        sealed = [e for e in episodes if e.status == "completed"]
        written += await asyncio.to_thread(cache.put_episodes, sealed)
    return written


async def _newest_missing(
    store: EpisodeStore, truth: dict[str, int], cached: set[str], room: int
) -> list[str]:
    """Ids of the newest completed episodes in libSQL but not in the cache, at most ``room``."""
    found: list[str] = []
    offset = 0
    while len(found) < room:
        page: list[Episode] = await store.list_episodes(
            EpisodeQuery(status="completed", limit=PAGE, offset=offset)
        )
        found.extend(
            e.episode_id for e in page if e.episode_id in truth and e.episode_id not in cached
        )
        if len(page) < PAGE:
            break
        offset += PAGE
    return found[:room]


async def reconcile(cache: LmdbCache, store: EpisodeStore, *, warm_limit: int) -> RepairReport:
    """Make the cache agree with libSQL; return the counts of what was fixed.

    Works on an empty cache (a rebuild) as well as on a populated one. ``warm_limit`` caps
    how many entries the cache holds after warming (it never exceeds the cache bound).
    """
    truth = await store.episode_versions()
    cached = await asyncio.to_thread(cache.versions)
    extra = [eid for eid in cached if eid not in truth]
    stale = [eid for eid, rev in cached.items() if eid in truth and truth[eid] != rev]
    removed = await asyncio.to_thread(cache.delete_episodes, extra) if extra else 0
    if stale:  # dropped first: a cached revision *above* libSQL's (a restored backup) must go too
        await asyncio.to_thread(cache.delete_episodes, stale)
        await _fill(cache, store, stale)
    now_cached = await asyncio.to_thread(cache.versions) if extra or stale else cached
    room = max(0, min(warm_limit, cache.max_episodes) - len(now_cached))
    warmed = 0
    if room:
        missing = await _newest_missing(store, truth, set(now_cached), room)
        warmed = await _fill(cache, store, missing) if missing else 0
    return RepairReport(missing=warmed, stale=len(stale), extra=removed, checked=len(cached))
