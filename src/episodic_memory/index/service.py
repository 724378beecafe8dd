"""The index side of memory: embeddings, vector search and the learned tool predictor.

The IndexActor is a thin shell over ``IndexService``. Vectors are returned as raw float32
bytes from ``add_episodes`` so the storage layer persists them: the FAISS files are only a
cache, and ``rebuild`` restores the index from storage after a crash or an embedder change.
Methods are synchronous and thread-safe; an async host runs them in a worker thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
from pydantic import JsonValue

from episodic_memory.config import IndexConfig
from episodic_memory.core.context import ToolPrediction
from episodic_memory.core.models import Episode, TaskContext
from episodic_memory.core.tool_predictor import CALIBRATION_WINDOW, ToolPredictor
from episodic_memory.index.embedders import Embedder, make_embedder
from episodic_memory.index.faiss_index import IndexOptions, VectorIndex
from episodic_memory.index.predictor_files import load_predictor, save_predictor
from episodic_memory.storage.base import StoredEmbedding

__all__ = ["IndexService", "LoadResult", "embedding_text"]

log = logging.getLogger(__name__)

_VECTORS_DIR = "vectors"
_MAX_PREDICTED_TOOLS = 20
_MAX_PREDICTED_SETS = 20
_MIN_TOOL_PROBABILITY = 0.01


def embedding_text(description: str, context: TaskContext) -> str:
    """What gets embedded: the task plus its domain and tags, for episodes and queries alike."""
    return "\n".join([description, " ".join([context.domain, *context.tags])])


class LoadResult(NamedTuple):
    """Which saved parts were usable; a ``False`` part must be rebuilt from storage."""

    vectors: bool
    predictor: bool


class IndexService:
    """Embedder + ``VectorIndex`` + ``ToolPredictor`` behind one small API."""

    def __init__(
        self,
        config: IndexConfig,
        index_dir: Path | None = None,
        *,
        embedder: Embedder | None = None,
        sequence_length: int = 5,
        neighbours: int = 50,
    ) -> None:
        """``embedder`` overrides the configured one (tests, or one model shared per process).

        ``neighbours``: how many learned neighbours ``predict_tools`` returns.
        """
        self.config = config
        self.index_dir = index_dir
        self.embedder = embedder if embedder is not None else make_embedder(config)
        self.sequence_length = sequence_length
        self.neighbours = neighbours
        self.predictor = ToolPredictor()
        # Queries and learning take turns on the predictor under _predictor_lock. A save only
        # has to keep learning out while it copies the state (~0.7 s at a million episodes),
        # not queries, which never change what it copies (they only fill caches): so whatever
        # changes the learned state also holds _learning_lock, and a save holds only that.
        self._predictor_lock = threading.Lock()
        self._learning_lock = threading.Lock()
        self.vectors = self._new_index()

    def _new_index(self) -> VectorIndex | None:
        if self.embedder is None:
            return None
        return VectorIndex(
            self.embedder.dim,
            model=self.embedder.name,
            approximate_threshold=self.config.approximate_threshold,
            options=IndexOptions.from_config(self.config),
        )

    # --- vectors ------------------------------------------------------------------------
    def add_episodes(self, episodes: Sequence[Episode]) -> list[StoredEmbedding]:
        """Embed and index (upsert) these episodes; return the vectors for storage to keep."""
        if self.embedder is None or self.vectors is None or not episodes:
            return []
        matrix = self.embedder.embed(
            [embedding_text(e.task_description, e.context) for e in episodes]
        )
        ids = [e.episode_id for e in episodes]
        self.vectors.add(ids, matrix)
        name, dim = self.embedder.name, self.embedder.dim
        little_endian = matrix.astype("<f4", copy=False)
        return [
            StoredEmbedding(episode_id=i, model=name, dim=dim, vector=row.tobytes())
            for i, row in zip(ids, little_endian, strict=True)
        ]

    def rebuild(self, embeddings: Iterable[StoredEmbedding]) -> int:
        """Replace the index with these stored vectors; others' vectors are skipped.

        Returns how many were indexed. Built in one pass, so a large memory goes straight to
        the approximate index instead of through the exact one.
        """
        if self.embedder is None:
            return 0
        ids, rows, skipped = [], [], 0
        for stored in embeddings:
            if self.fits(stored):
                ids.append(stored.episode_id)
                rows.append(np.frombuffer(stored.vector, dtype="<f4"))
            else:
                skipped += 1
        if skipped:
            log.warning("index rebuild skipped %d vector(s) not made by the embedder", skipped)
        matrix = np.stack(rows).astype(np.float32) if rows else np.zeros((0, self.embedder.dim))
        return self.rebuild_vectors(ids, matrix)

    def fits(self, stored: StoredEmbedding) -> bool:
        """Whether a stored vector was made by this embedder (a rebuild skips the others)."""
        if self.embedder is None:
            return False
        name, dim = self.embedder.name, self.embedder.dim
        return stored.model == name and stored.dim == dim and len(stored.vector) == dim * 4

    def rebuild_vectors(self, ids: Sequence[str], matrix: np.ndarray) -> int:
        """Replace the index with ``matrix`` (one row per id, this embedder's dimension)."""
        fresh = self._new_index()
        if fresh is None:
            return 0
        if len(ids):
            fresh.add(list(ids), np.ascontiguousarray(matrix, dtype=np.float32))
        self.vectors = fresh
        return len(fresh)

    def remove(self, episode_ids: Sequence[str]) -> int:
        """Drop these episodes' vectors and learned-neighbour entries; returns vectors removed."""
        with self._learning_lock, self._predictor_lock:
            self.predictor.forget(episode_ids)
        return self.vectors.remove(episode_ids) if self.vectors is not None else 0

    def search(self, description: str, context: TaskContext, k: int) -> list[tuple[str, float]]:
        """Up to ``k`` ``(episode_id, cosine)``; empty when no embedder is configured."""
        if self.embedder is None or self.vectors is None or k <= 0:
            return []
        query = self.embedder.embed([embedding_text(description, context)])
        return self.vectors.search(query[0], k)

    # --- tool prediction ----------------------------------------------------------------
    def observe(self, episodes: Iterable[Episode]) -> None:
        """Teach the tool predictor from completed episodes (failures teach nothing)."""
        batch = list(episodes)
        scored_from = len(batch) - CALIBRATION_WINDOW
        with self._learning_lock:
            for position, episode in enumerate(batch):  # queries wait one episode at most
                with self._predictor_lock:
                    self.predictor.observe_episode(episode, calibrate=position >= scored_from)

    def predict_tools(self, description: str, context: TaskContext) -> ToolPrediction:
        """Tools, tool sets, opening and learned neighbours for a task (see ToolPrediction)."""
        with self._predictor_lock:
            tools = self.predictor.predict(description, context)
            sets = self.predictor.predict_sets(description, context, _MAX_PREDICTED_SETS)
            sequence = self.predictor.predict_sequence(description, context, self.sequence_length)
            neighbours = self.predictor.find_neighbours(description, context, self.neighbours)
            reliability = self.predictor.reliability(context)
        likely = [(tool, p) for tool, p in tools if p >= _MIN_TOOL_PROBABILITY]
        return ToolPrediction(
            tools=likely[:_MAX_PREDICTED_TOOLS],
            sequence=sequence,
            sets=[(list(s), p) for s, p in sets if p >= _MIN_TOOL_PROBABILITY],
            neighbours=neighbours,
            reliability=min(max(reliability, 0.0), 1.0),
        )

    def retrieval_hints(
        self, description: str, context: TaskContext, k: int
    ) -> tuple[list[tuple[str, float]], ToolPrediction]:
        """``search`` and ``predict_tools`` together: what retrieval asks of the index, in one
        call (one actor round trip instead of two)."""
        return self.search(description, context, k), self.predict_tools(description, context)

    # --- persistence --------------------------------------------------------------------
    def save(self) -> None:
        """Persist vectors and predictor state under ``index_dir`` (no-op without one)."""
        if self.index_dir is None:
            return
        if self.vectors is not None:
            self.vectors.save(self.index_dir / _VECTORS_DIR)
        save_predictor(self.predictor, self._learning_lock, self.index_dir)

    def load(self) -> LoadResult:
        """Restore what was saved; parts that are missing, torn or stale stay empty."""
        if self.index_dir is None:
            return LoadResult(vectors=False, predictor=False)
        vectors_ok = False
        if self.embedder is not None:
            loaded = VectorIndex.load(
                self.index_dir / _VECTORS_DIR,
                model=self.embedder.name,
                dim=self.embedder.dim,
                approximate_threshold=self.config.approximate_threshold,
                options=IndexOptions.from_config(self.config),
            )
            if loaded is not None:
                self.vectors, vectors_ok = loaded, True
        predictor_ok = False
        try:
            predictor = load_predictor(self.index_dir)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:  # stale or torn
            log.info("tool predictor state not restored (%s); relearn from episodes", exc)
        else:
            with self._learning_lock, self._predictor_lock:
                self.predictor, predictor_ok = predictor, True
        return LoadResult(vectors=vectors_ok, predictor=predictor_ok)

    def stats(self) -> dict[str, JsonValue]:
        vectors = self.vectors
        return {
            "embedder": self.embedder.name if self.embedder is not None else None,
            "dim": self.embedder.dim if self.embedder is not None else None,
            "vectors": len(vectors) if vectors is not None else 0,
            "dead_vectors": vectors.dead if vectors is not None else 0,
            "index_kind": vectors.kind if vectors is not None else None,
            "index_building": vectors.building if vectors is not None else False,
            "memory_bytes": vectors.memory_bytes() if vectors is not None else 0,
            "predictor_episodes": self.predictor.episodes_observed,
            "predictor_neighbours": len(self.predictor.neighbours),
        }
