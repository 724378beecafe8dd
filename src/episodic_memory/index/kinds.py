"""The FAISS index kinds ``VectorIndex`` switches between, behind one small interface.

Why one interface: ``VectorIndex`` builds a replacement index in the background and swaps it in,
so every kind must add, remove, search, snapshot its live vectors and report its memory the
same way. The kinds differ where it matters (measured in ``benchmarks/index_bench.py``):

- ``flat``: ``IndexIDMap2(IndexFlatIP)``, exact; removes natively in one O(N) pass per batch.
  Its cost grows linearly (1024-d: ~2.5 ms a query at 10k, ~20 ms at 100k, ~190 ms at 1M).
- ``ivf``: ``IndexIVFFlat`` / ``IndexIVFScalarQuantizer`` with about √N lists, 8 probed. Trains
  k-means in seconds, stores its own int64 ids and removes natively (hashtable direct map),
  so deletes need no tombstones. ``sq8`` stores a byte per dimension (a quarter of the
  memory) but its rounding reorders near-ties; ``fp16`` stores two and keeps the order. On
  hashed task texts at 1M (index_bench, nprobe 8): recall@10 .978 / .999 / .999 for sq8 /
  fp16 / float32, ~1.3 / 1.4 / 6.7 ms a query, 1.6 / 2.9 / 5.3 GB, built in about a minute.
- ``hnsw``: ``IndexIDMap2(IndexHNSWFlat / IndexHNSWSQ)``. Fast queries, but it cannot remove
  (removals are tombstones filtered at search time until a rebuild), builds take minutes at
  1M on one thread, and a build must add the whole set in one call (see ``build_index``).

Instances are not thread-safe; ``VectorIndex`` serialises access with its lock. Every FAISS
failure surfaces as ``StorageError``.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import faiss
import numpy as np
import numpy.typing as npt

from episodic_memory.config import IndexConfig
from episodic_memory.errors import StorageError, ValidationError

__all__ = [
    "Decoder",
    "Encoding",
    "FaissIndex",
    "IndexKind",
    "IndexOptions",
    "Piece",
    "Source",
    "auto_nlist",
    "build_index",
    "check_vectors",
    "empty_flat",
    "estimate_bytes",
    "faiss_errors",
    "omp_threads",
]

IndexKind = Literal["flat", "hnsw", "ivf"]
Encoding = Literal["float32", "sq8", "fp16"]
Vectors = npt.NDArray[np.float32]
Labels = npt.NDArray[np.int64]
_FAISS: Any = faiss  # the bundled stubs miss some SWIG classes (SearchParametersHNSW)
_TRAIN_POINTS_PER_LIST = 40  # FAISS warns below 39 points per centroid
BATCH_ROWS = 8_192  # rows decoded and added to a new index at a time
_MAP_ENTRY_BYTES = 40  # one std::unordered_map node (IDMap2 reverse map, IVF direct map)
_IVF_LIST_SLACK = 1.35
_QTYPES = {"sq8": faiss.ScalarQuantizer.QT_8bit, "fp16": faiss.ScalarQuantizer.QT_fp16}
_BYTES_PER_DIM = {"float32": 4, "fp16": 2, "sq8": 1}


@contextmanager
def omp_threads(count: int) -> Iterator[None]:
    """Use ``count`` OpenMP threads in this thread, then 1 again (single queries are faster)."""
    faiss.omp_set_num_threads(count)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(1)


@contextmanager
def faiss_errors(operation: str) -> Iterator[None]:
    try:
        yield
    except RuntimeError as exc:  # FAISS raises RuntimeError for every C++ exception
        raise StorageError(f"vector index {operation} failed: {exc}") from exc


@dataclass(frozen=True)
class IndexOptions:
    """Knobs of the approximate kinds; the defaults are ``IndexConfig``'s (which says why)."""

    approximate_kind: Literal["hnsw", "ivf"] = "ivf"
    encoding: Encoding = "fp16"
    hnsw_m: int = 32
    ef_search: int = 128
    ef_construction: int = 64
    ivf_nlist: int = 0  # 0: about sqrt(N) lists, chosen at each build
    ivf_nprobe: int = 16
    ivf_train_iterations: int = 10
    build_threads: int = 1  # a busy 2-core host built no faster with 2 (OpenMP spin-waits)

    @classmethod
    def from_config(cls, config: IndexConfig) -> IndexOptions:
        return cls(
            approximate_kind=config.approximate_kind,
            encoding=config.approximate_encoding,
            hnsw_m=config.hnsw_m,
            ef_search=config.hnsw_ef_search,
            ef_construction=config.hnsw_ef_construction,
            ivf_nlist=config.ivf_nlist,
            ivf_nprobe=config.ivf_nprobe,
            ivf_train_iterations=config.ivf_train_iterations,
            build_threads=config.build_threads,
        )


