"""Learned neighbours saved as arrays come back equal, and keep learning after a reload."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from episodic_memory.core import neighbours_state
from episodic_memory.core.neighbours import TaskNeighbours

NAMES = ["alice", "bob", "carol", "dave"]


def trained() -> TaskNeighbours:
    index = TaskNeighbours()
    for i in range(6):
        for name in NAMES:
            index.add(f"c-{name}-{i}", "shop", {"cancel", "pending", name}, {"find", "cancel"})
            index.add(f"r-{name}-{i}", "shop", {"return", "received", name}, {"find", "refund"})
    index.add("f-1", "air", {"book", "flight"}, {"search"})
    index.add("empty", "air", set(), {"search"})
    return index


def test_a_saved_index_reads_back_equal(tmp_path: Path) -> None:
    original = trained()
    original.remove(["c-alice-0", "r-bob-3"])
    original.add("c-bob-0", "shop", {"cancel", "pending", "bob", "urgent"}, {"cancel"})  # re-add
    path = tmp_path / "n.npz"
    neighbours_state.write(neighbours_state.snapshot(original), path)
    restored = neighbours_state.read(path)
    assert restored.to_state() == original.to_state()
    assert len(restored) == len(original)
    for domain, terms in (("shop", {"cancel", "alice"}), ("shop", {"return"}), ("air", {"book"})):
        assert restored.search(domain, terms, 10) == original.search(domain, terms, 10)
        assert restored.weights(domain, terms) == original.weights(domain, terms)


def test_a_restored_index_keeps_learning_and_forgetting(tmp_path: Path) -> None:
    path = tmp_path / "n.npz"
    neighbours_state.write(neighbours_state.snapshot(trained()), path)
    restored, fresh = neighbours_state.read(path), trained()
    for index in (restored, fresh):
        index.add(
            "x-new", "shop", {"cancel", "pending", "zoe", "brand-new-word"}, {"cancel", "new"}
        )
        index.add("d-new", "docs", {"write", "readme"}, {"edit"})
        index.remove(["c-dave-5"])
    assert restored.to_state() == fresh.to_state()
    assert restored.search("shop", {"cancel", "zoe"}, 5) == fresh.search(
        "shop", {"cancel", "zoe"}, 5
    )


def test_a_snapshot_is_a_copy_not_a_view(tmp_path: Path) -> None:
    index = trained()
    copy = neighbours_state.snapshot(index)
    index.add("later", "shop", {"cancel"}, {"cancel"})
    neighbours_state.write(copy, tmp_path / "n.npz")
    assert "later" not in {
        i
        for rows in neighbours_state.read(tmp_path / "n.npz").to_state().values()
        for i, *_ in rows
    }


def test_a_foreign_or_torn_file_is_refused(tmp_path: Path) -> None:
    torn = tmp_path / "torn.npz"
    neighbours_state.write(neighbours_state.snapshot(trained()), torn)
    torn.write_bytes(torn.read_bytes()[:100])
    with pytest.raises((ValueError, OSError, KeyError)):
        neighbours_state.read(torn)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, meta=np.frombuffer(b'{"format": 99}', dtype=np.uint8))
    with pytest.raises(ValueError, match="format"):
        neighbours_state.read(foreign)
