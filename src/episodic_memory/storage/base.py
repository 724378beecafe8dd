"""The durable store's contract: what every backend (libSQL file, libSQL remote) provides.

Writes are batched by signature (sequences in, one transaction out) because a call across any
boundary costs far more than a row. Step appends are idempotent on ``(episode_id,
step_number)``, so a retried flush never duplicates a step. Reads return validated models.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

from pydantic import Field

from episodic_memory.core.base import Record
from episodic_memory.core.models import Episode, EpisodeStatus, ExecutionStep, Verdict
from episodic_memory.core.patterns import Heuristic, Pattern
from episodic_memory.core.ranking import Candidate

__all__ = ["EpisodeQuery", "EpisodeStore", "KeywordHit", "RetrievalSlate", "StoredEmbedding"]


class EpisodeQuery(Record):
    """Filters for ``list_episodes``; newest first."""

    domain: str | None = None
    task_type: str | None = None
    verdict: Verdict | None = None
    status: EpisodeStatus | None = None
    started_after: datetime | None = None
    started_before: datetime | None = None
    limit: int = Field(default=50, ge=1, le=10_000)
    offset: int = Field(default=0, ge=0)
    with_steps: bool = False


class KeywordHit(Record):
    """One full-text match; ``score`` is higher-is-better (negated BM25)."""

    episode_id: str
    score: float


@dataclass(frozen=True, slots=True)
class RetrievalSlate:
    """Everything the store contributes to one retrieval, in one call (one actor round trip).

    ``keyword`` (``(episode_id, score)``) and ``metadata`` are the two store-side candidate
    lists, best first; ``candidates`` holds the ranking rows of every completed episode they
    name. Plain tuples and dataclasses: this crosses a process boundary on every query, and a
    pydantic model costs ~60 µs there. ``learned_version`` names the state of the patterns and
    heuristics; when the caller already holds that version, or asked for none, they are left
    out (``learned_unchanged``), since they change only when something is learned.
    """

    keyword: list[tuple[str, float]] = field(default_factory=list)
    metadata: list[str] = field(default_factory=list)
    candidates: dict[str, Candidate] = field(default_factory=dict)
    patterns: list[Pattern] = field(default_factory=list)
    heuristics: list[Heuristic] = field(default_factory=list)
    learned_version: str = ""
    learned_unchanged: bool = False


class StoredEmbedding(Record):
    episode_id: str
    model: str
    dim: int
    vector: bytes  # raw little-endian float32, length dim * 4


@runtime_checkable
class EpisodeStore(Protocol):
    """Async durable store. Implementations translate library errors into ``StorageError``."""

    async def migrate(self) -> list[int]:
        """Apply pending migrations; return the versions applied (empty when up to date)."""
        ...

    async def close(self) -> None: ...

    # --- writes -------------------------------------------------------------------------
    async def put_episodes(self, episodes: Sequence[Episode]) -> None:
        """Upsert episode headers (everything but steps) and their full-text rows."""
        ...

    async def append_steps(self, steps: Sequence[tuple[str, ExecutionStep]]) -> int:
        """Append ``(episode_id, step)`` rows; duplicates by step_number are ignored.

        Returns how many rows were new. Every step must carry a ``step_number``.
        """
        ...

    async def upsert_patterns(self, patterns: Sequence[Pattern]) -> None: ...

    async def upsert_heuristics(self, heuristics: Sequence[Heuristic]) -> None: ...

    async def put_embeddings(self, embeddings: Sequence[StoredEmbedding]) -> None: ...

    async def mark_learned(self, episode_ids: Sequence[str]) -> None:
        """Record that learning has absorbed these episodes (so restarts don't re-learn them)."""
        ...

    async def commit_learning(
        self,
        patterns: Sequence[Pattern],
        heuristics: Sequence[Heuristic],
        episode_ids: Sequence[str],
    ) -> None:
        """Upsert merged patterns and heuristics and mark the episodes learned, atomically."""
        ...

    async def learned_episode_ids(self, episode_ids: Sequence[str]) -> set[str]:
        """The subset of ``episode_ids`` already marked learned."""
        ...

    async def delete_episodes(self, episode_ids: Sequence[str]) -> int: ...

    # --- reads --------------------------------------------------------------------------
    async def get_episodes(self, episode_ids: Sequence[str]) -> list[Episode]:
        """Episodes with their steps, in the order asked; unknown ids are skipped."""
        ...

    async def list_episodes(self, query: EpisodeQuery) -> list[Episode]: ...

    async def candidates(self, episode_ids: Sequence[str]) -> dict[str, Candidate]:
        """Ranking rows (no steps, no JSON validation) of the completed ones among the ids."""
        ...

    async def metadata_candidate_ids(
        self, domain: str | None, task_type: str | None, limit: int
    ) -> list[str]:
        """Latest completed episodes: same type and domain, then type, then domain."""
        ...

    async def candidate_ids(
        self,
        text: str | None,
        keyword_domain: str | None,
        domain: str | None,
        task_type: str | None,
        limit: int,
    ) -> tuple[list[KeywordHit], list[str]]:
        """``keyword_search(text)`` hits and ``metadata_candidate_ids`` in one round trip."""
        ...

    async def keyword_search(
        self, text: str, *, domain: str | None = None, limit: int = 50
    ) -> list[KeywordHit]:
        """FTS5/BM25 over descriptions and step text of completed episodes."""
        ...

    async def episode_versions(self) -> dict[str, int]:
        """``episode_id → revision`` of completed episodes, for cache reconciliation."""
        ...

    async def load_patterns(
        self, *, domain: str | None = None, limit: int | None = None
    ) -> list[Pattern]: ...

    async def load_heuristics(
        self, *, domain: str | None = None, limit: int | None = None
    ) -> list[Heuristic]: ...

    def iter_embeddings(
        self, model: str, batch_size: int = 1000
    ) -> AsyncIterator[list[StoredEmbedding]]: ...

    def iter_episodes(self, batch_size: int = 500) -> AsyncIterator[list[Episode]]:
        """Every episode with steps, oldest first, in pages (export, reindex, relearn)."""
        ...

    async def unlearned_episode_ids(self, limit: int = 1000) -> list[str]:
        """Completed episodes whose learning has not been recorded (learner died)."""
        ...

    async def counts(self) -> dict[str, int]:
        """Rows per table: episodes, steps, patterns, heuristics, embeddings."""
        ...
