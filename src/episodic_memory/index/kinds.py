"""The FAISS index kinds ``VectorIndex`` switches between, behind one small interface.

Why one interface: ``VectorIndex`` builds a replacement index in the background and swaps it in,
so every kind must add, remove, search, snapshot its live vectors and report its memory the
same way. The kinds differ where it matters (measured in ``benchmarks/index_bench.py``):

- ``flat``: ``IndexIDMap2(IndexFlatIP)``, exact; removes natively in one O(N) pass per batch.
  Its cost grows linearly (about 0.3 µs per 1024-d vector per query), so it serves small sets.
- ``ivf``: ``IndexIVFFlat`` / ``IndexIVFScalarQuantizer`` with about √N lists. Trains k-means
  in seconds, stores its own int64 ids and removes natively (hashtable direct map), so
  deletes need no tombstones. ``sq8`` stores a byte per dimension: a quarter of the memory.
- ``hnsw``: ``IndexIDMap2(IndexHNSWFlat / IndexHNSWSQ)``. Fast, but builds take minutes at 1M
  and it cannot remove, so removals are tombstones filtered at search time until a rebuild.

Instances are not thread-safe; ``VectorIndex`` serialises access with its lock. Every FAISS
failure surfaces as ``StorageError``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import faiss
import numpy as np
import numpy.typing as npt

from episodic_memory.config import IndexConfig
from episodic_memory.errors import StorageError

__all__ = [
    "Encoding",
    "FaissIndex",
    "IndexKind",
    "IndexOptions",
    "Snapshot",
    "auto_nlist",
    "build_index",
    "empty_flat",
    "estimate_bytes",
    "faiss_errors",
    "omp_threads",
]

IndexKind = Literal["flat", "hnsw", "ivf"]
Encoding = Literal["float32", "sq8"]
Vectors = npt.NDArray[np.float32]
Labels = npt.NDArray[np.int64]
_FAISS: Any = faiss  # the bundled stubs miss some SWIG classes (SearchParametersHNSW)
_TRAIN_POINTS_PER_LIST = 40  # FAISS warns below 39 points per centroid
_MAP_ENTRY_BYTES = 40  # one std::unordered_map node (IDMap2 reverse map, IVF direct map)


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
    """Knobs of the approximate kinds (see ``IndexConfig`` for what each one trades)."""

    approximate_kind: Literal["hnsw", "ivf"] = "ivf"
    encoding: Encoding = "sq8"
    hnsw_m: int = 32
    ef_search: int = 128
    ef_construction: int = 64
    ivf_nlist: int = 0  # 0: about sqrt(N) lists, chosen at each build
    ivf_nprobe: int = 8
    ivf_train_iterations: int = 10
    build_threads: int = 2

    @classmethod
    def from_config(cls, config: IndexConfig, build_threads: int = 2) -> IndexOptions:
        return cls(
            approximate_kind=config.approximate_kind,
            encoding=config.approximate_encoding,
            hnsw_m=config.hnsw_m,
            ef_search=config.hnsw_ef_search,
            ef_construction=config.hnsw_ef_construction,
            ivf_nlist=config.ivf_nlist,
            ivf_nprobe=config.ivf_nprobe,
            ivf_train_iterations=config.ivf_train_iterations,
            build_threads=build_threads,
        )


def auto_nlist(live: int) -> int:
    """About √N lists, never fewer training points per list than FAISS asks for."""
    return max(1, min(round(math.sqrt(live)), live // _TRAIN_POINTS_PER_LIST))


@dataclass
class Snapshot:
    """Live labels and their vectors, copied under the lock and decoded outside it.

    ``parts`` holds either float rows or an IVF list's raw codes; decoding SQ8 codes (the slow
    part at 1M) happens in ``vectors()``, on the build thread.
    """

    labels: Labels
    parts: list[tuple[Any, npt.NDArray[Any]]]  # (decoder or None, rows or codes)

    def vectors(self) -> Vectors:
        decoded = [rows if decoder is None else decoder(rows) for decoder, rows in self.parts]
        if not decoded:
            return np.zeros((0, 0), dtype=np.float32)
        return np.ascontiguousarray(np.concatenate(decoded), dtype=np.float32)

    @property
    def nbytes(self) -> int:
        return int(self.labels.nbytes) + sum(int(rows.nbytes) for _, rows in self.parts)


class FaissIndex:
    """One FAISS index of one kind, keyed by int64 labels; tombstones where it can't remove."""

    def __init__(
        self, kind: IndexKind, index: Any, options: IndexOptions, dead: set[int] | None = None
    ) -> None:
        self.kind = kind
        self.index = index
        self.options = options
        self.dead: set[int] = dead or set()  # HNSW only: in the graph, never returned
        self._params: Any = None  # cached HNSW search parameters, reset when ``dead`` changes
        self._selector: Any = None  # the SWIG selector must outlive the parameters
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
        inner = faiss.downcast_index(self.index.index if self.kind == "hnsw" else self.index)
        scalar = isinstance(inner, faiss.IndexIVFScalarQuantizer | faiss.IndexHNSWSQ)
        return "sq8" if scalar else "float32"

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
        params = self._search_params(k)
        with faiss_errors("search"), omp_threads(1):
            if params is None:
                scores, labels = self.index.search(query, k)
            else:
                scores, labels = self.index.search(query, k, params=params)
        return scores[0].tolist(), labels[0].tolist()

    def snapshot(self) -> Snapshot:
        """Copy the live labels and vectors (or codes) out; decoding is left to the caller."""
        with faiss_errors("snapshot"):
            if self.kind == "ivf":
                return self._ivf_snapshot()
            labels = faiss.vector_to_array(self.index.id_map).astype(np.int64)
            inner: Any = faiss.downcast_index(self.index.index)
            storage: Any = inner if self.kind == "flat" else faiss.downcast_index(inner.storage)
            vectors = storage.reconstruct_n(0, self.ntotal)  # copies; decodes SQ8 storage
        if self.dead:
            live = ~np.isin(labels, np.fromiter(self.dead, dtype=np.int64))
            labels, vectors = labels[live], vectors[live]
        return Snapshot(labels, [(None, vectors)])

    def memory_bytes(self) -> int:
        return (
            estimate_bytes(
                self.kind, self.encoding, int(self.index.d), self.ntotal, self.options, self.nlist
            )
            + len(self.dead) * 64
        )

    # --- internals ----------------------------------------------------------------------
    def _search_params(self, k: int) -> Any:
        if self.kind != "hnsw":
            return None
        if self._params is None or self._params.efSearch < k:
            params = _FAISS.SearchParametersHNSW()
            params.efSearch = max(self.options.ef_search, k)
            if self.dead:
                dead = np.fromiter(self.dead, dtype=np.int64)
                self._selector = faiss.IDSelectorNot(faiss.IDSelectorBatch(dead))
                params.sel = self._selector
            self._params = params
        return self._params

    def _ivf_snapshot(self) -> Snapshot:
        ivf: Any = faiss.downcast_index(self.index)
        invlists, dim = ivf.invlists, int(ivf.d)
        code_size = int(invlists.code_size)
        labels: list[Labels] = []
        parts: list[tuple[Any, npt.NDArray[Any]]] = []
        for list_no in range(int(ivf.nlist)):
            size = int(invlists.list_size(list_no))
            if size == 0:
                continue
            ids = faiss.rev_swig_ptr(invlists.get_ids(list_no), size)
            codes = faiss.rev_swig_ptr(invlists.get_codes(list_no), size * code_size)
            labels.append(np.array(ids, dtype=np.int64))
            rows = np.array(codes, dtype=np.uint8).reshape(size, code_size)
            if isinstance(ivf, faiss.IndexIVFScalarQuantizer):
                parts.append((_sq_decoder(ivf, list_no), rows))
            else:  # IVFFlat stores the raw float32 rows
                parts.append((None, rows.view(np.float32).reshape(size, dim)))
        if not labels:
            return Snapshot(np.zeros(0, dtype=np.int64), [])
        return Snapshot(np.concatenate(labels), parts)


