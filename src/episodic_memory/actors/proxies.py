"""Client-side proxies: the service actors behind the same async methods as the plain classes.

Code written against ``StorageService`` / the async index (the episode writer, the learner,
``retrieval.Retriever``) runs unchanged over Ray through these. Every call goes through
``call``, which turns Ray's wrappers back into our error tree: a ``RayTaskError`` carrying one
of our errors re-raises that error (they pickle intact via ``__reduce__``); anything else the
actor raised, and dead or unreachable actors, become ``ServiceError`` naming the call.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from pydantic import JsonValue
from ray.exceptions import RayActorError, RayError, RayTaskError

from episodic_memory.core.context import ToolPrediction
from episodic_memory.core.learning import LearningDelta
from episodic_memory.core.models import Episode, ExecutionStep, TaskContext
from episodic_memory.core.patterns import Heuristic, Pattern
from episodic_memory.core.ranking import Candidate
from episodic_memory.errors import EpisodicMemoryError, ServiceError
from episodic_memory.storage.base import EpisodeQuery, KeywordHit, RetrievalSlate, StoredEmbedding
from episodic_memory.storage.bulk import BatchResult, IngestRows
from episodic_memory.storage.reconcile import RepairReport

__all__ = ["ActorGone", "IndexProxy", "StorageProxy", "call"]


class ActorGone(ServiceError):
    """The actor died or cannot be reached (callers with a fallback catch this one)."""


async def call(ref: Any, what: str) -> Any:
    """Await one actor call; raise our typed error, never a Ray wrapper."""
    try:
        return await ref
    except RayTaskError as exc:
        cause = exc.cause
        if isinstance(cause, EpisodicMemoryError):
            raise cause from None
        raise ServiceError(f"{what} failed in the actor: {type(cause).__name__}: {cause}") from None
    except RayActorError as exc:
        raise ActorGone(f"{what}: the actor is dead or unreachable ({exc})") from None
    except RayError as exc:
        raise ServiceError(f"{what}: {type(exc).__name__}: {exc}") from None


class StorageProxy:
    """``StorageService``'s async methods, over the storage actor."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle

    async def create_episodes(self, episodes: list[Episode]) -> None:
        await call(self.handle.create_episodes.remote(episodes), "storage.create_episodes")

    async def append_steps(self, steps: list[tuple[str, ExecutionStep]]) -> int:
        result: int = await call(self.handle.append_steps.remote(steps), "storage.append_steps")
        return result

    async def seal_episodes(self, episodes: list[Episode]) -> None:
        await call(self.handle.seal_episodes.remote(episodes), "storage.seal_episodes")

    async def get_episodes(self, episode_ids: Sequence[str]) -> list[Episode]:
        ref = self.handle.get_episodes.remote(list(episode_ids))
        result: list[Episode] = await call(ref, "storage.get_episodes")
        return result

    async def list_episodes(self, query: EpisodeQuery) -> list[Episode]:
        result: list[Episode] = await call(
            self.handle.list_episodes.remote(query), "storage.list_episodes"
        )
        return result

    async def keyword_search(
        self, text: str, domain: str | None = None, limit: int = 50
    ) -> list[KeywordHit]:
        ref = self.handle.keyword_search.remote(text, domain, limit)
        result: list[KeywordHit] = await call(ref, "storage.keyword_search")
        return result

    async def candidates(self, episode_ids: Sequence[str]) -> dict[str, Candidate]:
        ref = self.handle.candidates.remote(list(episode_ids))
        result: dict[str, Candidate] = await call(ref, "storage.candidates")
        return result

    async def retrieval_slate(
        self,
        text: str,
        *,
        keyword_domain: str | None,
        domain: str | None,
        task_type: str | None,
        limit: int,
        learned_version: str | None = None,
        learned: bool = True,
    ) -> RetrievalSlate:
        ref = self.handle.retrieval_slate.remote(
            text, keyword_domain, domain, task_type, limit, learned_version, learned
        )
        result: RetrievalSlate = await call(ref, "storage.retrieval_slate")
        return result

    async def patterns(self, domain: str | None = None, limit: int = 50) -> list[Pattern]:
        ref = self.handle.patterns.remote(domain, limit)
        result: list[Pattern] = await call(ref, "storage.patterns")
        return result

    async def heuristics(self, domain: str | None = None, limit: int = 50) -> list[Heuristic]:
        ref = self.handle.heuristics.remote(domain, limit)
        result: list[Heuristic] = await call(ref, "storage.heuristics")
        return result

    async def merge_learning(self, delta: LearningDelta) -> dict[str, int]:
        ref = self.handle.merge_learning.remote(delta)
        result: dict[str, int] = await call(ref, "storage.merge_learning")
        return result

    async def put_embeddings(self, embeddings: list[StoredEmbedding]) -> None:
        await call(self.handle.put_embeddings.remote(embeddings), "storage.put_embeddings")

    async def unlearned_episode_ids(self, limit: int = 1000) -> list[str]:
        ref = self.handle.unlearned_episode_ids.remote(limit)
        result: list[str] = await call(ref, "storage.unlearned_episode_ids")
        return result

    async def iter_embeddings(
        self, model: str, batch_size: int = 1000
    ) -> AsyncIterator[list[StoredEmbedding]]:
        """Pages streamed from the storage actor (a Ray streaming generator)."""
        async for ref in self.handle.iter_embeddings.remote(model, batch_size):
            page: list[StoredEmbedding] = await call(ref, "storage.iter_embeddings")
            yield page

    async def iter_completed(self, batch_size: int = 500) -> AsyncIterator[list[Episode]]:
        """Completed episodes with steps, oldest first, streamed from the storage actor."""
        async for ref in self.handle.iter_completed.remote(batch_size):
            page: list[Episode] = await call(ref, "storage.iter_completed")
            yield page

    async def stored_episode_ids(self, episode_ids: Sequence[str]) -> list[str]:
        ref = self.handle.stored_episode_ids.remote(list(episode_ids))
        result: list[str] = await call(ref, "storage.stored_episode_ids")
        return result

    async def ingest_rows(self, batch: IngestRows) -> BatchResult:
        result: BatchResult = await call(self.handle.ingest_rows.remote(batch), "storage.ingest")
        return result

    async def add_learned_records(
        self, patterns: list[Pattern], heuristics: list[Heuristic]
    ) -> dict[str, int]:
        ref = self.handle.add_learned_records.remote(patterns, heuristics)
        result: dict[str, int] = await call(ref, "storage.add_learned_records")
        return result

    async def sync_memories(self) -> RepairReport:
        result: RepairReport = await call(self.handle.sync_memories.remote(), "storage.sync")
        return result

    async def stats(self) -> dict[str, dict[str, int]]:
        result: dict[str, dict[str, int]] = await call(self.handle.stats.remote(), "storage.stats")
        return result


