"""FAISS inner-product index keyed by episode id: exact while small, approximate past a size.

Why it is built this way (measurements in ``benchmarks/index_bench.py``):

- Exact ``flat`` search costs about 0.3 µs per 1024-d vector per query, so past
  ``approximate_threshold`` live vectors the index switches to the configured approximate kind
  (``kinds.py``; IVF by default: a few ms per query at 1M, native deletes; its encoding,
  float32, fp16 or sq8, trades memory for exact order, see ``IndexConfig``).
- Building an approximate index takes seconds to minutes, so it never happens inside a call:
  a background thread copies the live vectors out piece by piece (the lock held per piece
  only), builds the new index while the current one keeps serving search, add and remove,
  and replays the writes journaled meanwhile, the tail of the journal under the lock just
  before the swap. One build at a time; a failed build is logged, keeps the old index and is
  retried later with a growing delay. The same machinery compacts HNSW tombstones, regrows
  IVF lists as the set grows and shrinks back to flat (the rules are in ``builds.py``).
- A bulk load into an empty index (``IndexService.rebuild`` from stored embeddings) goes
  straight to the approximate kind, in the calling thread, instead of flat then a switch.
- Labels are never reused (a counter), so a journal replay can't confuse an upserted id with
  its old vector. Single queries use one OpenMP thread, builds ``build_threads``.

Thread-safe: a readers-writer lock (``rwlock.py``) guards the id maps and the current index.
Searches, saves (a clone) and a build's copying share it, so they never stall one another;
writes and a build's swap take it alone. Every FAISS failure surfaces as ``StorageError``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt

from episodic_memory.errors import ValidationError
from episodic_memory.index.builds import (
    Build,
    LiveCopy,
    Snapshot,
    plan_build,
    release_free_memory,
    replay,
)
from episodic_memory.index.kinds import (
    BATCH_ROWS,
    FaissIndex,
    IndexKind,
    IndexOptions,
    build_index,
    check_vectors,
    empty_flat,
    estimate_bytes,
    faiss_errors,
)
from episodic_memory.index.rwlock import ReadWriteLock
from episodic_memory.index.vector_files import id_map_arrays, read_saved, write_saved

__all__ = ["IndexKind", "IndexOptions", "VectorIndex"]

log = logging.getLogger(__name__)

Vectors = npt.NDArray[np.float32]
Labels = npt.NDArray[np.int64]
_KINDS: tuple[IndexKind, ...] = ("flat", "hnsw", "ivf")
_REPLAY_UNDER_LOCK = 256  # journal batches replayed while holding the lock, at the swap
_RETRY_DELAYS_S = (5.0, 30.0, 120.0, 600.0)  # after the 1st, 2nd, 3rd, later failed builds
_ID_ENTRY_BYTES = 240  # measured: two dict entries, the label int and a uuid-sized str


class VectorIndex:
    """Cosine search over unit vectors with string ids, upserts and removals."""

    def __init__(
        self,
        dim: int,
        *,
        model: str = "",
        approximate_threshold: int = 10_000,
        options: IndexOptions | None = None,
        compact_ratio: float = 0.2,
        background: bool = True,
    ) -> None:
        """``background=False`` runs due builds inside the write that triggered them.

        That suits offline tools and benchmarks; services keep the default so no write waits.
        """
        if dim < 1:
            raise ValidationError("dim", f"must be positive, got {dim}", "use the embedder's dim")
        self.dim = dim
        self.model = model
        self.approximate_threshold = approximate_threshold
        self.options = options or IndexOptions()
        self.compact_ratio = compact_ratio
        self.background = background
        self._lock = ReadWriteLock()
        self._save_lock = threading.Lock()
        self._int_of: dict[str, int] = {}
        self._str_of: dict[int, str] = {}
        self._next_label = 0
        self._part: FaissIndex = empty_flat(dim, self.options)
        self._built_for = 0  # live vectors when the current approximate index was built
        self._build: Build | None = None
        self._failures = 0
        self._retry_at = 0.0

    # --- introspection ------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._int_of)

    def __contains__(self, episode_id: object) -> bool:
        return episode_id in self._int_of

    @property
    def kind(self) -> IndexKind:
        return self._part.kind

    @property
    def dead(self) -> int:
        """Tombstoned vectors still held by an HNSW graph (other kinds remove natively)."""
        return len(self._part.dead)

    @property
    def building(self) -> bool:
        return self._build is not None

    def ids(self) -> list[str]:
        with self._lock.read():
            return list(self._int_of)

    def memory_bytes(self) -> int:
        """Estimate: the index, the id maps, and during a build the new index and a batch."""
        with self._lock.read():
            return self._memory_bytes()

    def state(self) -> dict[str, Any]:
        """For stats: kind, live, dead, building, memory_bytes and failed builds in a row."""
        with self._lock.read():
            return {
                "kind": self.kind,
                "encoding": self._part.encoding,
                "live": len(self),
                "dead": self.dead,
                "building": self.building,
                "memory_bytes": self._memory_bytes(),
                "failed_builds": self._failures,
            }

    def _memory_bytes(self) -> int:
        total = self._part.memory_bytes() + len(self._int_of) * _ID_ENTRY_BYTES
        build = self._build
        if build is not None:
            encoding = self.options.encoding
            total += min(build.live, BATCH_ROWS) * self.dim * 4  # one decoded batch
            total += estimate_bytes(build.kind, encoding, self.dim, build.live, self.options)
        return total

    # --- builds -------------------------------------------------------------------------
    def wait_for_build(self, timeout: float | None = None) -> bool:
        """Block until no build is running; ``False`` if ``timeout`` passes first.

        For tests and offline tools (``background=False`` is the other way to get builds done
        inline); services never need to wait, the current index serves meanwhile.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            build = self._build
            if build is None:
                return True
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not build.done.wait(remaining):
                return False

    def maintain(self) -> bool:
        """Start a build if one is due (after a load, say); ``True`` if one started."""
        with self._lock.write():
            build = self._due()
        if build is not None:
            self._launch(build)
        return build is not None

    # --- writes -------------------------------------------------------------------------
    def add(self, ids: Sequence[str], vectors: npt.ArrayLike) -> None:
        """Insert or replace the vectors of ``ids`` (the last occurrence wins in a batch)."""
        if not ids:
            return
        matrix = check_vectors(vectors, len(ids), self.dim)
        positions = {episode_id: row for row, episode_id in enumerate(ids)}
        if any("\x00" in episode_id for episode_id in positions):
            raise ValidationError("ids", "an id contains a NUL character", "remove it")
        unique = list(positions)
        if len(unique) != len(ids):
            matrix = matrix[[positions[episode_id] for episode_id in unique]]
        with self._lock.write():
            self._forget([episode_id for episode_id in unique if episode_id in self._int_of])
            labels = self._assign(unique)
            bulk = (
                self._build is None
                and self._part.ntotal == 0
                and len(unique) > self.approximate_threshold
            )
            if bulk:  # straight to the approximate kind; this call returns once it's searchable
                build: Build | None = Build(
                    self.options.approximate_kind,
                    "bulk load",
                    len(labels),
                    Snapshot([(labels, None, matrix)]),
                    in_caller=True,
                )
                self._build = build
            else:
                self._part.add(labels, matrix)
                self._journal(labels, matrix)
                build = self._due()
        if build is not None:
            self._launch(build)

    def remove(self, ids: Sequence[str]) -> int:
        """Drop these ids; unknown ids are ignored. Returns how many were present."""
        with self._lock.write():
            present = [episode_id for episode_id in dict.fromkeys(ids) if episode_id in self]
            self._forget(present)
            build = self._due() if present else None
        if build is not None:
            self._launch(build)
        return len(present)

    # --- reads --------------------------------------------------------------------------
    def search(self, vector: npt.ArrayLike, k: int) -> list[tuple[str, float]]:
        """Up to ``k`` ``(episode_id, cosine)`` pairs, most similar first."""
        query = check_vectors(vector, 1, self.dim)
        with self._lock.read():
            k = min(k, len(self._int_of))
            if k <= 0:
                return []
            scores, labels = self._part.search(query, k)
            hits: list[tuple[str, float]] = []
            for label, score in zip(labels, scores, strict=True):
                episode_id = self._str_of.get(label)
                if episode_id is not None:
                    hits.append((episode_id, float(score)))
            return hits

    # --- persistence --------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        """Persist the current index and id map (see ``vector_files``); a running build's
        result is not waited for: the next save, or a rebuild on load, catches up.

        Only a read lock is held, to clone the index in memory (~0.6 s at 1M IVF-SQ8):
        searches go on meanwhile, writes wait for the clone; files are written after, and the
        clone's memory is handed back to the OS (``release_free_memory``).
        """
        with self._save_lock:
            with self._lock.read(), faiss_errors("save"):
                clone = faiss.clone_index(self._part.index)
                ids, labels = id_map_arrays(self._int_of)
                dead = np.fromiter(self._part.dead, dtype=np.int64, count=len(self._part.dead))
                meta = {
                    "model": self.model,
                    "dim": self.dim,
                    "kind": self.kind,
                    "ntotal": self._part.ntotal,
                    "next_label": self._next_label,
                    "built_for": self._built_for,
                }
            write_saved(directory, meta, clone, labels, ids, dead)
            del clone  # a copy of every list, freed inside the heap: hand it back
            release_free_memory()

    @classmethod
    def load(cls, directory: Path, *, model: str, dim: int, **options: Any) -> VectorIndex | None:
        """The saved index, or ``None`` when absent, torn, of an older format, built by
        another embedder, or rounded (fp16, sq8) while another kind or encoding is configured:
        ``None`` means "rebuild from the stored embeddings", the only exact source then.

        ``options`` are the constructor's; a due build (say the configured kind changed on an
        exact index) starts in the background right away, from the index's own vectors.
        """
        saved = read_saved(directory, model=model, dim=dim)
        if saved is None:
            return None
        kind = saved.meta.get("kind")
        consistent = len(saved.labels) + len(saved.dead) == saved.index.ntotal
        if kind not in _KINDS or not consistent or len(set(saved.ids)) != len(saved.ids):
            return None
        loaded = cls(dim, model=model, **options)
        part = FaissIndex(kind, saved.index, loaded.options, set(saved.dead.tolist()))
        wanted = (loaded.options.approximate_kind, loaded.options.encoding)
        if part.encoding != "float32" and (part.kind, part.encoding) != wanted:
            return None  # re-encoding its rounded vectors would keep their error: use storage
        label_list = saved.labels.tolist()
        loaded._part = part
        loaded._int_of = dict(zip(saved.ids, label_list, strict=True))
        loaded._str_of = dict(zip(label_list, saved.ids, strict=True))
        top = max(label_list + saved.dead.tolist(), default=-1)
        loaded._next_label = max(int(saved.meta.get("next_label", 0)), top + 1)
        loaded._built_for = int(saved.meta.get("built_for", len(label_list)))
        loaded.maintain()
        return loaded

    # --- internals ----------------------------------------------------------------------
    def _assign(self, ids: list[str]) -> Labels:
        start = self._next_label
        self._next_label += len(ids)
        for offset, episode_id in enumerate(ids):
            self._int_of[episode_id] = start + offset
            self._str_of[start + offset] = episode_id
        return np.arange(start, start + len(ids), dtype=np.int64)

    def _forget(self, ids: list[str]) -> None:
        if not ids:
            return
        labels = np.array([self._int_of.pop(episode_id) for episode_id in ids], dtype=np.int64)
        for label in labels.tolist():
            del self._str_of[label]
        self._part.remove(labels)
        self._journal(labels, None)

    def _journal(self, labels: Labels, vectors: Vectors | None) -> None:
        if self._build is not None:
            self._build.journal.append((labels, vectors))

    def _due(self) -> Build | None:
        """The build the current state calls for, started (under the lock), or ``None``."""
        if self._build is not None or time.monotonic() < self._retry_at:
            return None
        plan = plan_build(
            self._part,
            len(self._int_of),
            threshold=self.approximate_threshold,
            options=self.options,
            compact_ratio=self.compact_ratio,
            built_for=self._built_for,
        )
        if plan is None:
            return None
        # Copied later, on the build thread; writes from now on are journaled.
        live = len(self._int_of)
        source = LiveCopy(self._part, self._next_label, self._lock, live)
        self._build = Build(plan[0], plan[1], live, source)
        return self._build

    def _launch(self, build: Build) -> None:
        if build.in_caller or not self.background:
            self._run_build(build)
            return
        worker = threading.Thread(
            target=self._run_build, args=(build,), name="episodic-index-build", daemon=True
        )
        worker.start()

    def _run_build(self, build: Build) -> None:
        """Build, replay the journal (its tail under the lock), swap; on failure keep the old.

        A failed bulk load raises instead, after forgetting its ids: that ``add`` did nothing.
        """
        started = time.perf_counter()
        source = build.source
        bulk_labels = source.labels() if isinstance(source, Snapshot) else None
        try:
            fresh = build_index(build.kind, self.dim, self.options, source)
            copied = _concat(source.copied) if isinstance(source, LiveCopy) else bulk_labels
            known = np.sort(copied if copied is not None else _concat([]))
            added: set[int] = set()
            while True:
                with self._lock.write():
                    pending, build.journal = build.journal, []
                    if len(pending) <= _REPLAY_UNDER_LOCK:
                        replay(fresh, pending, known, added)
                        self._part, self._build = fresh, None
                        self._built_for, self._failures = len(self._int_of), 0
                        break
                # The new index is private to this thread until the swap.
                replay(fresh, pending, known, added)
        except Exception as exc:  # a build must fail soft: the old index keeps serving
            delay = _RETRY_DELAYS_S[min(self._failures, len(_RETRY_DELAYS_S) - 1)]
            if bulk_labels is None:  # logged before the build is cleared, for wait_for_build
                log.warning(
                    "vector index: %s build of %d vectors (%s) failed: %s: %s; keeping the %s "
                    "index, retrying in %.0f s",
                    build.kind, build.live, build.reason, type(exc).__name__, exc, self.kind, delay,
                )  # fmt: skip
            with self._lock.write():
                self._build = None
                if bulk_labels is not None:
                    self._drop_labels(bulk_labels)
                else:
                    self._failures += 1
                    self._retry_at = time.monotonic() + delay
            if build.in_caller:
                raise
        else:
            log.info(
                "vector index: built %s over %d vectors (%s) in %.1f s",
                build.kind, build.live, build.reason, time.perf_counter() - started,
            )  # fmt: skip
            build.source = Snapshot()  # with ``source``, the last references to the old index
            del source
            release_free_memory()
        finally:
            build.done.set()

    def _drop_labels(self, labels: Labels) -> None:
        """Forget the ids still mapped to these labels (a failed bulk load's)."""
        for label in labels.tolist():
            episode_id = self._str_of.pop(label, None)
            if episode_id is not None:
                del self._int_of[episode_id]


def _concat(parts: list[Labels]) -> Labels:
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
