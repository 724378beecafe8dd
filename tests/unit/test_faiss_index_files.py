"""Saving and loading VectorIndex: every kind round-trips, and torn or stale saves load as None."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import pytest

from episodic_memory.errors import StorageError
from episodic_memory.index import vector_files
from episodic_memory.index.faiss_index import IndexOptions, VectorIndex

DIM = 32
WAIT_S = 60.0
OPTIONS = {
    "ivf-sq8": IndexOptions(approximate_kind="ivf", encoding="sq8"),
    "ivf-float32": IndexOptions(approximate_kind="ivf", encoding="float32"),
    "ivf-fp16": IndexOptions(approximate_kind="ivf", encoding="fp16"),
    "hnsw-fp16": IndexOptions(approximate_kind="hnsw", encoding="fp16", hnsw_m=16),
    "hnsw-sq8": IndexOptions(approximate_kind="hnsw", encoding="sq8", hnsw_m=16),
    "hnsw-float32": IndexOptions(approximate_kind="hnsw", encoding="float32", hnsw_m=16),
}


def unit_rows(n: int, seed: int = 0) -> npt.NDArray[np.float32]:
    rows = np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def ids(n: int, start: int = 0) -> list[str]:
    return [f"ep-{i}" for i in range(start, start + n)]


def approximate(name: str, n: int = 400) -> VectorIndex:
    index = VectorIndex(DIM, model="m", approximate_threshold=100, options=OPTIONS[name])
    index.add(ids(n), unit_rows(n))
    return index


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_every_approximate_kind_round_trips_with_its_removals(name: str, tmp_path: Path) -> None:
    index = approximate(name)
    index.remove(["ep-1", "ep-2"])
    index.add(["ep-3"], unit_rows(1, seed=9))  # an upsert
    assert not index.building
    index.save(tmp_path)
    loaded = VectorIndex.load(
        tmp_path, model="m", dim=DIM, approximate_threshold=100, options=OPTIONS[name]
    )
    assert loaded is not None
    assert not loaded.building  # nothing due: same kind and configuration
    assert loaded.state() == index.state()
    probes = unit_rows(20, seed=3)
    for row in probes:
        assert loaded.search(row, 10) == index.search(row, 10)
    assert "ep-1" not in loaded
    assert loaded.search(unit_rows(1, seed=9)[0], 1)[0][0] == "ep-3"


def test_a_loaded_index_hands_out_fresh_labels(tmp_path: Path) -> None:
    index = approximate("ivf-sq8")
    index.save(tmp_path)
    loaded = VectorIndex.load(tmp_path, model="m", dim=DIM, options=OPTIONS["ivf-sq8"])
    assert loaded is not None
    new = unit_rows(1, seed=11)
    loaded.add(["new"], new)
    assert loaded.search(new[0], 1)[0][0] == "new"
    assert len(loaded) == 401
    assert loaded.search(unit_rows(400)[5], 1)[0][0] == "ep-5"


def test_a_load_with_another_configured_kind_rebuilds_in_the_background(tmp_path: Path) -> None:
    approximate("ivf-float32").save(tmp_path)  # exact vectors: rebuilt from themselves
    loaded = VectorIndex.load(
        tmp_path, model="m", dim=DIM, approximate_threshold=100, options=OPTIONS["hnsw-float32"]
    )
    assert loaded is not None
    assert loaded.wait_for_build(WAIT_S)
    assert loaded.kind == "hnsw"
    assert len(loaded) == 400


@pytest.mark.parametrize(
    ("saved", "configured"),
    [("ivf-sq8", "ivf-float32"), ("ivf-fp16", "ivf-sq8"), ("hnsw-sq8", "ivf-fp16")],
)
def test_a_rounded_index_under_another_configuration_loads_as_none(
    saved: str, configured: str, tmp_path: Path
) -> None:
    """Its codes are all it holds: re-encoding them would keep the old rounding error, so the
    caller rebuilds from the stored embeddings instead."""
    approximate(saved).save(tmp_path)
    options = OPTIONS[configured]
    assert VectorIndex.load(tmp_path, model="m", dim=DIM, options=options) is None
    same = VectorIndex.load(tmp_path, model="m", dim=DIM, options=OPTIONS[saved])
    assert same is not None
    assert len(same) == 400


def test_stale_embedder_name_or_dim_loads_as_none(tmp_path: Path) -> None:
    approximate("ivf-sq8").save(tmp_path)
    assert VectorIndex.load(tmp_path, model="other", dim=DIM) is None
    assert VectorIndex.load(tmp_path, model="m", dim=DIM * 2) is None


def test_a_format_1_save_loads_as_none_so_it_is_rebuilt(tmp_path: Path) -> None:
    meta = {"format": 1, "model": "m", "dim": DIM, "kind": "flat", "ntotal": 0, "ids": []}
    (tmp_path / "vectors.json").write_bytes(orjson.dumps(meta))
    (tmp_path / "vectors.faiss").write_bytes(b"old")
    assert VectorIndex.load(tmp_path, model="m", dim=DIM) is None
    index = VectorIndex(DIM, model="m")
    index.add(ids(3), unit_rows(3))
    index.save(tmp_path)
    assert not (tmp_path / "vectors.faiss").exists()  # the old file is cleaned up
    assert VectorIndex.load(tmp_path, model="m", dim=DIM) is not None


def test_a_save_torn_before_its_metadata_leaves_the_previous_one_loadable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = VectorIndex(DIM, model="m")
    first.add(ids(10), unit_rows(10))
    first.save(tmp_path)
    first.add(ids(5, start=10), unit_rows(5, seed=1))

    def crash(*_args: Any) -> None:
        raise OSError("disk pulled")

    real_replace = os.replace
    monkeypatch.setattr(vector_files.os, "replace", crash)
    with pytest.raises(StorageError, match="disk pulled"):
        first.save(tmp_path)
    monkeypatch.setattr(vector_files.os, "replace", real_replace)
    loaded = VectorIndex.load(tmp_path, model="m", dim=DIM)
    assert loaded is not None
    assert len(loaded) == 10
    first.save(tmp_path)  # a good save removes the torn one's files
    assert len(list(tmp_path.glob("vectors-*"))) == 2
    again = VectorIndex.load(tmp_path, model="m", dim=DIM)
    assert again is not None
    assert len(again) == 15


@pytest.mark.parametrize("suffix", [".faiss", ".ids.npz"])
def test_a_truncated_data_file_loads_as_none(suffix: str, tmp_path: Path) -> None:
    approximate("ivf-sq8").save(tmp_path)
    (data,) = tmp_path.glob(f"vectors-*{suffix}")
    data.write_bytes(data.read_bytes()[:-10])
    assert VectorIndex.load(tmp_path, model="m", dim=DIM) is None


def test_metadata_naming_a_path_outside_the_folder_is_refused(tmp_path: Path) -> None:
    approximate("ivf-sq8", n=150).save(tmp_path)
    meta = orjson.loads((tmp_path / "vectors.json").read_bytes())
    meta["generation"] = "../../elsewhere"
    (tmp_path / "vectors.json").write_bytes(orjson.dumps(meta))
    assert VectorIndex.load(tmp_path, model="m", dim=DIM) is None


def test_an_empty_index_round_trips(tmp_path: Path) -> None:
    VectorIndex(DIM, model="m").save(tmp_path)
    loaded = VectorIndex.load(tmp_path, model="m", dim=DIM)
    assert loaded is not None
    assert len(loaded) == 0
    assert loaded.search(unit_rows(1)[0], 3) == []
