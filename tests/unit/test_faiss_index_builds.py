"""Approximate kinds and background builds of VectorIndex, over real FAISS at small sizes.

A build is held open by wrapping ``build_index`` with an event, so the tests can write and
search while it runs and then check what the swap kept. No wall-clock assertions.
"""

from __future__ import annotations

import logging
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from tests.support.child import run_python

from episodic_memory.errors import StorageError
from episodic_memory.index import faiss_index
from episodic_memory.index.faiss_index import IndexOptions, VectorIndex
from episodic_memory.index.kinds import FaissIndex, auto_nlist

DIM = 32
WAIT_S = 60.0
IVF = IndexOptions(approximate_kind="ivf", encoding="sq8")
KINDS = {
    "ivf-sq8": IVF,
    "ivf-float32": IndexOptions(approximate_kind="ivf", encoding="float32"),
    "ivf-fp16": IndexOptions(approximate_kind="ivf", encoding="fp16"),
    "hnsw-sq8": IndexOptions(approximate_kind="hnsw", encoding="sq8", hnsw_m=16),
    "hnsw-float32": IndexOptions(approximate_kind="hnsw", encoding="float32", hnsw_m=16),
}


def unit_rows(n: int, seed: int = 0) -> npt.NDArray[np.float32]:
    rows = np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def clustered_rows(n: int, seed: int = 0, centres: int = 40) -> npt.NDArray[np.float32]:
    """Points around a few centres, like embeddings of templated tasks (IVF's home ground)."""
    rng = np.random.default_rng(seed)
    middle = rng.normal(size=(centres, DIM))
    rows = (middle[rng.integers(0, centres, n)] + 0.35 * rng.normal(size=(n, DIM))).astype(
        np.float32
    )
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def ids(n: int, start: int = 0, prefix: str = "ep") -> list[str]:
    return [f"{prefix}-{i}" for i in range(start, start + n)]


def found(index: VectorIndex, vector: npt.NDArray[np.float32], k: int = 5) -> list[str]:
    return [episode_id for episode_id, _ in index.search(vector, k)]


class HeldBuild:
    """Replaces ``build_index``: each build signals ``started`` and waits for ``release``."""

    def __init__(self, real: Callable[..., Any], fail: bool = False) -> None:
        self.real = real
        self.fail = fail
        self.started = threading.Event()
        self.release = threading.Event()
        self.calls = 0

    def __call__(self, *args: Any) -> Any:
        self.calls += 1
        self.started.set()
        assert self.release.wait(WAIT_S), "test never released the build"
        if self.fail:
            raise StorageError("vector index build failed: injected")
        return self.real(*args)


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> Iterator[HeldBuild]:
    hold = HeldBuild(faiss_index.build_index)
    monkeypatch.setattr(faiss_index, "build_index", hold)
    yield hold
    hold.release.set()  # never leave a build thread waiting after a failed assertion


def grown_past_threshold(options: IndexOptions = IVF, n: int = 150) -> VectorIndex:
    """A flat index whose last add crossed the threshold (100): a background build is due."""
    index = VectorIndex(DIM, approximate_threshold=100, options=options)
    vectors = clustered_rows(n)
    index.add(ids(50), vectors[:50])  # small first batch: not a bulk load
    index.add(ids(n - 50, start=50), vectors[50:])
    return index


def test_a_background_build_does_not_block_search_add_or_remove(held: HeldBuild) -> None:
    vectors = clustered_rows(150)
    index = grown_past_threshold()
    assert held.started.wait(WAIT_S)
    assert index.building
    assert index.kind == "flat"
    assert found(index, vectors[7])[0] == "ep-7"  # answered while the build is held
    extra = unit_rows(3, seed=5)
    index.add(["late-0", "late-1", "late-2"], extra)
    index.add(["ep-9"], extra[:1] * -1)  # an upsert during the build
    assert index.remove(["ep-3", "late-1"]) == 2
    assert found(index, extra[2])[0] == "late-2"
    assert index.state()["building"] is True
    held.release.set()
    assert index.wait_for_build(WAIT_S)
    assert index.kind == "ivf"
    assert not index.building
    assert len(index) == 150 + 3 - 2
    assert found(index, extra[2])[0] == "late-2"
    assert found(index, extra[0])[0] == "late-0"
    assert found(index, -extra[0])[0] == "ep-9"
    assert "ep-3" not in index
    everything = {hit for row in np.concatenate([vectors, extra]) for hit in found(index, row, 10)}
    assert "ep-3" not in everything
    assert "late-1" not in everything


