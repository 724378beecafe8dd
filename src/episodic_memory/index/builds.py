"""When ``VectorIndex`` rebuilds, what a build reads, and the record of a build in flight.

Why separate: the policy is a pure function of the index's state, easy to read and test on
its own, while ``VectorIndex`` owns the threads and the lock. The rules:

- flat past the threshold → the configured approximate kind;
- an approximate index below half the threshold → flat again (hysteresis, so a set hovering
  around the threshold doesn't flap);
- an approximate index of another kind or encoding than configured → the configured one;
- HNSW with more than ``compact_ratio`` of its graph tombstoned → compacted;
- IVF with automatic lists, once the set has doubled since its build → more lists (√N), so
  lists stay short and search time flat as the memory grows.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import cast

import numpy as np
import numpy.typing as npt

from episodic_memory.index.kinds import (
    BATCH_ROWS,
    FaissIndex,
    IndexKind,
    IndexOptions,
    Piece,
)
from episodic_memory.index.rwlock import ReadWriteLock

__all__ = ["Build", "LiveCopy", "Snapshot", "plan_build", "release_free_memory", "replay"]

Vectors = npt.NDArray[np.float32]
Labels = npt.NDArray[np.int64]
SHRINK_FRACTION = 0.5
REGROW_FACTOR = 2.0


@dataclass
class Snapshot:
    """Entries held in memory as pieces of float rows or SQ8 codes (a ``Source``).

    A bulk load is one piece (the caller's matrix); ``LiveCopy`` gathers pieces of a live
    index a few at a time. Decoding SQ8 codes happens per batch, on the build thread, so
    the decoded float copy of the whole set never exists at once.
    """

    parts: list[Piece] = field(default_factory=list)

    @property
    def count(self) -> int:
        return sum(len(labels) for labels, _, _ in self.parts)

    def labels(self) -> Labels:
        if not self.parts:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate([labels for labels, _, _ in self.parts])

    def sample(self, count: int) -> Vectors:
        """Up to ``count`` decoded rows spread over the whole snapshot (for training)."""
        total = self.count
        rows = np.arange(total)
        if total > count:
            rows = np.sort(np.random.default_rng(0).choice(total, size=count, replace=False))
        chosen: list[Vectors] = []
        offset = 0
        for labels, decoder, data in self.parts:
            mine = rows[(rows >= offset) & (rows < offset + len(labels))] - offset
            if len(mine):
                chosen.append(data[mine] if decoder is None else decoder(data[mine]))
            offset += len(labels)
        return np.ascontiguousarray(np.concatenate(chosen), dtype=np.float32)

    def batches(self, rows: int = BATCH_ROWS) -> Iterator[tuple[Labels, Vectors]]:
        """Decoded ``(labels, vectors)`` batches of about ``rows``; pieces are dropped as used.

        Batches stay small because joining them holds the GIL: query threads would wait.
        """
        labels: list[Labels] = []
        vectors: list[Vectors] = []
        held = 0
        while self.parts:
            piece_labels, decoder, data = self.parts.pop(0)
            for start in range(0, len(piece_labels), rows):
                chunk = data[start : start + rows]
                labels.append(piece_labels[start : start + rows])
                vectors.append(chunk if decoder is None else decoder(chunk))
                held += len(chunk)
                if held >= rows:
                    yield _joined(labels, vectors)
                    labels, vectors, held = [], [], 0
        if labels:
            yield _joined(labels, vectors)


def _joined(labels: list[Labels], vectors: list[Vectors]) -> tuple[Labels, Vectors]:
    if len(vectors) == 1:  # a slice of the caller's matrix: no copy
        return labels[0], np.ascontiguousarray(vectors[0], dtype=np.float32)
    return np.concatenate(labels), np.ascontiguousarray(np.concatenate(vectors), np.float32)


class LiveCopy:
    """The current index's live entries as a build ``Source``, read under the read lock a piece
    at a time (``FaissIndex.pieces``), so writes interleave with the copy.

    Two passes: one keeps a random sample for training, the next feeds the new index batch
    by batch. Nothing but a batch is held, so a rebuild needs the old and the new index in
    memory, not a third copy. Entries that change between the passes are fine: training only
    needs a sample, and the journal (started before the first pass) replays every write.
    """

    def __init__(self, part: FaissIndex, below: int, lock: ReadWriteLock, count: int) -> None:
        self.part = part
        self.below = below
        self.lock = lock
        self._count = count
        self.copied: list[Labels] = []  # what the feeding pass copied, for ``replay``

    @property
    def count(self) -> int:
        return self._count

    def sample(self, count: int) -> Vectors:
        keep = min(1.0, count / max(self._count, 1))
        rng = np.random.default_rng(0)
        chosen: list[Vectors] = []
        for labels, decoder, data in self._pieces():
            rows = np.flatnonzero(rng.random(len(labels)) < keep)
            if len(rows):
                chosen.append(data[rows] if decoder is None else decoder(data[rows]))
        if not chosen:
            return np.zeros((0, int(self.part.index.d)), dtype=np.float32)
        return np.ascontiguousarray(np.concatenate(chosen), dtype=np.float32)

    def batches(self) -> Iterator[tuple[Labels, Vectors]]:
        pending = Snapshot()
        held = 0
        for piece in self._pieces():
            self.copied.append(piece[0])
            pending.parts.append(piece)
            held += len(piece[0])
            if held >= BATCH_ROWS:
                yield from pending.batches()
                held = 0
        yield from pending.batches()

    def _pieces(self) -> Iterator[Piece]:
        copier = self.part.pieces(self.below)
        while True:
            with self.lock.read():  # a read: searches go on while a piece is copied
                piece = next(copier, None)
            if piece is None:
                return
            yield piece


@dataclass
class Build:
    """A build in flight: what to build from, and the writes to replay onto it.

    ``source`` is a ``LiveCopy`` of the current index, or for a bulk load (``in_caller``: it
    runs in the writing thread) a ``Snapshot`` of the caller's matrix. ``journal`` holds
    ``(labels, vectors)`` for adds and ``(labels, None)`` for removes, in order, from the
    moment the build was planned.
    """

    kind: IndexKind
    reason: str
    live: int
    source: LiveCopy | Snapshot
    in_caller: bool = False
    journal: list[tuple[Labels, Vectors | None]] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)


def plan_build(
    part: FaissIndex,
    live: int,
    *,
    threshold: int,
    options: IndexOptions,
    compact_ratio: float,
    built_for: int,
) -> tuple[IndexKind, str] | None:
    """The kind to rebuild into and why, or ``None`` when the current index is fine."""
    wanted = options.approximate_kind
    if part.kind == "flat":
        return (wanted, "grew past the threshold") if live > threshold else None
    if live < threshold * SHRINK_FRACTION:
        return ("flat", "shrank below the threshold")
    if part.kind != wanted or part.encoding != options.encoding:
        return (wanted, "the configured kind changed")
    if part.kind == "hnsw" and len(part.dead) > compact_ratio * part.ntotal:
        return ("hnsw", "too many tombstones")
    if part.kind == "ivf" and not options.ivf_nlist and live >= REGROW_FACTOR * built_for:
        return ("ivf", "grew: more lists")
    return None


def replay(
    index: FaissIndex,
    journal: list[tuple[Labels, Vectors | None]],
    known: Labels,
    added: set[int],
) -> None:
    """Apply journaled writes in order onto a freshly built index.

    ``known`` (sorted) are the snapshot's labels and ``added`` the labels replayed so far: a
    remove only touches those, because an entry removed before its piece was copied is not in
    the new index (HNSW would otherwise keep a tombstone for nothing).
    """
    for labels, vectors in journal:
        if vectors is None:
            position = np.searchsorted(known, labels).clip(max=max(len(known) - 1, 0))
            copied = known[position] == labels if len(known) else np.zeros(len(labels), bool)
            later = np.fromiter((label in added for label in labels.tolist()), bool, len(labels))
            index.remove(labels[copied | later])
        else:
            index.add(labels, vectors)
            added.update(labels.tolist())


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, looked up once (``find_library`` runs ``ldconfig``)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return cast(Callable[[int], int], trim)


def release_free_memory() -> bool:
    """Hand the heap's free pages back to the OS (glibc ``malloc_trim``): whether any were.

    A rebuild holds the old and the new index at once, then frees the old one; its inverted
    lists (~0.5 MB each) came from the heap, not from their own mappings, and stay resident
    after being freed: the index actor was at 8.2 GB after growing to a million episodes, 3.0
    GB once restarted (4.2 GB after growing, with this). A save's clone is the same: at 1M a
    2 GB clone stayed resident once freed until trimmed (146 ms; each heap arena is locked
    while it is trimmed, so a thread allocating there waits that long at most).
    """
    trim = _malloc_trim()
    return trim is not None and bool(trim(0))
