"""One owner per data folder: an exclusive ``flock`` on ``<data_dir>/.lock``.

The embedded store (a ``file:`` database in the data folder) and its LMDB cache have exactly
one writer, the ``StorageService`` that holds this lock. A second opener — another process, or
another service in this one — gets ``DataFolderLocked`` naming the folder and the holder's PID
instead of two writers racing. The kernel releases the lock when the holder exits, however it
exits (``kill -9`` included), so a restarted storage actor simply takes it again.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from episodic_memory.errors import DataFolderLocked, StorageError

__all__ = ["FolderLock"]

LOCK_NAME = ".lock"


class FolderLock:
    """An exclusive, non-blocking lock on a data folder, held until ``release()``."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> FolderLock:
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StorageError(f"cannot create the lock file {self.path}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            raise DataFolderLocked(self.data_dir.resolve(), holder, os.getpid()) from None
        except OSError as exc:
            os.close(fd)
            raise StorageError(f"cannot lock {self.path}: {exc}") from exc
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the descriptor drops the flock


def _read_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode().strip() or "x")
    except (OSError, ValueError):
        return None
