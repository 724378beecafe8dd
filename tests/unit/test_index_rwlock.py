"""The index's readers-writer lock, and that a save shares it with searches."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from episodic_memory.index import faiss_index
from episodic_memory.index.faiss_index import VectorIndex
from episodic_memory.index.rwlock import ReadWriteLock

WAIT_S = 30.0


def until(condition: Any) -> None:
    """Poll a condition another thread will make true (bounded, so a bug fails, not hangs)."""
    done = threading.Event()
    for _ in range(int(WAIT_S * 1000)):
        if condition():
            return
        done.wait(0.001)
    raise AssertionError("condition never became true")


def test_readers_share_and_a_writer_waits_for_them() -> None:
    lock = ReadWriteLock()
    order: list[str] = []
    with lock.read(), lock.read():  # two readers at once (from one thread, no writer waiting)

        def write() -> None:
            with lock.write():
                order.append("write")

        writer = threading.Thread(target=write)
        writer.start()
        until(lambda: lock._writers_waiting == 1)
        order.append("read")
    writer.join(WAIT_S)
    assert order == ["read", "write"]


def test_a_waiting_writer_goes_before_new_readers() -> None:
    lock = ReadWriteLock()
    order: list[str] = []
    first_read = lock.read()
    first_read.__enter__()

    def write() -> None:
        with lock.write():
            order.append("write")

    def read() -> None:
        with lock.read():
            order.append("read")

    writer = threading.Thread(target=write)
    writer.start()
    until(lambda: lock._writers_waiting == 1)
    reader = threading.Thread(target=read)
    reader.start()
    first_read.__exit__(None, None, None)
    writer.join(WAIT_S)
    reader.join(WAIT_S)
    assert order == ["write", "read"]


def test_searches_answer_while_a_save_clones_and_writes_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = np.random.default_rng(0).normal(size=(50, 16)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    index = VectorIndex(16, model="m")
    index.add([f"ep-{i}" for i in range(50)], rows)
    cloning, release = threading.Event(), threading.Event()
    real_clone = faiss_index.faiss.clone_index

    def held_clone(source: Any) -> Any:
        cloning.set()
        assert release.wait(WAIT_S)
        return real_clone(source)

    monkeypatch.setattr(faiss_index.faiss, "clone_index", held_clone)
    saver = threading.Thread(target=index.save, args=(tmp_path,))
    saver.start()
    try:
        assert cloning.wait(WAIT_S)
        assert index.search(rows[3], 1)[0][0] == "ep-3"  # a read beside the save's read
        writer = threading.Thread(target=index.remove, args=(["ep-4"],))
        writer.start()
        until(lambda: index._lock._writers_waiting == 1)
        assert "ep-4" in index  # the write waits for the clone
    finally:
        release.set()
        saver.join(WAIT_S)
    writer.join(WAIT_S)
    assert "ep-4" not in index
    loaded = VectorIndex.load(tmp_path, model="m", dim=16)
    assert loaded is not None
    assert "ep-4" in loaded  # saved as it was when the clone was taken
