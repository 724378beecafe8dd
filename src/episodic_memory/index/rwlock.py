"""A readers-writer lock for ``VectorIndex``: searches share it, writes take it alone.

Why: FAISS searches are read-only and safe to run side by side, and so are the long reads a
save (cloning a 1M index takes ~0.6 s) or a build (copying pieces) makes. With one exclusive
lock those reads stalled every query; with this one only writes wait for them.

Writers are preferred: once a writer waits, new readers queue behind it, so a stream of
searches cannot starve ingest. Not reentrant in either mode; a thread holding a read lock
must not ask for the write lock (or for another read lock while a writer may be waiting).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["ReadWriteLock"]


class ReadWriteLock:
    """Many readers or one writer, writers first."""

    def __init__(self) -> None:
        self._condition = threading.Condition(threading.Lock())
        self._readers = 0
        self._writing = False
        self._writers_waiting = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._condition:
            while self._writing or self._writers_waiting:
                self._condition.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._condition:
                self._readers -= 1
                if not self._readers:
                    self._condition.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._condition:
            self._writers_waiting += 1
            try:
                while self._writing or self._readers:
                    self._condition.wait()
            finally:
                self._writers_waiting -= 1
            self._writing = True
        try:
            yield
        finally:
            with self._condition:
                self._writing = False
                self._condition.notify_all()
