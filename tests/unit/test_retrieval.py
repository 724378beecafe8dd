"""Retriever: concurrent fan-out, fusion, applicable patterns/heuristics, suggested tools.

The index side is the real ``IndexService`` (hashing embedder, real FAISS) behind a thin async
adapter. The storage side is a small in-memory double of ``StorageAPI`` (TF-IDF standing in
for FTS5): acceptable here because the real StorageService and its keyword search are tested
against libSQL in their own suites; this file tests the orchestration.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from episodic_memory.config import IndexConfig
from episodic_memory.core.context import ToolPrediction
from episodic_memory.core.models import Episode, ExecutionStep, TaskContext, TaskOutcome
from episodic_memory.core.patterns import ErrorRecovery, Heuristic, Pattern, ToolSequence
from episodic_memory.core.ranking import Candidate
from episodic_memory.core.text import tokenize
from episodic_memory.core.tfidf import TfidfIndex
from episodic_memory.errors import ValidationError
from episodic_memory.index.service import IndexService
from episodic_memory.retrieval import Retriever, suggest_tools
from episodic_memory.storage.base import KeywordHit, RetrievalSlate

RETAIL = TaskContext(domain="retail", language="en")
NOW = datetime(2026, 6, 1, tzinfo=UTC)


class LocalIndex:
    """The real IndexService, awaited the way an actor adapter would be.

    ``barrier`` (when set) proves its calls overlap with the store's.
    """

    def __init__(self, service: IndexService) -> None:
        self.service = service
        self.barrier: asyncio.Barrier | None = None

    async def _enter(self) -> None:
        if self.barrier is not None:
            await asyncio.wait_for(self.barrier.wait(), timeout=5)

    async def retrieval_hints(
        self, description: str, context: TaskContext, k: int
    ) -> tuple[list[tuple[str, float]], ToolPrediction]:
        await self._enter()
        return self.service.retrieval_hints(description, context, k)


class MemoryStorage:
    """In-memory StorageAPI double; ``barrier`` (when set) proves calls overlap."""

    def __init__(
        self,
        episodes: Sequence[Episode] = (),
        patterns: Sequence[Pattern] = (),
        heuristics: Sequence[Heuristic] = (),
    ) -> None:
        self.episodes = {e.episode_id: e for e in episodes}
        self._patterns = list(patterns)
        self._heuristics = list(heuristics)
        self.text = TfidfIndex(tokenize)
        for e in episodes:
            self.text.add(e.episode_id, e.task_description)
        self.barrier: asyncio.Barrier | None = None
        self.calls: list[str] = []
        self.learned_version = "v1"
        self.versions_asked: list[str | None] = []

    async def _enter(self, name: str) -> None:
        self.calls.append(name)
        if self.barrier is not None:
            await asyncio.wait_for(self.barrier.wait(), timeout=5)

    async def keyword_search(
        self, text: str, domain: str | None = None, limit: int = 50
    ) -> list[KeywordHit]:

        def allowed(i: str) -> bool:
            return domain is None or self.episodes[i].context.domain == domain

        hits = self.text.search(text, limit, where=allowed)
        return [KeywordHit(episode_id=i, score=score) for i, score in hits]

    async def candidates_by_metadata(
        self, domain: str | None, task_type: str | None, limit: int
    ) -> list[Episode]:
        same = [e for e in self.episodes.values() if e.context.domain == domain]
        return sorted(same, key=lambda e: e.started_at, reverse=True)[:limit]

    async def candidates(self, episode_ids: Sequence[str]) -> dict[str, Candidate]:
        self.calls.append("candidates")
        found = [self.episodes[i] for i in episode_ids if i in self.episodes]
        return {e.episode_id: Candidate.from_episode(e) for e in found if e.outcome is not None}

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
        await self._enter("slate")
        keyword = await self.keyword_search(text, keyword_domain, limit)
        metadata = [
            e.episode_id for e in await self.candidates_by_metadata(domain, task_type, limit)
        ]
        self.versions_asked.append(learned_version if learned else "not asked")
        unchanged = not learned or learned_version == self.learned_version
        return RetrievalSlate(
            keyword=[(hit.episode_id, hit.score) for hit in keyword],
            metadata=metadata,
            candidates=await self.candidates([hit.episode_id for hit in keyword] + metadata),
            patterns=[] if unchanged else [p for p in self._patterns if p.domain == domain],
            heuristics=[] if unchanged else [h for h in self._heuristics if h.domain == domain],
            learned_version=self.learned_version,
            learned_unchanged=unchanged,
        )


def episode(
    episode_id: str,
    description: str,
    tools: list[str],
    domain: str = "retail",
    outcome: TaskOutcome | None = None,
) -> Episode:
    return Episode(
        episode_id=episode_id,
        task_description=description,
        context=TaskContext(domain=domain, language="en"),
        status="completed",
        outcome=outcome or TaskOutcome.success(),
        steps=[ExecutionStep(tool=tool) for tool in tools],
        started_at=NOW,
    )


CANCEL = ["find_user", "get_order", "cancel_order"]
RETURN = ["find_user", "get_order", "return_items"]
EPISODES = [
    episode("cancel-1", "Cancel my pending order, I no longer need the lamp", CANCEL),
    episode("cancel-2", "Please cancel the pending order for the red chair", CANCEL),
    episode("return-1", "Return the keyboard from my delivered order", RETURN),
    episode("return-2", "I want to return a delivered jacket for a refund", RETURN),
    episode("flight-1", "Book a flight from Boston to Denver", ["search_flights"], "airline"),
]


def retriever(
    storage: MemoryStorage,
    embedder: str = "hashing",
    episodes: Sequence[Episode] = EPISODES,
    learned_max_age_s: float = 0.0,
) -> Retriever:
    service = IndexService(IndexConfig(embedder=embedder, hashing_dim=256))  # type: ignore[arg-type]
    service.add_episodes(list(episodes))
    service.observe(episodes)
    return Retriever(
        storage, LocalIndex(service), clock=lambda: NOW, learned_max_age_s=learned_max_age_s
    )


async def test_empty_memory_returns_no_episodes_and_explains_why() -> None:
    result = await retriever(MemoryStorage(), episodes=[]).retrieve("cancel my order", RETAIL)
    assert result.episodes == []
    assert result.explanation is not None
    assert "no completed episodes yet" in result.explanation


async def test_the_episodes_about_the_same_task_come_first_with_breakdowns() -> None:
    result = await retriever(MemoryStorage(EPISODES)).retrieve(
        "cancel the pending order I made yesterday", RETAIL, limit=3
    )
    assert {e.episode_id for e in result.episodes[:2]} == {"cancel-1", "cancel-2"}
    top = result.episodes[0]
    assert top.breakdown.semantic > 0
    assert top.breakdown.keyword > 0
    assert top.tools == CANCEL
    assert result.explanation is None
    assert "flight-1" not in {e.episode_id for e in result.episodes}


async def test_all_sources_are_queried_concurrently_and_the_store_once() -> None:
    storage = MemoryStorage(EPISODES)
    memory = retriever(storage)
    index = memory.index
    assert isinstance(index, LocalIndex)
    barrier = asyncio.Barrier(2)  # the index's hints and the store's slate at once
    storage.barrier = index.barrier = barrier
    result = await memory.retrieve("return a delivered item", RETAIL)
    assert storage.calls[0] == "slate"
    assert storage.calls.count("slate") == 1
    assert result.episodes[0].episode_id.startswith("return")


async def test_without_an_embedder_keyword_and_metadata_still_find_episodes() -> None:
    result = await retriever(MemoryStorage(EPISODES), embedder="none").retrieve(
        "cancel the pending order", RETAIL
    )
    assert result.episodes[0].episode_id.startswith("cancel")
    assert all(e.breakdown.semantic == 0 for e in result.episodes)


async def test_a_retriever_without_any_index_falls_back_to_the_store() -> None:
    plain = Retriever(MemoryStorage(EPISODES), clock=lambda: NOW)
    result = await plain.retrieve("return my delivered keyboard", RETAIL)
    assert result.episodes[0].episode_id == "return-1"


async def test_an_unrelated_task_in_an_unknown_domain_gets_an_explanation() -> None:
    result = await retriever(MemoryStorage(EPISODES)).retrieve(
        "Compile the kernel module", TaskContext(domain="systems")
    )
    assert result.episodes == []
    assert result.explanation is not None
    assert "systems" in result.explanation


async def test_patterns_and_heuristics_that_apply_are_attached_and_others_dropped() -> None:
    patterns: list[Pattern] = [
        ToolSequence(pattern_id="seq", key="s", domain="retail", tools=CANCEL, confidence=0.9),
        ToolSequence(pattern_id="far", key="f", domain="retail", tools=["x", "y"], confidence=1),
        ErrorRecovery(
            pattern_id="rec",
            key="r",
            domain="retail",
            failed_tool="cancel_order",
            error_signature="not pending",
            recovery_tools=["get_order"],
            confidence=0.6,
        ),
    ]
    heuristics = [
        Heuristic(
            heuristic_id="h-cancel",
            condition="in domain retail, after get_order",
            action="use cancel_order next",
            domain="retail",
            trigger="after_tool",
            tool="cancel_order",
            confidence=0.8,
        ),
        Heuristic(
            heuristic_id="h-other",
            condition="in domain retail, after ship",
            action="use track next",
            domain="retail",
            trigger="after_tool",
            tool="track",
            confidence=0.9,
        ),
    ]
    storage = MemoryStorage(EPISODES, patterns, heuristics)
    memory = retriever(storage)
    for _ in range(2):  # the second time from the retriever's copy: the store's is unchanged
        result = await memory.retrieve("cancel my pending order", RETAIL)
        assert [p.pattern_id for p in result.patterns] == ["seq", "rec"]
        assert [h.heuristic_id for h in result.heuristics] == ["h-cancel"]
    assert storage.versions_asked == [None, "v1"]
    # Something was learned: the store's version moves on and the new records are sent.
    storage._patterns = [patterns[0].model_copy(update={"pattern_id": "seq-2"})]
    storage.learned_version = "v2"
    result = await memory.retrieve("cancel my pending order", RETAIL)
    assert [p.pattern_id for p in result.patterns] == ["seq-2"]


async def test_a_recently_confirmed_copy_of_the_learned_records_is_used_without_asking() -> None:
    pattern = ToolSequence(pattern_id="seq", key="s", domain="retail", tools=CANCEL, confidence=0.9)
    storage = MemoryStorage(EPISODES, [pattern])
    memory = retriever(storage, learned_max_age_s=60.0)
    await memory.retrieve("cancel my pending order", RETAIL)
    storage._patterns = [pattern.model_copy(update={"pattern_id": "seq-2"})]
    storage.learned_version = "v2"  # learning goes on: each merge moves the version
    result = await memory.retrieve("cancel my pending order", RETAIL)
    assert storage.versions_asked == [None, "not asked"]
    assert [p.pattern_id for p in result.patterns] == ["seq"]  # at most a minute old here
    other = await memory.retrieve("return my lamp", TaskContext(domain="airline"))
    assert other.patterns == []  # another domain: asked for, nothing learned there
    assert storage.versions_asked[-1] is None


async def test_suggested_tools_follow_the_order_similar_tasks_used() -> None:
    result = await retriever(MemoryStorage(EPISODES)).retrieve(
        "please cancel my pending order", RETAIL
    )
    assert [s.tool for s in result.suggested_tools[:3]] == CANCEL
    assert "predictor" in result.suggested_tools[0].source
    assert all(0 < s.confidence <= 1 for s in result.suggested_tools)


async def test_a_failed_episode_is_ranked_below_a_success_on_the_same_task() -> None:
    failed = episode(
        "cancel-failed",
        "Cancel my pending order, I no longer need the lamp",
        CANCEL,
        outcome=TaskOutcome.failure("order already shipped"),
    )
    episodes = [*EPISODES, failed]
    result = await retriever(MemoryStorage(episodes), episodes=episodes).retrieve(
        "cancel my pending order, no longer need the lamp", RETAIL
    )
    ranked = [e.episode_id for e in result.episodes]
    assert ranked.index("cancel-1") < ranked.index("cancel-failed")


@pytest.mark.parametrize("limit", [0, 101])
async def test_a_limit_out_of_bounds_is_rejected(limit: int) -> None:
    with pytest.raises(ValidationError, match="limit"):
        await retriever(MemoryStorage()).retrieve("anything", RETAIL, limit=limit)


async def test_a_blank_description_is_rejected() -> None:
    with pytest.raises(ValidationError, match="description"):
        await retriever(MemoryStorage()).retrieve("   ", RETAIL)


def test_suggested_tools_gain_confidence_when_sources_agree() -> None:
    alone = suggest_tools([("predictor", 0.6, ["a", "b"])], 5)
    agreed = suggest_tools([("predictor", 0.6, ["a", "b"]), ("episodes", 0.5, ["a", "c"])], 5)
    assert [s.tool for s in alone] == ["a", "b"]
    assert agreed[0].tool == "a"
    assert agreed[0].confidence == pytest.approx(1 - 0.4 * 0.5)
    assert agreed[0].source == "predictor+episodes"
    assert alone[0].confidence == pytest.approx(0.6)


def test_suggested_tools_never_repeat_a_tool() -> None:
    tools = suggest_tools([("a", 0.9, ["x", "y", "x"]), ("b", 0.4, ["y", "x"])], 5)
    assert len({s.tool for s in tools}) == len(tools)


COLOURS = ["red", "blue", "green", "black", "white", "grey"]
MANY = [
    episode(f"cancel-{c}", f"Please cancel my pending order for the {c} chair", CANCEL)
    for c in COLOURS
] + [
    episode(f"return-{c}", f"Return the delivered {c} jacket for a refund", RETURN) for c in COLOURS
]


class TextBlindStorage(MemoryStorage):
    """A store whose own searches find nothing: only the index's neighbours can."""

    async def keyword_search(
        self, text: str, domain: str | None = None, limit: int = 50
    ) -> list[KeywordHit]:
        return []

    async def candidates_by_metadata(
        self, domain: str | None, task_type: str | None, limit: int
    ) -> list[Episode]:
        return []


