"""FAISS inner-product index keyed by episode id: exact while small, HNSW past a threshold.

Measured here (notes §4): ``IndexIDMap2(IndexFlatIP)`` is exact and cheap to update up to
~50k vectors; beyond that HNSW answers in ~1 ms at recall ≥ .98 but cannot remove, so deletes
and upserts become tombstones filtered at search time, and the index is compacted when too
many are dead. String ids map to int64 by a stable hash; the reverse map is kept and saved.
Single queries run on one OpenMP thread (more threads slowed them up to 30× under load);
bulk builds may use two. Every FAISS failure surfaces as ``StorageError``.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import faiss
import numpy as np
import numpy.typing as npt
import orjson

from episodic_memory.errors import StorageError, ValidationError

__all__ = ["IndexKind", "VectorIndex"]

IndexKind = Literal["flat", "hnsw"]
Vectors = npt.NDArray[np.float32]
_INDEX_FILE = "vectors.faiss"
_META_FILE = "vectors.json"
_FORMAT = 1
_ID_MASK = 0x7FFF_FFFF_FFFF_FFFF  # non-negative: FAISS uses -1 for "no result"
_FAISS: Any = faiss  # the bundled stubs miss some SWIG classes (SearchParametersHNSW)


@contextmanager
def _omp_threads(count: int) -> Iterator[None]:
    faiss.omp_set_num_threads(count)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(1)


@contextmanager
def _faiss_errors(operation: str) -> Iterator[None]:
    try:
        yield
    except RuntimeError as exc:  # FAISS raises RuntimeError for every C++ exception
        raise StorageError(f"vector index {operation} failed: {exc}") from exc


class VectorIndex:
    """Cosine search over unit vectors with string ids, upserts and removals."""

    def __init__(
        self,
        dim: int,
        *,
        model: str = "",
        approximate_threshold: int = 50_000,
        hnsw_m: int = 32,
        ef_search: int = 128,
        ef_construction: int = 64,
        compact_ratio: float = 0.2,
        build_threads: int | None = None,
    ) -> None:
        if dim < 1:
            raise ValidationError("dim", f"must be positive, got {dim}", "use the embedder's dim")
        self.dim = dim
        self.model = model
        self.approximate_threshold = approximate_threshold
        self.hnsw_m = hnsw_m
        self.ef_search = ef_search
        self.ef_construction = ef_construction
        self.compact_ratio = compact_ratio
        self.build_threads = build_threads or min(2, os.cpu_count() or 1)
        self._lock = threading.RLock()
        self._int_of: dict[str, int] = {}
        self._str_of: dict[int, str] = {}
        self._dead: set[int] = set()  # HNSW tombstones: still in the graph, never returned
        self._params: Any = None  # cached SearchParametersHNSW, reset when tombstones change
        self._selector: Any = None
        self._kind: IndexKind = "flat"
        self._index: Any = self._new_flat()

    # --- introspection ------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._int_of)

    def __contains__(self, episode_id: object) -> bool:
        return episode_id in self._int_of

    @property
    def kind(self) -> IndexKind:
        return self._kind

    @property
    def dead(self) -> int:
        """Tombstoned vectors still held by an HNSW graph."""
        return len(self._dead)

    def ids(self) -> list[str]:
        return list(self._int_of)

    def memory_bytes(self) -> int:
        """Estimate: stored floats, HNSW links (about 2·M per vector) and the id maps."""
        total = int(self._index.ntotal)
        estimate = total * (self.dim * 4 + 16)
        if self._kind == "hnsw":
            estimate += total * self.hnsw_m * 2 * 4 + total * 16
        return estimate + len(self._int_of) * 200  # two Python dict entries per live id

    # --- writes -------------------------------------------------------------------------
    def add(self, ids: Sequence[str], vectors: npt.ArrayLike) -> None:
        """Insert or replace the vectors of ``ids`` (the last occurrence wins in a batch)."""
        if not ids:
            return
        matrix = self._check_vectors(vectors, len(ids))
        positions = {episode_id: row for row, episode_id in enumerate(ids)}
        unique = list(positions)
        matrix = matrix[[positions[episode_id] for episode_id in unique]]
        with self._lock:
            self._forget([i for i in unique if i in self._int_of])
            new_ints = np.array([self._assign(episode_id) for episode_id in unique], np.int64)
            if self._kind == "flat" and len(self._int_of) > self.approximate_threshold:
                old_ints, old_vectors = self._stored()
                self._rebuild(
                    "hnsw",
                    np.concatenate([old_ints, new_ints]),
                    np.concatenate([old_vectors, matrix]),
                )
            else:
                with _faiss_errors("add"), _omp_threads(self.build_threads):
                    self._index.add_with_ids(matrix, new_ints)
            self._maybe_compact()

    def remove(self, ids: Sequence[str]) -> int:
        """Drop these ids; unknown ids are ignored. Returns how many were present."""
        with self._lock:
            present = [episode_id for episode_id in dict.fromkeys(ids) if episode_id in self]
            self._forget(present)
            self._maybe_compact()
            return len(present)

    # --- reads --------------------------------------------------------------------------
    def search(self, vector: npt.ArrayLike, k: int) -> list[tuple[str, float]]:
        """Up to ``k`` ``(episode_id, cosine)`` pairs, most similar first."""
        query = self._check_vectors(vector, 1)
        with self._lock:
            k = min(k, len(self._int_of))
            if k <= 0:
                return []
            params = self._search_params(k)
            with _faiss_errors("search"), _omp_threads(1):
                if params is None:
                    scores, labels = self._index.search(query, k)
                else:
                    scores, labels = self._index.search(query, k, params=params)
            hits: list[tuple[str, float]] = []
            for label, score in zip(labels[0].tolist(), scores[0].tolist(), strict=True):
                episode_id = self._str_of.get(label)
                if episode_id is not None:
                    hits.append((episode_id, float(score)))
            return hits

    # --- persistence --------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        """Write the index and its id map; the metadata goes last, so a torn save is detected."""
        with self._lock:
            meta = {
                "format": _FORMAT,
                "model": self.model,
                "dim": self.dim,
                "kind": self._kind,
                "ntotal": int(self._index.ntotal),
                "ids": [[episode_id, label] for episode_id, label in self._int_of.items()],
                "dead": sorted(self._dead),
            }
            try:
                directory.mkdir(parents=True, exist_ok=True)
                index_tmp = directory / f"{_INDEX_FILE}.tmp"
                meta_tmp = directory / f"{_META_FILE}.tmp"
                with _faiss_errors("save"):
                    faiss.write_index(self._index, str(index_tmp))
                meta_tmp.write_bytes(orjson.dumps(meta))
                os.replace(index_tmp, directory / _INDEX_FILE)
                os.replace(meta_tmp, directory / _META_FILE)
            except OSError as exc:
                raise StorageError(
                    f"could not save the vector index to {directory}: {exc}"
                ) from exc

    @classmethod
    def load(cls, directory: Path, *, model: str, dim: int, **options: Any) -> VectorIndex | None:
        """The saved index, or ``None`` when absent, torn, or built by another embedder.

        ``None`` means "rebuild from the stored embeddings": the index is derived data.
        """
        try:
            meta = orjson.loads((directory / _META_FILE).read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return None
        if meta.get("format") != _FORMAT or meta.get("model") != model or meta.get("dim") != dim:
            return None
        try:
            with _faiss_errors("load"):
                index = faiss.read_index(str(directory / _INDEX_FILE))
        except (StorageError, OSError):
            return None
        if index.ntotal != meta["ntotal"] or index.d != dim:
            return None
        loaded = cls(dim, model=model, **options)
        loaded._index = index
        loaded._kind = meta["kind"]
        loaded._int_of = {episode_id: int(label) for episode_id, label in meta["ids"]}
        loaded._str_of = {label: episode_id for episode_id, label in loaded._int_of.items()}
        loaded._dead = {int(label) for label in meta["dead"]}
        return loaded

    # --- internals ----------------------------------------------------------------------
    def _check_vectors(self, vectors: npt.ArrayLike, rows: int) -> Vectors:
        matrix = np.ascontiguousarray(vectors, dtype=np.float32)
        if matrix.ndim == 1:
            matrix = matrix.reshape(1, -1)
        if matrix.ndim != 2 or matrix.shape != (rows, self.dim):
            raise ValidationError(
                "vectors",
                f"has shape {matrix.shape}, expected ({rows}, {self.dim})",
                "pass one row of the index's dimension per id",
            )
        if not np.isfinite(matrix).all():
            raise ValidationError("vectors", "contains NaN or infinity", "embed finite values")
        return matrix

    def _assign(self, episode_id: str) -> int:
        """A stable int64 for the id; salted again on a collision or a tombstoned label."""
        salt = 0
        while True:
            digest = hashlib.blake2b(f"{episode_id}\x1f{salt}".encode(), digest_size=8).digest()
            label = int.from_bytes(digest, "little") & _ID_MASK
            if label not in self._str_of and label not in self._dead:
                self._int_of[episode_id] = label
                self._str_of[label] = episode_id
                return label
            salt += 1

    def _forget(self, ids: Sequence[str]) -> None:
        if not ids:
            return
        labels = np.array([self._int_of.pop(episode_id) for episode_id in ids], dtype=np.int64)
        for label in labels.tolist():
            del self._str_of[label]
        if self._kind == "flat":
            with _faiss_errors("remove"):
                self._index.remove_ids(faiss.IDSelectorBatch(labels))  # one O(N) pass per batch
        else:
            self._dead.update(labels.tolist())
            self._params = None

    def _search_params(self, k: int) -> Any:
        if self._kind == "flat":
            return None
        if self._params is None or self._params.efSearch < k:
            params = _FAISS.SearchParametersHNSW()
            params.efSearch = max(self.ef_search, k)
            if self._dead:
                selector = faiss.IDSelectorNot(
                    faiss.IDSelectorBatch(np.fromiter(self._dead, dtype=np.int64))
                )
                params.sel = selector
                self._selector = selector  # the SWIG object must outlive the params
            self._params = params
        return self._params

    def _stored(self) -> tuple[npt.NDArray[np.int64], Vectors]:
        """Labels and vectors of every live entry, read back out of the index."""
        total = int(self._index.ntotal)
        with _faiss_errors("read-back"):
            inner: Any = faiss.downcast_index(self._index.index)
            storage: Any = faiss.downcast_index(inner.storage) if self._kind == "hnsw" else inner
            labels = faiss.vector_to_array(self._index.id_map).astype(np.int64)
            flat = faiss.rev_swig_ptr(storage.get_xb(), total * self.dim)
        vectors = np.array(flat, dtype=np.float32).reshape(total, self.dim)
        if self._dead:
            live = ~np.isin(labels, np.fromiter(self._dead, dtype=np.int64))
            labels, vectors = labels[live], vectors[live]
        return labels, vectors

    def _new_flat(self) -> Any:
        with _faiss_errors("create"):
            return faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))

    def _rebuild(self, kind: IndexKind, labels: npt.NDArray[np.int64], vectors: Vectors) -> None:
        if kind == "flat":
            index = self._new_flat()
        else:
            with _faiss_errors("create"):
                graph = faiss.IndexHNSWFlat(self.dim, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
                graph.hnsw.efConstruction = self.ef_construction
                graph.hnsw.efSearch = self.ef_search
                index = faiss.IndexIDMap2(graph)
        with _faiss_errors("build"), _omp_threads(self.build_threads):
            index.add_with_ids(np.ascontiguousarray(vectors), labels)
        self._index, self._kind = index, kind
        self._dead.clear()
        self._params = None

    def _maybe_compact(self) -> None:
        """Rebuild an HNSW graph when too much of it is dead (or it has become small)."""
        if self._kind != "hnsw" or not self._dead:
            return
        if len(self._dead) <= self.compact_ratio * int(self._index.ntotal):
            return
        labels, vectors = self._stored()
        kind: IndexKind = "hnsw" if len(labels) > self.approximate_threshold else "flat"
        self._rebuild(kind, labels, vectors)
