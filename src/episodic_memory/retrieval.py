"""Retrieval orchestration: fan out to the index and the store, fuse, attach what was learned.

``Retriever`` talks to two small async protocols, so the same code runs over the in-process
services and over adapters around Ray actor handles. All candidate sources are asked at once
(``asyncio.gather``): the index's vector search and tool predictor (whose answer carries its
learned neighbours as a candidate list), and the store's slate — full-text and same-domain
candidates as ranking rows, with the patterns and heuristics, in one call. The only second
round trip fetches the rows of episodes the index named that the slate did not carry; no
episode is loaded whole (``storage/candidates.py`` says why). Ranking
itself is ``core.ranking`` (pure); this module also picks the patterns and heuristics that
apply and the suggested tools: the predictor's opening, learned across every episode of the
domain, is the plan, and patterns, rules and the top episodes add confidence where they agree
(they lead only where the predictor has learned nothing).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Protocol

from episodic_memory.config import DEFAULT_LIMITS
from episodic_memory.core.base import utc_now
from episodic_memory.core.context import (
    RetrievedContext,
    ScoredEpisode,
    SuggestedTool,
    ToolPrediction,
)
from episodic_memory.core.models import TaskContext
from episodic_memory.core.patterns import (
    DecisionPoint,
    ErrorRecovery,
    Heuristic,
    Pattern,
    ToolSequence,
)
from episodic_memory.core.ranking import DEFAULT_WEIGHTS, Candidate, RankingWeights, RankQuery, rank
from episodic_memory.errors import ValidationError
from episodic_memory.storage.base import RetrievalSlate

__all__ = [
    "IndexAPI",
    "Retriever",
    "StorageAPI",
    "select_heuristics",
    "select_patterns",
    "suggest_tools",
]

_UNSPECIFIED_DOMAIN = "general"  # TaskContext's default: the caller did not say


class IndexAPI(Protocol):
    """The IndexService's retrieval surface, awaited (in-process wrapper or actor adapter):
    the ``k`` nearest vectors and the tool prediction, in one call."""

    async def retrieval_hints(
        self, description: str, context: TaskContext, k: int
    ) -> tuple[list[tuple[str, float]], ToolPrediction]: ...


class StorageAPI(Protocol):
    """The StorageService's retrieval surface: one slate per query, then missing rows."""

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
    ) -> RetrievalSlate: ...

    async def candidates(self, episode_ids: Sequence[str]) -> dict[str, Candidate]: ...


def _share(tools: Sequence[str], expected: Mapping[str, float]) -> float:
    """Mean expectation of these tools: 1 when every one is expected with certainty."""
    return sum(expected.get(tool, 0.0) for tool in tools) / len(tools) if tools else 0.0


def _pattern_fit(pattern: Pattern, context: TaskContext, expected: Mapping[str, float]) -> float:
    if isinstance(pattern, ToolSequence):
        return _share(pattern.tools, expected)
    if isinstance(pattern, DecisionPoint):
        return _share([*pattern.after_tools, pattern.chosen_tool], expected)
    if isinstance(pattern, ErrorRecovery):  # worth knowing whenever the failing tool is likely
        return expected.get(pattern.failed_tool, 0.0)
    facts = {"domain": context.domain, "language": context.language, "framework": context.framework}
    wanted = {k: v for k, v in pattern.features.items() if k in facts}
    matched = sum(1 for k, v in wanted.items() if facts[k] == v) / len(wanted) if wanted else 0.5
    return matched * (0.5 + 0.5 * _share(pattern.tools, expected))


def select_patterns(
    patterns: Sequence[Pattern],
    context: TaskContext,
    expected: Mapping[str, float],
    limit: int,
    min_fit: float = 0.2,
) -> list[Pattern]:
    """Patterns whose tools this task is expected to use, by confidence × fit."""
    scored = [
        (p.confidence * fit, p)
        for p in patterns
        if (fit := _pattern_fit(p, context, expected)) >= min_fit
    ]
    scored.sort(key=lambda item: (-item[0], item[1].pattern_id))
    return [p for score, p in scored[:limit] if score > 0]