def _sq_decoder(ivf: Any, list_no: int) -> Any:
    """Decode one list's SQ8 codes; residual codes get their list's centroid added back."""
    centroid = ivf.quantizer.reconstruct(list_no) if ivf.by_residual else None
    scalar = ivf.sq

    def decode(codes: npt.NDArray[np.uint8]) -> Vectors:
        with faiss_errors("decode"):
            rows = np.asarray(scalar.decode(codes), dtype=np.float32)
        return rows + centroid if centroid is not None else rows

    return decode


def estimate_bytes(
    kind: IndexKind, encoding: Encoding, dim: int, total: int, options: IndexOptions, nlist: int = 0
) -> int:
    """What an index of this kind holds: codes, ids, id maps, HNSW links, IVF centroids."""
    code = dim if encoding == "sq8" and kind != "flat" else dim * 4
    estimate = total * (code + 8 + _MAP_ENTRY_BYTES)
    if kind == "hnsw":
        # Level 0 holds 2·M int32 links, upper levels add about 1/ln(M) of that again.
        links = 2 * options.hnsw_m * 4 * (1 + 1 / math.log(options.hnsw_m))
        estimate += int(total * (links + 9))
    elif kind == "ivf":
        lists = nlist or options.ivf_nlist or auto_nlist(total)
        estimate += lists * (dim * 4 + 48)  # centroids and the per-list vectors
    return estimate