def auto_nlist(live: int) -> int:
    """About √N lists, never fewer training points per list than FAISS asks for."""
    return max(1, min(round(math.sqrt(live)), live // _TRAIN_POINTS_PER_LIST))


Decoder = Callable[[npt.NDArray[Any]], Vectors]
Piece = tuple[Labels, Decoder | None, npt.NDArray[Any]]  # labels, decoder, rows or raw codes


class Source(Protocol):
    """What a build reads: how many entries, a training sample, then every entry in batches."""

    @property
    def count(self) -> int: ...

    def sample(self, count: int) -> Vectors: ...

    def batches(self) -> Iterator[tuple[Labels, Vectors]]: ...


class FaissIndex:
    """One FAISS index of one kind, keyed by int64 labels; tombstones where it can't remove."""

    def __init__(
        self, kind: IndexKind, index: Any, options: IndexOptions, dead: set[int] | None = None
    ) -> None:
        self.kind = kind
        self.index = index
        self.options = options
        self.dead: set[int] = dead or set()  # HNSW only: in the graph, never returned
        # Cached HNSW search parameters and the selector they point at, reset when ``dead``
        # changes (under the write lock, so never while a search runs).
        self._params: tuple[Any, Any] | None = None
        self._params_lock = threading.Lock()
        if kind == "ivf":
            faiss.extract_index_ivf(index).nprobe = min(options.ivf_nprobe, self.nlist)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def nlist(self) -> int:
        return int(faiss.extract_index_ivf(self.index).nlist) if self.kind == "ivf" else 0

    @property
    def encoding(self) -> Encoding:
        if self.kind == "flat":
            return "float32"
        inner: Any = faiss.downcast_index(self.index.index if self.kind == "hnsw" else self.index)
        if isinstance(inner, faiss.IndexHNSWSQ):
            inner = faiss.downcast_index(inner.storage)
        if not isinstance(inner, faiss.IndexIVFScalarQuantizer | faiss.IndexScalarQuantizer):
            return "float32"
        return "fp16" if inner.sq.qtype == faiss.ScalarQuantizer.QT_fp16 else "sq8"

    def add(self, labels: Labels, vectors: Vectors) -> None:
        if len(labels):
            with faiss_errors("add"):
                self.index.add_with_ids(vectors, labels)

    def remove(self, labels: Labels) -> None:
        """Drop labels; HNSW keeps them as tombstones. Labels must be present."""
        if not len(labels):
            return
        if self.kind == "hnsw":
            self.dead.update(labels.tolist())
            self._params = None
            return
        with faiss_errors("remove"):  # one pass per batch, so callers batch their deletes
            self.index.remove_ids(faiss.IDSelectorArray(labels))

    def search(self, query: Vectors, k: int) -> tuple[list[float], list[int]]:
        cached = self._search_params(k)  # held here, so the selector outlives this search
        with faiss_errors("search"), omp_threads(1):
            if cached is None:
                scores, labels = self.index.search(query, k)
            else:
                scores, labels = self.index.search(query, k, params=cached[0])
        return scores[0].tolist(), labels[0].tolist()

    def pieces(self, below: int, budget_bytes: int = 8 << 20) -> Iterator[Piece]:
        """Copy the live entries out, about ``budget_bytes`` per step: hold the lock around each
        ``next()`` only. Labels ``>= below`` (added since the build began, so journaled) and
        tombstones are left out; each step reads the index as it is then.

        Flat is copied in one step (its positions shift on removal); it is small by design.
        """
        with faiss_errors("snapshot"):
            if self.kind == "ivf":
                yield from self._ivf_pieces(below, budget_bytes)
                return
            inner: Any = faiss.downcast_index(self.index.index)
            storage: Any = inner if self.kind == "flat" else faiss.downcast_index(inner.storage)
            end = self.ntotal  # HNSW only appends, so positions below ``end`` are stable
            step = max(1, end if self.kind == "flat" else budget_bytes // (self.index.d * 4))
        for start in range(0, end, step):
            with faiss_errors("snapshot"):
                count = min(step, end - start)
                ids = faiss.rev_swig_ptr(self.index.id_map.data(), self.ntotal)
                labels = np.array(ids[start : start + count], dtype=np.int64)
                vectors = storage.reconstruct_n(start, count)  # a copy; decodes SQ8 storage
            keep = labels < below
            if self.dead:
                keep &= ~np.isin(labels, np.fromiter(self.dead, dtype=np.int64))
            yield labels[keep], None, vectors[keep]

    def memory_bytes(self) -> int:
        return (
            estimate_bytes(
                self.kind, self.encoding, int(self.index.d), self.ntotal, self.options, self.nlist
            )
            + len(self.dead) * 64
        )

    # --- internals ----------------------------------------------------------------------
    def _search_params(self, k: int) -> Any:
        """HNSW parameters with the tombstone filter, cached; searches may run side by side, so
        the cache is built under its own lock and each search keeps its selector alive."""
        if self.kind != "hnsw":
            return None
        with self._params_lock:
            cached = self._params
            if cached is None or cached[0].efSearch < k:
                params, selector = _FAISS.SearchParametersHNSW(), None
                params.efSearch = max(self.options.ef_search, k)
                if self.dead:
                    dead = np.fromiter(self.dead, dtype=np.int64)
                    selector = faiss.IDSelectorNot(faiss.IDSelectorBatch(dead))
                    params.sel = selector
                cached = self._params = (params, selector)
        return cached

    def _ivf_pieces(self, below: int, budget_bytes: int) -> Iterator[Piece]:
        ivf: Any = faiss.downcast_index(self.index)
        dim, scalar = int(ivf.d), isinstance(ivf, faiss.IndexIVFScalarQuantizer)
        collected: list[Piece] = []
        held = 0
        for list_no in range(int(ivf.nlist)):
            invlists = ivf.invlists  # looked up again each step: the lists change in between
            code_size, size = int(invlists.code_size), int(invlists.list_size(list_no))
            if size:
                ids = faiss.rev_swig_ptr(invlists.get_ids(list_no), size)
                codes = faiss.rev_swig_ptr(invlists.get_codes(list_no), size * code_size)
                labels = np.array(ids, dtype=np.int64)
                rows = np.array(codes, dtype=np.uint8).reshape(size, code_size)
                keep = labels < below
                if scalar:
                    decoder = _sq_decoder(self.index, ivf, list_no)
                    collected.append((labels[keep], decoder, rows[keep]))
                else:  # IVFFlat stores the raw float32 rows
                    floats = rows.view(np.float32).reshape(size, dim)
                    collected.append((labels[keep], None, floats[keep]))
                held += size * code_size
            if held >= budget_bytes or list_no == ivf.nlist - 1:
                yield from collected
                collected, held = [], 0


def _sq_decoder(owner: Any, ivf: Any, list_no: int) -> Decoder:
    """Decode one list's SQ8 codes; residual codes get their list's centroid added back.

    ``owner`` (the index's owning proxy) is kept so the quantizer outlives a swap.
    """
    centroid = ivf.quantizer.reconstruct(list_no) if ivf.by_residual else None
    scalar = ivf.sq

    def decode(codes: npt.NDArray[Any]) -> Vectors:
        assert owner is not None
        with faiss_errors("decode"):
            rows = np.asarray(scalar.decode(np.ascontiguousarray(codes)), dtype=np.float32)
        return rows + centroid if centroid is not None else rows

    return decode


def estimate_bytes(
    kind: IndexKind, encoding: Encoding, dim: int, total: int, options: IndexOptions, nlist: int = 0
) -> int:
    """What an index of this kind holds: codes, ids, id maps, HNSW links, IVF centroids."""
    code = dim * (4 if kind == "flat" else _BYTES_PER_DIM[encoding])
    estimate = total * (code + 8 + _MAP_ENTRY_BYTES)
    if kind == "hnsw":
        # Level 0 holds 2·M int32 links, upper levels add about 1/ln(M) of that again.
        links = 2 * options.hnsw_m * 4 * (1 + 1 / math.log(options.hnsw_m))
        estimate += int(total * (links + 9))
    elif kind == "ivf":
        # Each list is a growing std::vector of codes and ids: measured 1.3-1.5x their size.
        estimate += int(total * (code + 8) * (_IVF_LIST_SLACK - 1))
        lists = nlist or options.ivf_nlist or auto_nlist(total)
        estimate += lists * (dim * 4 + 48)  # centroids and the per-list vectors
    return estimate


def check_vectors(vectors: npt.ArrayLike, rows: int, dim: int) -> Vectors:
    """Float32 rows of ``dim``, finite, one per id; anything else is the caller's mistake."""
    matrix = np.ascontiguousarray(vectors, dtype=np.float32)
    if matrix.ndim == 1:
        matrix = matrix.reshape(1, -1)
    if matrix.ndim != 2 or matrix.shape != (rows, dim):
        raise ValidationError(
            "vectors",
            f"has shape {matrix.shape}, expected ({rows}, {dim})",
            "pass one row of the index's dimension per id",
        )
    if not np.isfinite(matrix).all():
        raise ValidationError("vectors", "contains NaN or infinity", "embed finite values")
    return matrix


def empty_flat(dim: int, options: IndexOptions) -> FaissIndex:
    with faiss_errors("create"):
        return FaissIndex("flat", faiss.IndexIDMap2(faiss.IndexFlatIP(dim)), options)


def build_index(kind: IndexKind, dim: int, options: IndexOptions, source: Source) -> FaissIndex:
    """A new index of ``kind`` holding what ``source`` yields; trains first if the kind needs.

    Runs with ``options.build_threads`` OpenMP threads (the caller's thread only), so it is
    meant for a background or offline thread, never the query path.
    """
    if kind == "flat":
        built = empty_flat(dim, options)
        for labels, vectors in source.batches():
            built.add(labels, vectors)
        return built
    qtype = _QTYPES.get(options.encoding)  # None: float32
    with faiss_errors("build"), omp_threads(options.build_threads):
        if kind == "hnsw":
            graph: Any
            if qtype is not None:
                graph = _FAISS.IndexHNSWSQ(dim, qtype, options.hnsw_m, faiss.METRIC_INNER_PRODUCT)
                graph.train(source.sample(65_536))
            else:
                graph = faiss.IndexHNSWFlat(dim, options.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            graph.hnsw.efConstruction = options.ef_construction
            graph.hnsw.efSearch = options.ef_search
            index: Any = faiss.IndexIDMap2(graph)
        else:
            nlist = options.ivf_nlist or auto_nlist(source.count)
            quantizer = faiss.IndexFlatIP(dim)
            if qtype is not None:
                index = faiss.IndexIVFScalarQuantizer(
                    quantizer, dim, nlist, qtype, faiss.METRIC_INNER_PRODUCT
                )
            else:
                index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
            index.cp.niter = options.ivf_train_iterations
            index.cp.seed = 1234
            index.train(source.sample(nlist * _TRAIN_POINTS_PER_LIST))
            index.set_direct_map_type(_FAISS.DirectMap.Hashtable)  # removes by id
        if kind == "hnsw":
            # One call: FAISS's HNSW added in 8k-row batches recalled .90 instead of .997 at
            # 100k (single-row adds later are fine), so the decoded set is held at once here.
            batches = list(source.batches())
            labels = np.concatenate([labels for labels, _ in batches])
            vectors = np.concatenate([vectors for _, vectors in batches])
            del batches
            index.add_with_ids(vectors, labels)
        else:
            for labels, vectors in source.batches():
                index.add_with_ids(vectors, labels)
    return FaissIndex(kind, index, options)