def select_heuristics(
    heuristics: Sequence[Heuristic],
    context: TaskContext,
    expected: Mapping[str, float],
    limit: int,
) -> list[Heuristic]:
    """Rules whose condition names this task's type or setting, or whose tool is expected."""
    labels = [v for v in (context.task_type, context.language, context.framework) if v]
    scored: list[tuple[float, Heuristic]] = []
    for h in heuristics:
        names_setting = any(label in h.condition for label in labels)
        tool_fit = expected.get(h.tool, 0.0) if h.tool else 0.0
        fit = max(1.0 if names_setting else 0.0, tool_fit)
        if fit > 0 and h.confidence > 0:
            scored.append((h.confidence * fit, h))
    scored.sort(key=lambda item: (-item[0], item[1].heuristic_id))
    return [h for _, h in scored[:limit]]


def _suggestion(tool: str, voters: Sequence[tuple[str, float]]) -> SuggestedTool:
    """Confidence is the noisy-OR of the voters' weights: agreement raises it."""
    miss = 1.0
    for _, weight in voters:
        miss *= 1.0 - min(max(weight, 0.0), 1.0)
    sources = "+".join(dict.fromkeys(source for source, _ in voters))
    return SuggestedTool(tool=tool, confidence=round(1.0 - miss, 4), source=sources)


def suggest_tools(
    votes: Sequence[tuple[str, float, Sequence[str]]],
    limit: int,
    plan: Sequence[tuple[str, float]] | None = None,
) -> list[SuggestedTool]:
    """Merge ordered tool lists ``(source, weight in [0,1], tools)`` position by position.

    With a ``plan`` — the tool predictor's opening with each tool's probability, learned
    across every episode of the domain — the plan fixes the order and the length (a plan
    that ends early says the task likely needs no more), and the other votes only add
    confidence where they agree. Without one, at each position the tool with the most weight
    behind it (not yet suggested) wins, so a single weak voter stays weak.
    """
    if plan is not None:
        chosen = []
        for position, (tool, probability) in enumerate(plan[:limit]):
            voters = [("predictor", probability)]
            voters += [
                (source, weight)
                for source, weight, tools in votes
                if weight > 0 and position < len(tools) and tools[position] == tool
            ]
            chosen.append(_suggestion(tool, voters))
        return chosen
    merged: list[SuggestedTool] = []
    taken: set[str] = set()
    for position in range(limit):
        tally: dict[str, list[tuple[str, float]]] = {}
        for source, weight, tools in votes:
            # A voter proposes its first tool not yet taken, for as many positions as it has.
            proposal = next((t for t in tools if t not in taken), None)
            if proposal is not None and position < len(tools) and weight > 0:
                tally.setdefault(proposal, []).append((source, weight))
        if not tally:
            break
        tool, voters = max(tally.items(), key=lambda item: (sum(w for _, w in item[1]), item[0]))
        merged.append(_suggestion(tool, voters))
        taken.add(tool)
    return merged