def empty_flat(dim: int, options: IndexOptions) -> FaissIndex:
    with faiss_errors("create"):
        return FaissIndex("flat", faiss.IndexIDMap2(faiss.IndexFlatIP(dim)), options)


def build_index(
    kind: IndexKind, dim: int, options: IndexOptions, labels: Labels, vectors: Vectors
) -> FaissIndex:
    """A new index of ``kind`` holding these vectors; trains first where the kind needs it.

    Runs with ``options.build_threads`` OpenMP threads (the caller's thread only), so it is
    meant for a background or offline thread, never the query path.
    """
    if kind == "flat":
        built = empty_flat(dim, options)
        built.add(labels, vectors)
        return built
    sq8 = options.encoding == "sq8"
    with faiss_errors("build"), omp_threads(options.build_threads):
        if kind == "hnsw":
            graph: Any
            if sq8:
                graph = _FAISS.IndexHNSWSQ(
                    dim, faiss.ScalarQuantizer.QT_8bit, options.hnsw_m, faiss.METRIC_INNER_PRODUCT
                )
                graph.train(_training_sample(vectors, 65_536))
            else:
                graph = faiss.IndexHNSWFlat(dim, options.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            graph.hnsw.efConstruction = options.ef_construction
            graph.hnsw.efSearch = options.ef_search
            index: Any = faiss.IndexIDMap2(graph)
        else:
            nlist = options.ivf_nlist or auto_nlist(len(labels))
            quantizer = faiss.IndexFlatIP(dim)
            if sq8:
                index = faiss.IndexIVFScalarQuantizer(
                    quantizer, dim, nlist, faiss.ScalarQuantizer.QT_8bit,
                    faiss.METRIC_INNER_PRODUCT,
                )  # fmt: skip
            else:
                index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
            index.cp.niter = options.ivf_train_iterations
            index.cp.seed = 1234
            index.train(_training_sample(vectors, nlist * _TRAIN_POINTS_PER_LIST))
            index.set_direct_map_type(_FAISS.DirectMap.Hashtable)  # removes by id
        index.add_with_ids(vectors, labels)
    return FaissIndex(kind, index, options)


def _training_sample(vectors: Vectors, count: int) -> Vectors:
    if len(vectors) <= count:
        return vectors
    rows = np.random.default_rng(0).choice(len(vectors), size=count, replace=False)
    rows.sort()
    return np.ascontiguousarray(vectors[rows])
