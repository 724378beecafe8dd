"""On-disk form of a ``VectorIndex``: quick to write and read at 1M vectors, safe to tear.

Why this layout: format 1 kept every id inside the JSON metadata (tens of MB of JSON to build
and parse at 1M). Format 2 writes three files per save, tagged with a random generation:

- ``vectors-<generation>.faiss``: the FAISS index (``faiss.write_index``);
- ``vectors-<generation>.ids.npz``: labels and tombstones as int64 arrays and the episode ids
  as one NUL-joined UTF-8 blob (episode ids cannot contain NUL);
- ``vectors.json``: the metadata, written last (temporary file, fsync, rename) and naming the
  generation and the byte size of both data files.

A crash mid-save leaves the old metadata pointing at the old generation, whose files are only
deleted once the new metadata is in place; a truncated file fails the size check. Anything
missing, torn, of another format or made by another embedder loads as ``None``, which
callers answer by rebuilding from the stored embeddings (the index is derived data).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import re
import secrets
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt
import orjson

from episodic_memory.errors import StorageError
from episodic_memory.index.kinds import faiss_errors

__all__ = ["FORMAT", "META_FILE", "SavedIndex", "id_map_arrays", "read_saved", "write_saved"]

log = logging.getLogger(__name__)

FORMAT = 2
META_FILE = "vectors.json"
_GENERATION = re.compile(r"[0-9a-f]{16}")
_SEPARATOR = "\x00"
_SLICE = 32_768  # entries handled between GIL releases


@dataclass
class SavedIndex:
    """What ``read_saved`` found: checked metadata, the FAISS index and the id map."""

    meta: dict[str, Any]
    index: Any
    labels: npt.NDArray[np.int64]
    ids: list[str]
    dead: npt.NDArray[np.int64]


def write_saved(
    directory: Path,
    meta: dict[str, Any],
    index: Any,
    labels: npt.NDArray[np.int64],
    ids: list[str],
    dead: npt.NDArray[np.int64],
) -> None:
    """Write one generation, then the metadata that points at it, then drop older files."""
    generation = secrets.token_hex(8)
    index_path = directory / f"vectors-{generation}.faiss"
    ids_path = directory / f"vectors-{generation}.ids.npz"
    blob = _joined_ids(ids)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with faiss_errors("save"):
            faiss.write_index(index, str(index_path))
        _sync_path(index_path)
        with ids_path.open("wb") as file:
            np.savez(file, labels=labels, dead=dead, ids=np.frombuffer(blob, dtype=np.uint8))
            file.flush()
            os.fsync(file.fileno())
        full = {
            **meta,
            "format": FORMAT,
            "generation": generation,
            "index_bytes": index_path.stat().st_size,
            "ids_bytes": ids_path.stat().st_size,
        }
        temporary = directory / f"{META_FILE}.tmp"
        with temporary.open("wb") as file:
            file.write(orjson.dumps(full))
            os.fsync(file.fileno())
        os.replace(temporary, directory / META_FILE)
        _sync_directory(directory)
    except OSError as exc:
        raise StorageError(f"could not save the vector index to {directory}: {exc}") from exc
    for stale in directory.glob("vectors*"):  # a failed clean-up is retried by the next save
        older = stale.name.startswith("vectors-") and generation not in stale.name
        if older or stale.name == "vectors.faiss":  # "vectors.faiss": a format 1 leftover
            with contextlib.suppress(OSError):
                stale.unlink(missing_ok=True)


def id_map_arrays(mapping: dict[str, int]) -> tuple[list[str], npt.NDArray[np.int64]]:
    """The ids and their labels, a slice at a time: one C call over a 1M-entry dict holds the
    GIL for tens of ms, and query threads would wait that long. Call it under a lock that
    keeps writers out, so the dict cannot change in between."""
    ids: list[str] = []
    labels: list[npt.NDArray[np.int64]] = []
    entries = iter(mapping.items())
    while chunk := list(itertools.islice(entries, _SLICE)):
        ids.extend(episode_id for episode_id, _ in chunk)
        labels.append(np.fromiter((label for _, label in chunk), np.int64, len(chunk)))
        time.sleep(0)  # let the GIL go
    return ids, (np.concatenate(labels) if labels else np.zeros(0, dtype=np.int64))


def _joined_ids(ids: list[str], slice_size: int = _SLICE) -> bytes:
    """NUL-joined UTF-8, a slice at a time with the GIL let go in between (joining 1M ids in
    one call holds it ~100 ms, and query threads would wait that long)."""
    parts: list[bytes] = []
    for start in range(0, len(ids), slice_size):
        chunk = _SEPARATOR.join(ids[start : start + slice_size])
        parts.append(chunk.encode("utf-8", "surrogatepass"))
        time.sleep(0)
    return _SEPARATOR.encode().join(parts)


def read_saved(directory: Path, *, model: str, dim: int) -> SavedIndex | None:
    """The saved index if it is complete and was made by this embedder, else ``None``."""
    try:
        meta = orjson.loads((directory / META_FILE).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        log.info("saved vector index has another format (%s); rebuild", _format_of(meta))
        return None
    if meta.get("model") != model or meta.get("dim") != dim:
        return None
    generation = meta.get("generation")
    if not isinstance(generation, str) or not _GENERATION.fullmatch(generation):
        return None
    index_path = directory / f"vectors-{generation}.faiss"
    ids_path = directory / f"vectors-{generation}.ids.npz"
    try:
        if (
            index_path.stat().st_size != meta["index_bytes"]
            or ids_path.stat().st_size != meta["ids_bytes"]
        ):
            return None
        index = faiss.read_index(str(index_path))
        with np.load(ids_path, allow_pickle=False) as arrays:
            labels = np.asarray(arrays["labels"], dtype=np.int64)
            dead = np.asarray(arrays["dead"], dtype=np.int64)
            blob = arrays["ids"].tobytes()
        ids = blob.decode("utf-8", "surrogatepass").split(_SEPARATOR) if len(labels) else []
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, EOFError, zipfile.BadZipFile):
        return None  # unreadable or torn: the caller rebuilds
    if len(ids) != len(labels) or int(index.ntotal) != meta.get("ntotal") or index.d != dim:
        return None
    return SavedIndex(meta, index, labels, ids, dead)


def _format_of(meta: object) -> object:
    return meta.get("format") if isinstance(meta, dict) else None


def _sync_path(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _sync_directory(directory: Path) -> None:
    """Make the rename durable; some filesystems cannot open a directory, which is fine."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