async def test_learned_neighbours_are_fetched_and_ranked_when_other_sources_miss() -> None:
    storage = TextBlindStorage(MANY)
    result = await retriever(storage, embedder="none", episodes=MANY).retrieve(
        "I want to cancel an order", RETAIL, limit=3
    )
    assert [e.episode_id.split("-")[0] for e in result.episodes] == ["cancel"] * 3
    assert all(e.breakdown.learned > 0 for e in result.episodes)


async def test_suggested_tools_are_the_predicted_plan_and_end_where_it_ends() -> None:
    lookups = [episode(f"status-{c}", f"Where is my {c} parcel now", ["track"]) for c in COLOURS]
    episodes = [*MANY, *lookups]
    result = await retriever(MemoryStorage(episodes), episodes=episodes).retrieve(
        "where is my parcel", RETAIL
    )
    assert [s.tool for s in result.suggested_tools] == ["track"]
    assert "predictor" in result.suggested_tools[0].source


def test_a_plan_fixes_order_and_length_and_agreeing_votes_add_confidence() -> None:
    votes = [("episodes", 0.5, ["a", "x", "y"]), ("pattern", 0.4, ["b"])]
    planned = suggest_tools(votes, 5, plan=[("a", 0.6), ("b", 0.5)])
    assert [s.tool for s in planned] == ["a", "b"]
    assert planned[0].confidence == pytest.approx(1 - 0.4 * 0.5)
    assert planned[0].source == "predictor+episodes"
    assert planned[1].source == "predictor"  # the pattern proposed b first, not second
    assert suggest_tools(votes, 5, plan=[]) == []  # the predictor expects no tools at all
