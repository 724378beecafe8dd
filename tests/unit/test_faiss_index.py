"""VectorIndex over real FAISS, exact kind: ids, upserts, removals, validation, basic save/load.

The approximate kinds and background builds are in ``test_faiss_index_builds.py``; the files
in ``test_faiss_index_files.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from episodic_memory.errors import ValidationError
from episodic_memory.index.faiss_index import VectorIndex

DIM = 32


def unit_rows(n: int, seed: int = 0, dim: int = DIM) -> npt.NDArray[np.float32]:
    rows = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def ids(n: int, prefix: str = "ep") -> list[str]:
    return [f"{prefix}-{i}" for i in range(n)]


def test_search_returns_the_nearest_ids_with_cosine_scores() -> None:
    vectors = unit_rows(50)
    index = VectorIndex(DIM)
    index.add(ids(50), vectors)
    hits = index.search(vectors[7], k=3)
    assert len(index) == 50
    assert hits[0] == ("ep-7", pytest.approx(1.0, abs=1e-5))
    assert [score for _, score in hits] == sorted((score for _, score in hits), reverse=True)


def test_search_on_an_empty_index_returns_nothing() -> None:
    assert VectorIndex(DIM).search(unit_rows(1)[0], k=5) == []


def test_search_asks_for_at_most_the_number_of_stored_vectors() -> None:
    index = VectorIndex(DIM)
    index.add(ids(3), unit_rows(3))
    assert len(index.search(unit_rows(1, seed=9)[0], k=10)) == 3


def test_adding_an_existing_id_replaces_its_vector() -> None:
    vectors = unit_rows(20)
    index = VectorIndex(DIM)
    index.add(ids(20), vectors)
    index.add(["ep-3"], vectors[15:16])
    assert len(index) == 20
    hits = dict(index.search(vectors[15], k=2))
    assert hits["ep-3"] == pytest.approx(1.0, abs=1e-5)
    assert index.search(vectors[3], k=1)[0][0] != "ep-3"


def test_a_repeated_id_in_one_batch_keeps_its_last_vector() -> None:
    vectors = unit_rows(2)
    index = VectorIndex(DIM)
    index.add(["same", "same"], vectors)
    assert len(index) == 1
    assert index.search(vectors[1], k=1)[0][1] == pytest.approx(1.0, abs=1e-5)


def test_removed_ids_are_never_returned_and_unknown_ids_are_ignored() -> None:
    vectors = unit_rows(30)
    index = VectorIndex(DIM)
    index.add(ids(30), vectors)
    assert index.remove(["ep-4", "ep-5", "nope"]) == 2
    found = {episode_id for episode_id, _ in index.search(vectors[4], k=30)}
    assert len(index) == 28
    assert found == set(ids(30)) - {"ep-4", "ep-5"}


def test_wrong_vector_shapes_and_non_finite_values_are_rejected() -> None:
    index = VectorIndex(DIM)
    with pytest.raises(ValidationError, match="vectors"):
        index.add(["a"], np.zeros((1, DIM + 1), dtype=np.float32))
    with pytest.raises(ValidationError, match="vectors"):
        index.add(["a", "b"], unit_rows(1))
    bad = unit_rows(1)
    bad[0, 0] = np.nan
    with pytest.raises(ValidationError, match="NaN"):
        index.add(["a"], bad)
    with pytest.raises(ValidationError, match="vectors"):
        index.search(np.zeros(DIM - 1, dtype=np.float32), k=1)


def test_save_and_load_keep_ids_vectors_and_kind(tmp_path: Path) -> None:
    vectors = unit_rows(40)
    index = VectorIndex(DIM, model="m1")
    index.add(ids(40), vectors)
    index.remove(["ep-0"])
    index.save(tmp_path)
    loaded = VectorIndex.load(tmp_path, model="m1", dim=DIM)
    assert loaded is not None
    assert len(loaded) == 39
    assert loaded.kind == "flat"
    assert loaded.search(vectors[9], k=1) == index.search(vectors[9], k=1)
    assert "ep-0" not in loaded


def test_load_refuses_an_index_built_by_another_embedder(tmp_path: Path) -> None:
    index = VectorIndex(DIM, model="hashing-v1-32")
    index.add(ids(3), unit_rows(3))
    index.save(tmp_path)
    assert VectorIndex.load(tmp_path, model="all-minilm-l6-v2", dim=DIM) is None
    assert VectorIndex.load(tmp_path, model="hashing-v1-32", dim=DIM * 2) is None


def test_load_returns_none_for_a_missing_or_torn_index(tmp_path: Path) -> None:
    assert VectorIndex.load(tmp_path, model="m", dim=DIM) is None
    index = VectorIndex(DIM, model="m")
    index.add(ids(5), unit_rows(5))
    index.save(tmp_path)
    (saved,) = tmp_path.glob("vectors-*.faiss")
    saved.write_bytes(b"not a faiss index")
    assert VectorIndex.load(tmp_path, model="m", dim=DIM) is None


def test_ids_with_a_nul_character_are_rejected() -> None:
    with pytest.raises(ValidationError, match="NUL"):
        VectorIndex(DIM).add(["a\x00b"], unit_rows(1))


def test_labels_are_never_reused_after_an_upsert_or_a_removal() -> None:
    vectors = unit_rows(3)
    index = VectorIndex(DIM)
    index.add(["a"], vectors[:1])
    index.remove(["a"])
    index.add(["a"], vectors[1:2])
    index.add(["a"], vectors[2:3])
    assert len(index) == 1
    assert index.search(vectors[2], k=1) == [("a", pytest.approx(1.0, abs=1e-5))]


def test_memory_estimate_covers_the_stored_floats_and_the_id_map() -> None:
    index = VectorIndex(DIM)
    empty = index.memory_bytes()
    index.add(ids(100), unit_rows(100))
    assert index.memory_bytes() - empty >= 100 * DIM * 4
    state = index.state()
    assert state["kind"] == "flat"
    assert state["live"] == 100
    assert state["building"] is False