def test_a_long_journal_is_replayed_outside_the_lock_then_its_tail_under_it(
    held: HeldBuild, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(faiss_index, "_REPLAY_UNDER_LOCK", 1)
    index = grown_past_threshold()
    assert held.started.wait(WAIT_S)
    extra = unit_rows(20, seed=6)
    for n in range(20):
        index.add([f"late-{n}"], extra[n : n + 1])
    index.remove(["late-4"])
    held.release.set()
    assert index.wait_for_build(WAIT_S)
    assert index.kind == "ivf"
    assert len(index) == 150 + 19
    assert found(index, extra[13])[0] == "late-13"
    assert "late-4" not in found(index, extra[4], 20)


def test_a_failed_build_keeps_the_old_index_logs_and_is_retried_later(
    held: HeldBuild, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    held.fail = True
    held.release.set()
    monkeypatch.setattr(faiss_index, "_RETRY_DELAYS_S", (3600.0,))
    with caplog.at_level(logging.WARNING, logger=faiss_index.__name__):
        index = grown_past_threshold()
        assert index.wait_for_build(WAIT_S)
    assert index.kind == "flat"
    assert index.state()["failed_builds"] == 1
    assert "failed" in caplog.text
    assert "injected" in caplog.text
    vectors = clustered_rows(150)
    assert found(index, vectors[11])[0] == "ep-11"
    index.add(["one-more"], unit_rows(1, seed=7))  # within the retry delay: no new build
    assert held.calls == 1
    assert not index.building
    monkeypatch.setattr(faiss_index, "_RETRY_DELAYS_S", (0.0,))
    index._retry_at = 0.0  # the delay has passed
    held.fail = False
    index.add(["and-another"], unit_rows(1, seed=8))
    assert index.wait_for_build(WAIT_S)
    assert held.calls == 2
    assert index.kind == "ivf"
    assert index.state()["failed_builds"] == 0


def test_builds_run_inside_the_write_when_background_is_off() -> None:
    index = VectorIndex(DIM, approximate_threshold=100, options=IVF, background=False)
    vectors = clustered_rows(150)
    index.add(ids(50), vectors[:50])
    index.add(ids(100, start=50), vectors[50:])
    assert index.kind == "ivf"
    assert not index.building


def test_a_bulk_load_into_an_empty_index_goes_straight_to_the_approximate_kind() -> None:
    index = VectorIndex(DIM, approximate_threshold=100, options=IVF)
    vectors = clustered_rows(500)
    index.add(ids(500), vectors)
    assert index.kind == "ivf"  # built in the calling thread, before add returned
    assert not index.building
    assert found(index, vectors[42])[0] == "ep-42"


def test_a_failed_bulk_load_raises_and_adds_nothing(held: HeldBuild) -> None:
    held.fail = True
    held.release.set()
    index = VectorIndex(DIM, approximate_threshold=100, options=IVF)
    with pytest.raises(StorageError, match="injected"):
        index.add(ids(500), clustered_rows(500))
    assert len(index) == 0
    assert index.search(unit_rows(1)[0], 5) == []
    assert index.state()["failed_builds"] == 0  # the caller saw the error; nothing to retry


@pytest.mark.parametrize("name", sorted(KINDS))
def test_each_approximate_kind_keeps_recall_against_exact_search(name: str) -> None:
    n, queries, k = 4000, 100, 10
    vectors = clustered_rows(n, seed=1)
    index = VectorIndex(DIM, approximate_threshold=500, options=KINDS[name], background=False)
    index.add(ids(n), vectors)
    assert index.kind == KINDS[name].approximate_kind
    assert index.state()["encoding"] == KINDS[name].encoding
    probe = clustered_rows(queries, seed=2)
    exact = np.sort(probe @ vectors.T, axis=1)[:, -k]  # the exact 10th-best score
    right = 0
    for row, bar in zip(probe, exact, strict=True):
        rows = [int(episode_id.split("-")[1]) for episode_id in found(index, row, k)]
        right += int(np.count_nonzero(vectors[rows] @ row >= bar - 1e-5))
    assert right / (queries * k) >= 0.9


def test_hnsw_tombstones_are_compacted_by_a_background_build(held: HeldBuild) -> None:
    held.release.set()
    options = KINDS["hnsw-float32"]
    index = VectorIndex(DIM, approximate_threshold=100, options=options, compact_ratio=0.2)
    vectors = clustered_rows(400, seed=3)
    index.add(ids(400), vectors)  # bulk load: straight to HNSW
    index.remove(ids(50))  # 12.5 % dead: tombstones only
    assert index.dead == 50
    assert not index.building
    assert "ep-10" not in found(index, vectors[10], 50)
    index.remove(ids(50, start=50))  # 25 % dead: compaction is due
    assert index.wait_for_build(WAIT_S)
    assert index.kind == "hnsw"
    assert index.dead == 0
    assert len(index) == 300
    assert found(index, vectors[333])[0] == "ep-333"


def test_ivf_removes_natively_and_regrows_its_lists_as_the_set_doubles(held: HeldBuild) -> None:
    held.release.set()
    index = VectorIndex(DIM, approximate_threshold=100, options=IVF)
    vectors = clustered_rows(1300, seed=4)
    index.add(ids(400), vectors[:400])
    first_lists = index._part.nlist
    assert first_lists == auto_nlist(400)
    assert index.remove(ids(10)) == 10
    assert index.dead == 0  # no tombstones: IVF deletes in place
    assert index._part.ntotal == 390
    index.add(ids(900, start=400), vectors[400:])  # 1290 live ≥ 2 × 390
    assert index.wait_for_build(WAIT_S)
    assert index._part.nlist == auto_nlist(1290) > first_lists
    assert len(index) == 1290
    assert found(index, vectors[1000])[0] == "ep-1000"


def test_an_index_that_shrinks_goes_back_to_exact_search() -> None:
    index = VectorIndex(DIM, approximate_threshold=100, options=IVF, background=False)
    vectors = clustered_rows(300, seed=5)
    index.add(ids(300), vectors)
    assert index.kind == "ivf"
    index.remove(ids(200))  # 100 live: still within the hysteresis band
    assert index.kind == "ivf"
    index.remove(ids(60, start=200))  # 40 live < half the threshold
    assert index.kind == "flat"
    assert found(index, vectors[280])[0] == "ep-280"


def test_memory_estimate_counts_a_running_build_and_sq8_is_smaller(held: HeldBuild) -> None:
    index = grown_past_threshold(n=400)
    assert held.started.wait(WAIT_S)
    during = index.memory_bytes()
    held.release.set()
    assert index.wait_for_build(WAIT_S)
    after = index.memory_bytes()
    assert during > after
    floats = VectorIndex(DIM, approximate_threshold=100, options=KINDS["ivf-float32"])
    floats.add(ids(400), clustered_rows(400))
    assert after < floats.memory_bytes()


def test_wait_for_build_times_out_while_a_build_is_held(held: HeldBuild) -> None:
    index = grown_past_threshold()
    assert held.started.wait(WAIT_S)
    assert not index.wait_for_build(0.01)
    held.release.set()
    assert index.wait_for_build(WAIT_S)


@pytest.mark.parametrize("name", ["ivf-sq8", "ivf-fp16", "ivf-float32", "hnsw-float32"])
def test_writes_between_copied_pieces_are_neither_lost_nor_doubled(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The copy releases the lock between pieces; writes then must land exactly once."""
    index = VectorIndex(DIM, approximate_threshold=100, options=KINDS[name], compact_ratio=0.2)
    vectors = clustered_rows(800, seed=6)
    index.add(ids(400), vectors[:400])  # bulk load: approximate, built for 400
    real_pieces = FaissIndex.pieces
    steps: list[int] = []
    extra = unit_rows(4, seed=12)

    writers: list[threading.Thread] = []

    def write_mid_copy() -> None:
        index.remove(["ep-0", "ep-399", "ep-650"])  # copied already or not yet, either way
        index.add(["ep-1", "fresh-0"], extra[:2])  # an upsert and a new id

    def small_pieces(part: FaissIndex, below: int, budget_bytes: int = 0) -> Iterator[Any]:
        # One list / row per step; IVF and SQ8 read twice (a training sample, then the feed).
        for step, piece in enumerate(real_pieces(part, below, budget_bytes=1)):
            steps.append(len(piece[0]))
            if step == 1:  # the copy holds the read lock: the writes land before the next step
                writer = threading.Thread(target=write_mid_copy)
                writer.start()
                writers.append(writer)
                while not index._lock._writers_waiting and writer.is_alive():
                    writer.join(0.001)
            yield piece

    monkeypatch.setattr(FaissIndex, "pieces", small_pieces)
    index.add(ids(400, start=400), vectors[400:])  # IVF: doubled, so it regrows
    if name.startswith("hnsw"):
        index.remove(ids(200, start=100))  # a quarter dead: compaction
    assert index.wait_for_build(WAIT_S)
    for writer in writers:
        writer.join(WAIT_S)
    assert len(steps) > 2
    live = {*ids(800)} - {"ep-0", "ep-399", "ep-650"} - (
        set(ids(200, start=100)) if name.startswith("hnsw") else set()
    ) | {"fresh-0"}
    assert set(index.ids()) == live
    # HNSW tombstones the two entries removed after their piece was copied (ep-0 and ep-1's
    # old vector) and nothing for the ones removed before: nothing doubled, nothing left over.
    assert index.dead == (2 if name.startswith("hnsw") else 0)
    assert index._part.ntotal == len(live) + index.dead
    assert found(index, extra[0])[0] == "ep-1"
    assert found(index, extra[1])[0] == "fresh-0"
    assert "ep-650" not in found(index, vectors[650], 20)


FREED_HEAP_PROBE = textwrap.dedent(
    """
    from episodic_memory.index.builds import release_free_memory

    def rss_mb():
        return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20

    blocks = [bytearray(64 * 1024) for _ in range(4000)]  # 250 MB of heap, like IVF lists
    pin = bytearray(64 * 1024)  # the heap's top stays in use, so freeing cannot shrink it
    del blocks
    before = rss_mb()
    assert release_free_memory()
    print(round(before - rss_mb()))
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc_trim")
def test_memory_freed_inside_the_heap_is_handed_back_to_the_os() -> None:
    # A child process: what this one has allocated is not the test's business.
    result = run_python(FREED_HEAP_PROBE)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.strip()) > 150  # MB returned out of the 250 freed
