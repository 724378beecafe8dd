"""When ``VectorIndex`` rebuilds, and the record of a build in flight.

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

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from episodic_memory.index.kinds import FaissIndex, IndexKind, IndexOptions, Piece, Snapshot

__all__ = ["Build", "plan_build", "replay"]

Vectors = npt.NDArray[np.float32]
Labels = npt.NDArray[np.int64]
SHRINK_FRACTION = 0.5
REGROW_FACTOR = 2.0


@dataclass
class Build:
    """A build in flight: what to build from, and the writes to replay onto it.

    ``copier`` yields the current index's live entries piece by piece (``None`` for a bulk
    load, whose ``snapshot`` is given whole); ``journal`` holds ``(labels, vectors)`` for adds
    and ``(labels, None)`` for removes, in order, from the moment the build was planned;
    ``in_caller`` marks a bulk load that runs in the writing thread.
    """

    kind: IndexKind
    reason: str
    live: int
    snapshot: Snapshot = field(default_factory=Snapshot)
    copier: Iterator[Piece] | None = None
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