class _LearnedCache:
    """Each domain's patterns and heuristics as last sent, with the store's version of them.

    They change only when something is learned, so the store leaves them out of a slate
    while the version asked for is current. While agents keep completing episodes the version
    moves on every merge, and shipping the domain's top patterns and heuristics again cost
    ~4 ms a query (1M episodes, 50 of each); so a copy confirmed current less than
    ``max_age_s`` ago is used without asking. Bounded to the ``DOMAINS`` most recently used.
    """

    DOMAINS = 256

    def __init__(self, max_age_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_age_s = max_age_s
        self._clock = clock
        # domain → (version, patterns, heuristics, when the store last confirmed or sent them)
        self._held: OrderedDict[str, tuple[str, list[Pattern], list[Heuristic], float]] = (
            OrderedDict()
        )

    def version(self, domain: str) -> str | None:
        held = self._held.get(domain)
        return held[0] if held is not None else None

    def recent(self, domain: str) -> bool:
        """Held and confirmed within ``max_age_s``: no need to ask the store."""
        held = self._held.get(domain)
        return held is not None and self._clock() - held[3] < self.max_age_s

    def update(
        self, domain: str, slate: RetrievalSlate, *, asked: bool
    ) -> tuple[list[Pattern], list[Heuristic]]:
        """``asked``: the slate was asked for them (and so confirms the held copy if current)."""
        held = self._held.get(domain)
        if slate.learned_unchanged and held is not None:
            if asked:
                self._held[domain] = (*held[:3], self._clock())
            self._held.move_to_end(domain)
            return held[1], held[2]
        self._held[domain] = (
            slate.learned_version,
            slate.patterns,
            slate.heuristics,
            self._clock(),
        )
        self._held.move_to_end(domain)
        while len(self._held) > self.DOMAINS:
            self._held.popitem(last=False)
        return slate.patterns, slate.heuristics


class Retriever:
    """``retrieve(description, context, limit)`` over an index (optional) and a store."""

    def __init__(
        self,
        storage: StorageAPI,
        index: IndexAPI | None = None,
        *,
        weights: RankingWeights = DEFAULT_WEIGHTS,
        candidates_per_source: int = 50,
        max_patterns: int = 5,
        max_heuristics: int = 5,
        max_tools: int = 5,
        classify: Callable[[str, TaskContext], str] | None = None,
        clock: Callable[[], datetime] = utc_now,
        learned_max_age_s: float = 1.0,
    ) -> None:
        """``learned_max_age_s``: how old the patterns and heuristics used may be (see
        ``_LearnedCache``); 0 asks the store every time."""
        self.storage = storage
        self.index = index
        self.weights = weights
        self.candidates_per_source = candidates_per_source
        self.max_patterns = max_patterns
        self.max_heuristics = max_heuristics
        self.max_tools = max_tools
        self.classify = classify
        self.clock = clock
        self._learned = _LearnedCache(learned_max_age_s)

    async def _hints(
        self, description: str, context: TaskContext, k: int
    ) -> tuple[list[tuple[str, float]], ToolPrediction]:
        if self.index is None:
            return [], ToolPrediction()
        return await self.index.retrieval_hints(description, context, k)

    async def retrieve(
        self, description: str, context: TaskContext | None = None, limit: int = 5
    ) -> RetrievedContext:
        if not description.strip():
            raise ValidationError("description", "is blank", "describe the task")
        if not 1 <= limit <= DEFAULT_LIMITS.max_retrieve_limit:
            raise ValidationError(
                "limit", f"is {limit}", f"use 1..{DEFAULT_LIMITS.max_retrieve_limit}"
            )
        context = context or TaskContext()
        task_type = context.task_type or (
            self.classify(description, context) if self.classify else None
        )
        domain = context.domain
        known_domain = None if domain == _UNSPECIFIED_DOMAIN else domain
        n = max(self.candidates_per_source, 2 * limit)
        ask_learned = not self._learned.recent(domain)
        (semantic, predicted), slate = await asyncio.gather(
            self._hints(description, context, n),
            self.storage.retrieval_slate(
                description,
                keyword_domain=known_domain,
                domain=domain,
                task_type=task_type,
                limit=n,
                learned_version=self._learned.version(domain),
                learned=ask_learned,
            ),
        )
        keyword = slate.keyword
        patterns, heuristics = self._learned.update(domain, slate, asked=ask_learned)
        candidates = dict(slate.candidates)
        learned = predicted.neighbours[:n]
        asked = {episode_id for episode_id, _ in keyword} | set(slate.metadata)
        wanted = [i for i, _ in semantic] + [i for i, _ in learned]
        missing = [i for i in dict.fromkeys(wanted) if i not in asked]
        if missing:
            candidates.update(await self.storage.candidates(missing))
        sources = {
            "semantic": semantic,
            "keyword": keyword,
            "learned": learned,
            "metadata": [(i, 0.0) for i in slate.metadata],
        }
        query = RankQuery(
            description=description,
            now=self.clock(),
            domain=known_domain,
            language=context.language,
            tags=frozenset(tag.lower() for tag in context.tags),
            task_type=task_type,
            predicted_sets=[(tuple(tools), p) for tools, p in predicted.sets],
            set_reliability=predicted.reliability,
        )
        ranked = rank(query, sources, candidates, limit, self.weights)
        expected = _expected(predicted, ranked)
        scoped = (
            context if context.task_type else context.model_copy(update={"task_type": task_type})
        )
        return RetrievedContext(
            query=description,
            episodes=ranked,
            patterns=select_patterns(patterns, scoped, expected, self.max_patterns),
            heuristics=select_heuristics(heuristics, scoped, expected, self.max_heuristics),
            suggested_tools=suggest_tools(
                _tool_votes(ranked, patterns, heuristics, expected),
                self.max_tools,
                _plan(predicted),
            ),
            explanation=None
            if ranked
            else _explain(candidates, semantic, keyword, domain, self.index),
        )


def _expected(predicted: ToolPrediction, ranked: Sequence[ScoredEpisode]) -> dict[str, float]:
    """How strongly each tool is expected: the predictor, or the top episodes that used it."""
    expected = dict(predicted.tools)
    top = ranked[:3]
    for tool in {tool for episode in top for tool in episode.tools}:
        share = sum(tool in episode.tools for episode in top) / len(top)
        expected[tool] = max(expected.get(tool, 0.0), share)
    return expected


def _plan(predicted: ToolPrediction) -> list[tuple[str, float]] | None:
    """The predictor's opening with each tool's probability; None when it has learned nothing."""
    if not predicted.tools:
        return None
    marginal = dict(predicted.tools)
    return [(tool, marginal.get(tool, 0.0)) for tool in predicted.sequence]


def _tool_votes(
    ranked: Sequence[ScoredEpisode],
    patterns: Sequence[Pattern],
    heuristics: Sequence[Heuristic],
    expected: Mapping[str, float],
) -> list[tuple[str, float, Sequence[str]]]:
    votes: list[tuple[str, float, Sequence[str]]] = []
    for pattern in patterns:
        if isinstance(pattern, ToolSequence):
            fit = _share(pattern.tools, expected)
            votes.append(("pattern", pattern.confidence * fit, pattern.tools))
    for h in heuristics:
        if h.trigger == "task_start" and h.tool:
            votes.append(("heuristic", h.confidence * expected.get(h.tool, 0.0), [h.tool]))
    top = ranked[0].score if ranked else 0.0
    for episode in ranked[:3]:
        if episode.verdict in ("success", "partial") and top > 0:
            votes.append(("episodes", 0.5 * episode.score / top, episode.tools))
    return votes


def _explain(
    candidates: Mapping[str, Candidate],
    semantic: Sequence[tuple[str, float]],
    keyword: Sequence[tuple[str, float]],
    domain: str,
    index: IndexAPI | None,
) -> str:
    if not candidates and index is not None and not semantic:
        # The vector index returns its nearest neighbours whatever they are: none means empty.
        return (
            "memory has no completed episodes yet; "
            "complete a few episodes and they will be retrieved here"
        )
    best = max((score for _, score in semantic), default=0.0)
    parts = [f"best text similarity {best:.2f}" if index is not None else "semantic search is off"]
    parts.append("shared keywords with some episodes" if keyword else "no shared keywords")
    if domain != _UNSPECIFIED_DOMAIN:
        parts.append(f"no episode of domain {domain!r} or of this task type")
    return f"no stored episode resembles this task ({', '.join(parts)})"