class IndexProxy:
    """``ThreadedIndex``'s methods, over the index actor."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle

    async def add_episodes(self, episodes: list[Episode]) -> list[StoredEmbedding]:
        ref = self.handle.add_episodes.remote(episodes)
        result: list[StoredEmbedding] = await call(ref, "index.add_episodes")
        return result

    async def search(
        self, description: str, context: TaskContext, k: int
    ) -> list[tuple[str, float]]:
        ref = self.handle.search.remote(description, context, k)
        result: list[tuple[str, float]] = await call(ref, "index.search")
        return result

    async def predict_tools(self, description: str, context: TaskContext) -> ToolPrediction:
        ref = self.handle.predict_tools.remote(description, context)
        result: ToolPrediction = await call(ref, "index.predict_tools")
        return result

    async def retrieval_hints(
        self, description: str, context: TaskContext, k: int
    ) -> tuple[list[tuple[str, float]], ToolPrediction]:
        ref = self.handle.retrieval_hints.remote(description, context, k)
        result: tuple[list[tuple[str, float]], ToolPrediction] = await call(
            ref, "index.retrieval_hints"
        )
        return result

    async def observe(self, episodes: list[Episode]) -> None:
        await call(self.handle.observe.remote(episodes), "index.observe")

    async def stats(self) -> dict[str, JsonValue]:
        result: dict[str, JsonValue] = await call(self.handle.stats.remote(), "index.stats")
        return result
