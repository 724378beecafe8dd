"""LMDB hot cache of completed episodes, patterns and embeddings; never the source of truth.

libSQL holds the truth, so every failure this cache meets is answered by dropping cache state,
never by crashing: damaged or truncated files are deleted and the cache reopens empty (counted
in ``stats()["repairs"]``); ``MapFullError`` grows the map and retries the whole batch;
``MapResizedError`` (another process grew the map) adopts the new size and retries.

Rules from the LMDB measurements (notes §3): one write transaction per call; ``set_mapsize``
only with no transaction open in this process (one lock serialises every transaction here, and
reads gain nothing from threads under the GIL anyway); one environment per path per process;
open after process start, never use across ``fork``. Episodes and embeddings are bounded by
``max_episodes`` each, evicting the least recently written or read: reads are noted in memory and
stamped in the next write transaction, so a read never becomes a write.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import lmdb
import orjson

from episodic_memory.core.models import Episode
from episodic_memory.core.patterns import Pattern, parse_pattern
from episodic_memory.errors import StorageError, ValidationError

__all__ = ["LmdbCache"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
Txn = Any  # lmdb.Transaction; py-lmdb ships no type information

_FORMAT = b"1"
_DB_NAMES = (b"episodes", b"patterns", b"embeddings", b"metadata", b"lru")
_EPISODE, _VECTOR = b"e", b"v"  # kinds bounded by the LRU index
_KIND_DB = {_EPISODE: b"episodes", _VECTOR: b"embeddings"}
_FORMAT_KEY, _CLOCK_KEY, _STATS_KEY = b"#format", b"#clock", b"#stats"
_STAMP = struct.Struct(">Q")  # big-endian, so the LRU index iterates oldest first
_ENTRY = struct.Struct(">QQ")  # revision, last-access stamp
_MAX_KEY_BYTES = 400  # LMDB keys stop at 511 bytes; the LRU key adds 9
_MAX_ATTEMPTS = 40
_MAX_MAP_BYTES = 1 << 40
_COUNTERS = ("hits", "misses", "evictions", "repairs", "map_growths")
_CORRUPTION: tuple[type[BaseException], ...] = (
    lmdb.CorruptedError,
    lmdb.PageNotFoundError,
    lmdb.InvalidError,
    lmdb.VersionMismatchError,
    lmdb.PanicError,
    lmdb.IncompatibleError,
)
_OPEN_PATHS: set[str] = set()
_OPEN_PATHS_LOCK = threading.Lock()


class _DamagedFile(Exception):
    """data.mdb is shorter than its own meta page says: reading it would SIGBUS."""


def _key(ident: str) -> bytes | None:
    key = ident.encode("utf-8")
    return key if key and len(key) <= _MAX_KEY_BYTES else None


class LmdbCache:
    """Bounded, self-repairing LMDB cache. Synchronous: callers run it off the event loop."""

    def __init__(self, path: Path, map_size_bytes: int, max_episodes: int) -> None:
        if max_episodes < 0:
            raise ValidationError("max_episodes", "is negative", "use 0 (no episodes) or more")
        self.path = Path(path)
        self.max_episodes = max_episodes
        self.last_repair: str | None = None
        self._map_size = max(map_size_bytes, 1 << 16)
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._counters = dict.fromkeys(_COUNTERS, 0)
        self._touches: dict[tuple[bytes, bytes], None] = {}
        self._env: Any = None
        self._dbs: dict[bytes, Any] = {}
        self._registered = str(self.path.resolve())
        with _OPEN_PATHS_LOCK:
            if self._registered in _OPEN_PATHS:
                raise StorageError(
                    f"LMDB cache {self.path} is already open in this process: share that "
                    "instance (LMDB allows one environment per path per process) or close it"
                )
            _OPEN_PATHS.add(self._registered)
        try:
            self._open()
        except BaseException:
            self._unregister()
            raise

    # --- episodes ---------------------------------------------------------------------------
    def put_episodes(self, episodes: Sequence[Episode]) -> int:
        """Cache completed episodes in one transaction; a higher cached revision is kept.

        Returns how many entries were written (older revisions and overlong ids are skipped).
        """
        for episode in episodes:
            if episode.status != "completed":
                raise ValidationError(
                    "episodes", f"{episode.episode_id!r} is {episode.status}", "cache only sealed"
                )
        rows = [
            (k, e.revision, e.model_dump_json().encode())
            for e in episodes
            if (k := _key(e.episode_id))
        ]
        if self.max_episodes == 0 or not rows:
            return 0

        def body(txn: Txn, clock: list[int]) -> int:
            written = 0
            for key, revision, data in rows:
                old = txn.get(_EPISODE + b":" + key, db=self._dbs[b"metadata"])
                if old is not None and _ENTRY.unpack(old)[0] > revision:
                    continue
                txn.put(key, data, db=self._dbs[b"episodes"])
                self._stamp(txn, _EPISODE, key, revision, clock)
                written += 1
            return written

        return self._write(body)

    def get_episodes(self, ids: Iterable[str]) -> dict[str, Episode]:
        """Cached episodes by id; absent ids are misses. Unreadable entries are dropped."""
        keys = {ident: _key(ident) for ident in dict.fromkeys(ids)}

        def read(txn: Txn) -> dict[str, bytes]:
            db = self._dbs[b"episodes"]
            return {i: raw for i, k in keys.items() if k and (raw := txn.get(k, db=db))}

        with self._lock:
            raw = self._txn(read, write=False)
        found: dict[str, Episode] = {}
        corrupt: list[str] = []
        for ident, data in raw.items():
            try:
                found[ident] = Episode.model_validate_json(data)
            except ValidationError:
                corrupt.append(ident)
        with self._lock:
            self._counters["hits"] += len(found)
            self._counters["misses"] += len(keys) - len(found)
            self._counters["repairs"] += len(corrupt)
            for ident in found:
                self._touches[(_EPISODE, keys[ident] or b"")] = None
        if corrupt:
            logger.warning(
                "LMDB cache %s: dropping %d unreadable episodes", self.path, len(corrupt)
            )
            self.delete_episodes(corrupt)
        return found

    def delete_episodes(self, ids: Iterable[str]) -> int:
        """Remove episodes (and their metadata); returns how many were cached."""
        keys = [k for ident in dict.fromkeys(ids) if (k := _key(ident))]

        def body(txn: Txn, clock: list[int]) -> int:
            return sum(self._drop(txn, _EPISODE, key) for key in keys)

        return self._write(body) if keys else 0

    def versions(self) -> dict[str, int]:
        """``episode_id → revision`` of every cached episode, for reconciliation."""
        prefix = _EPISODE + b":"

        def read(txn: Txn) -> dict[str, int]:
            cursor = txn.cursor(db=self._dbs[b"metadata"])
            found: dict[str, int] = {}
            if cursor.set_range(prefix):
                for key, value in cursor:
                    if not key.startswith(prefix):
                        break
                    found[key[len(prefix) :].decode()] = _ENTRY.unpack(value)[0]
            return found

        with self._lock:
            return self._txn(read, write=False)

    # --- patterns and embeddings ------------------------------------------------------------
    def put_patterns(self, patterns: Sequence[Pattern]) -> int:
        rows = [(p.pattern_id.encode(), p.model_dump_json().encode()) for p in patterns]

        def body(txn: Txn, clock: list[int]) -> int:
            for key, data in rows:
                txn.put(key, data, db=self._dbs[b"patterns"])
            return len(rows)

        return self._write(body) if rows else 0

    def get_patterns(self) -> list[Pattern]:
        """Every cached pattern; unreadable ones are dropped and counted as repairs."""
        with self._lock:
            rows = self._txn(lambda txn: list(txn.cursor(db=self._dbs[b"patterns"])), False)
        found: list[Pattern] = []
        corrupt: list[bytes] = []
        for key, data in rows:
            try:
                found.append(parse_pattern(bytes(data)))
            except ValidationError:
                corrupt.append(key)
        if corrupt:
            with self._lock:
                self._counters["repairs"] += len(corrupt)

            def body(txn: Txn, clock: list[int]) -> int:
                return sum(bool(txn.delete(k, db=self._dbs[b"patterns"])) for k in corrupt)

            self._write(body)
        return found

    def put_embeddings(self, embeddings: Sequence[tuple[str, bytes]]) -> int:
        """Raw float32 vectors by key; bounded by ``max_episodes`` like episodes."""
        rows = [(k, bytes(v)) for ident, v in embeddings if (k := _key(ident))]
        if self.max_episodes == 0 or not rows:
            return 0

        def body(txn: Txn, clock: list[int]) -> int:
            for key, vector in rows:
                txn.put(key, vector, db=self._dbs[b"embeddings"])
                self._stamp(txn, _VECTOR, key, 0, clock)
            return len(rows)

        return self._write(body)

    def get_embedding(self, ident: str) -> bytes | None:
        key = _key(ident)
        if key is None:
            return None
        with self._lock:
            vector: bytes | None = self._txn(
                lambda txn: txn.get(key, db=self._dbs[b"embeddings"]), write=False
            )
            if vector is not None:
                self._touches[(_VECTOR, key)] = None
        return vector

    # --- housekeeping -----------------------------------------------------------------------
    def stats(self) -> dict[str, int]:
        """Entry counts, map size and lifetime counters (hits, misses, evictions, repairs)."""

        def read(txn: Txn) -> dict[str, int]:
            return {
                "entries": txn.stat(self._dbs[b"episodes"])["entries"],
                "patterns": txn.stat(self._dbs[b"patterns"])["entries"],
                "embeddings": txn.stat(self._dbs[b"embeddings"])["entries"],
            }

        with self._lock:
            counts = self._txn(read, write=False)
            map_size = int(self._env.info()["map_size"])
            return {
                **counts,
                "max_episodes": self.max_episodes,
                "map_size_bytes": map_size,
                **self._counters,
            }

    def clear(self) -> None:
        """Empty every table; lifetime counters are kept."""

        def body(txn: Txn, clock: list[int]) -> int:
            for name in _DB_NAMES:
                txn.drop(self._dbs[name], delete=False)
            txn.put(_FORMAT_KEY, _FORMAT, db=self._dbs[b"metadata"])
            return 1

        with self._lock:
            self._touches.clear()
        self._write(body)

    def close(self) -> None:
        """Stamp pending reads, persist counters, close the environment. Safe to call twice."""
        if self._env is None:
            return
        try:
            if os.getpid() == self._pid:
                self._write(lambda txn, clock: 0)
        except StorageError:
            logger.warning("LMDB cache %s: final stamp failed", self.path, exc_info=True)
        finally:
            with self._lock:
                if self._env is not None:
                    self._env.close()
                    self._env = None
            self._unregister()

    # --- internals --------------------------------------------------------------------------
    def _write(self, body: Callable[[Txn, list[int]], int]) -> int:
        """Run ``body`` in one write txn with pending read stamps, eviction and counters."""

        def op(txn: Txn) -> tuple[int, int]:
            meta = self._dbs[b"metadata"]
            raw_clock = txn.get(_CLOCK_KEY, db=meta)
            clock = [_STAMP.unpack(raw_clock)[0] if raw_clock else 0]
            start = clock[0]
            for kind, key in self._touches:
                if txn.get(kind + b":" + key, db=meta) is not None:
                    self._stamp(txn, kind, key, None, clock)
            changed = body(txn, clock)
            evicted = sum(self._evict(txn, kind) for kind in _KIND_DB)
            if changed or evicted or clock[0] != start:
                txn.put(_CLOCK_KEY, _STAMP.pack(clock[0]), db=meta)
                counters = {**self._counters, "evictions": self._counters["evictions"] + evicted}
                txn.put(_STATS_KEY, orjson.dumps(counters), db=meta)
            return changed, evicted

        with self._lock:
            changed, evicted = self._txn(op, write=True)
            self._touches.clear()
            self._counters["evictions"] += evicted
        return changed

    def _stamp(
        self, txn: Txn, kind: bytes, key: bytes, revision: int | None, clock: list[int]
    ) -> None:
        """Give ``key`` the newest access stamp (keeping its revision when ``None``)."""
        meta, lru = self._dbs[b"metadata"], self._dbs[b"lru"]
        old = txn.get(kind + b":" + key, db=meta)
        if old is not None:
            old_revision, old_stamp = _ENTRY.unpack(old)
            txn.delete(kind + _STAMP.pack(old_stamp) + key, db=lru)
            revision = old_revision if revision is None else revision
        clock[0] += 1
        txn.put(kind + b":" + key, _ENTRY.pack(revision or 0, clock[0]), db=meta)
        txn.put(kind + _STAMP.pack(clock[0]) + key, b"", db=lru)

    def _drop(self, txn: Txn, kind: bytes, key: bytes) -> bool:
        meta = self._dbs[b"metadata"]
        old = txn.get(kind + b":" + key, db=meta)
        if old is not None:
            txn.delete(kind + _STAMP.pack(_ENTRY.unpack(old)[1]) + key, db=self._dbs[b"lru"])
            txn.delete(kind + b":" + key, db=meta)
        return bool(txn.delete(key, db=self._dbs[_KIND_DB[kind]]))

    def _evict(self, txn: Txn, kind: bytes) -> int:
        """Drop the least recently stamped entries of ``kind`` beyond ``max_episodes``."""
        excess = txn.stat(self._dbs[_KIND_DB[kind]])["entries"] - self.max_episodes
        if excess <= 0:
            return 0
        victims: list[bytes] = []
        cursor = txn.cursor(db=self._dbs[b"lru"])
        if cursor.set_range(kind):
            for lru_key in cursor.iternext(keys=True, values=False):
                if not lru_key.startswith(kind) or len(victims) >= excess:
                    break
                victims.append(lru_key[1 + _STAMP.size :])
        return sum(self._drop(txn, kind, key) for key in victims)

    def _txn(self, op: Callable[[Txn], T], write: bool) -> T:
        """Run ``op`` in a transaction (lock held), absorbing map growth and damage."""
        if self._env is None:
            raise StorageError(f"LMDB cache {self.path} is closed; open a new LmdbCache")
        if os.getpid() != self._pid:
            raise StorageError(
                f"LMDB cache {self.path} was opened in process {self._pid} and used after fork; "
                "open the cache inside each process after it starts"
            )
        repaired = False
        for _ in range(_MAX_ATTEMPTS):
            try:
                with self._env.begin(write=write) as txn:
                    return op(txn)
            except lmdb.MapFullError:
                self._grow()
            except lmdb.MapResizedError:
                self._resize(0)
            except _CORRUPTION as exc:
                if repaired:
                    raise StorageError(f"LMDB cache {self.path} stays damaged: {exc}") from exc
                self._recreate(f"damaged during use: {exc}")
                repaired = True
            except lmdb.Error as exc:
                raise StorageError(f"LMDB cache {self.path} failed: {exc}") from exc
        raise StorageError(f"LMDB cache {self.path}: map kept filling; check free disk space")

    def _grow(self) -> None:
        size = int(self._env.info()["map_size"]) * 2
        if size > _MAX_MAP_BYTES:
            raise StorageError(f"LMDB cache {self.path} would exceed {_MAX_MAP_BYTES} bytes")
        self._resize(size)
        self._counters["map_growths"] += 1
        logger.info("LMDB cache %s: map grown to %d bytes", self.path, size)

    def _resize(self, size: int) -> None:
        try:
            self._env.set_mapsize(size)
        except lmdb.Error as exc:
            raise StorageError(f"LMDB cache {self.path}: cannot resize map: {exc}") from exc

    def _open(self) -> None:
        try:
            self._env, self._dbs = self._open_env()
        except (lmdb.Error, _DamagedFile) as exc:
            self._recreate(f"unreadable at open: {exc}")

    def _open_env(self) -> tuple[Any, dict[bytes, Any]]:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create LMDB cache folder {self.path}: {exc}") from exc
        # sync=False: no fsync per commit (measured: a seal 8.4 → 1.0 ms). An OS crash may drop
        # the last commits but never corrupts the file, and libSQL, the truth, refills the cache.
        env = lmdb.open(str(self.path), map_size=self._map_size, max_dbs=8, subdir=True, sync=False)
        try:
            env.reader_check()
            info, psize = env.info(), env.stat()["psize"]
            needed = (info["last_pgno"] + 1) * psize
            data = self.path / "data.mdb"
            actual = data.stat().st_size if data.exists() else 0
            if info["last_txnid"] and actual < needed:
                raise _DamagedFile(f"data.mdb has {actual} bytes, its meta page needs {needed}")
            dbs = {name: env.open_db(name) for name in _DB_NAMES}
            with env.begin(write=True) as txn:
                meta = dbs[b"metadata"]
                if txn.get(_FORMAT_KEY, db=meta) != _FORMAT:
                    for name in _DB_NAMES:
                        txn.drop(dbs[name], delete=False)
                    txn.put(_FORMAT_KEY, _FORMAT, db=meta)
                stored = txn.get(_STATS_KEY, db=meta)
            self._load_counters(stored)
        except BaseException:
            env.close()
            raise
        return env, dbs

    def _load_counters(self, stored: bytes | None) -> None:
        try:
            loaded = orjson.loads(stored) if stored else {}
        except orjson.JSONDecodeError:
            loaded = {}
        for name in _COUNTERS:
            value = loaded.get(name) if isinstance(loaded, dict) else None
            if isinstance(value, int) and value >= 0:
                self._counters[name] = max(self._counters[name], value)

    def _recreate(self, reason: str) -> None:
        """Delete the LMDB files and reopen empty: the truth is in libSQL."""
        logger.warning("LMDB cache %s %s; recreating it empty", self.path, reason)
        if self._env is not None:
            try:
                self._env.close()
            except lmdb.Error:
                logger.debug("closing the damaged environment failed", exc_info=True)
            self._env = None
        try:
            for name in ("data.mdb", "lock.mdb"):
                (self.path / name).unlink(missing_ok=True)
            self._env, self._dbs = self._open_env()
        except (OSError, lmdb.Error, _DamagedFile) as exc:
            raise StorageError(f"cannot recreate LMDB cache {self.path}: {exc}") from exc
        self._counters["repairs"] += 1
        self.last_repair = reason

    def _unregister(self) -> None:
        with _OPEN_PATHS_LOCK:
            _OPEN_PATHS.discard(self._registered)
