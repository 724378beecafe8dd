"""Hybrid ranking of retrieval candidates: pure functions, no I/O.

Candidates arrive as ranked lists from several sources: ``semantic`` (embeddings),
``keyword`` (full-text), ``learned`` (the tool predictor's neighbours, similar in the words
that predict tool use) and ``metadata`` (same domain / task type). Each episode's score
estimates how useful it is to the new task — chiefly, whether its solution applies — as a
weighted sum of components in [0, 1], all kept in its ``ScoreBreakdown``:

- ``learned``: cosine over learned word weights (``core.neighbours``);
- ``semantic`` / ``keyword``: the source's score divided by the best in that list;
- ``fusion``: reciprocal-rank fusion (k≈60) across sources, so agreement between sources counts;
- ``context``: same domain, task type, language and tag overlap;
- ``outcome``: successes with high reward first; failures that recovered from an error keep
  more weight than plain failures because they teach the recovery;
- ``recency``: exponential decay with a half-life;
- ``tool_overlap``: the expected match of the episode's tool set with the task's, under a
  posterior over the task's tool set (``core.tool_match``): the predictor's calibrated
  guess blended with the sets of the candidates the text evidence ranks highest, discounted
  by how reliable the predictor has proved on this domain's episodes. A memory whose
  descriptions say little about the tools (few episodes, many one-off solutions) thus
  leans on text; one with recurring kinds of task leans on the predicted solution.

Text evidence says which past tasks read alike; the tool-set term says which past solutions
the task most likely needs, and lifts an episode that solved the same kind of task in other
words.

A final MMR pass trades a little score for diversity, so near-duplicate descriptions do not
crowd out the rest of the list.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from episodic_memory.core.context import ScoreBreakdown, ScoredEpisode
from episodic_memory.core.models import Episode, Verdict
from episodic_memory.core.tool_match import expected_match, set_posterior, tool_idf

__all__ = [
    "DEFAULT_WEIGHTS",
    "Candidate",
    "RankQuery",
    "RankingWeights",
    "collapse",
    "context_match",
    "fuse",
    "mmr",
    "normalize",
    "outcome_score",
    "rank",
    "recency_score",
    "tool_path",
]

T = TypeVar("T")
_WORD = re.compile(r"\w+")
_TEXT_PARTS = ("learned", "semantic", "keyword", "fusion")


def collapse(tools: Sequence[str]) -> tuple[str, ...]:
    """Tools in order with consecutive repeats merged (retries are one intent)."""
    return tuple(tool for i, tool in enumerate(tools) if i == 0 or tools[i - 1] != tool)


def tool_path(steps: Sequence[tuple[str, bool]]) -> tuple[tuple[str, ...], bool]:
    """``(tool, success)`` per step → the collapsed tools and whether a failure was recovered.

    Recovered: a step failed and a later one succeeded. Stored with a sealed episode, so
    ranking reads two columns instead of every step.
    """
    failed_at = next((i for i, (_, ok) in enumerate(steps) if not ok), None)
    recovered = failed_at is not None and any(ok for _, ok in steps[failed_at + 1 :])
    return collapse([tool for tool, _ in steps]), recovered


@dataclass(frozen=True, slots=True)
class Candidate:
    """The parts of an episode that ranking looks at."""

    episode_id: str
    description: str
    domain: str
    started_at: datetime
    language: str | None = None
    tags: frozenset[str] = frozenset()
    task_type: str | None = None
    verdict: Verdict | None = None
    reward: float | None = None
    tools: tuple[str, ...] = ()
    recovered: bool = False  # a step failed and a later one succeeded

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Pickle as one flat tuple: a query ships ~100 candidates between processes, and the
        default (per-field dataclass state, datetime, frozenset) cost ~9x as much."""
        return _candidate, (
            self.episode_id,
            self.description,
            self.domain,
            self.started_at.timestamp(),
            self.language,
            tuple(self.tags),
            self.task_type,
            self.verdict,
            self.reward,
            self.tools,
            self.recovered,
        )

    @classmethod
    def from_episode(cls, episode: Episode) -> Candidate:
        tools, recovered = tool_path([(s.tool, s.success) for s in episode.steps])
        return cls(
            episode_id=episode.episode_id,
            description=episode.task_description,
            domain=episode.context.domain,
            started_at=episode.started_at,
            language=episode.context.language,
            tags=frozenset(tag.lower() for tag in episode.context.tags),
            task_type=episode.task_type,
            verdict=episode.verdict,
            reward=episode.reward.total if episode.reward else None,
            tools=tools,
            recovered=recovered,
        )


def _candidate(
    episode_id: str,
    description: str,
    domain: str,
    started_at: float,
    language: str | None,
    tags: tuple[str, ...],
    task_type: str | None,
    verdict: Verdict | None,
    reward: float | None,
    tools: tuple[str, ...],
    recovered: bool,
) -> Candidate:
    return Candidate(
        episode_id,
        description,
        domain,
        datetime.fromtimestamp(started_at, UTC),
        language,
        frozenset(tags),
        task_type,
        verdict,
        reward,
        tools,
        recovered,
    )


@dataclass(frozen=True, slots=True)
class RankQuery:
    """The task being retrieved for, with the tool sets the predictor expects it to use."""

    description: str
    now: datetime
    domain: str | None = None  # None: unknown, matches nothing
    language: str | None = None
    tags: frozenset[str] = frozenset()
    task_type: str | None = None
    predicted_sets: Sequence[tuple[tuple[str, ...], float]] = ()  # (sorted tools, probability)
    set_reliability: float = 1.0  # how far ``predicted_sets`` has proved right, in [0, 1]


@dataclass(frozen=True, slots=True)
class RankingWeights:
    """Component weights and knobs; defaults were chosen on grouped cross-validation."""

    learned: float = 0.40
    semantic: float = 0.05
    keyword: float = 0.05
    fusion: float = 0.025
    context: float = 0.05
    outcome: float = 0.05
    recency: float = 0.05
    tool_overlap: float = 0.30  # scaled by the set posterior's measured reliability
    rrf_k: int = 60
    recency_half_life_days: float = 30.0
    mmr_lambda: float = 0.85  # 1.0 turns diversity off
    consensus_depth: int = 10  # top candidates by text evidence whose tool sets vote
    predictor_share: float = 0.5  # weight of the predictor's set posterior against the votes
    min_similarity: float = 0.2  # below this (and no other evidence): not relevant


DEFAULT_WEIGHTS = RankingWeights()


def fuse(
    ranked: Mapping[str, Sequence[str]], k: int = 60, weights: Mapping[str, float] | None = None
) -> dict[str, float]:
    """Reciprocal-rank fusion, scaled so an item ranked first by every source scores 1."""
    weights = weights or {}
    best = sum(weights.get(name, 1.0) for name in ranked) / (k + 1)
    scores: dict[str, float] = {}
    for name, ids in ranked.items():
        weight = weights.get(name, 1.0)
        for position, item in enumerate(dict.fromkeys(ids)):
            scores[item] = scores.get(item, 0.0) + weight / (k + position + 1)
    return {item: score / best for item, score in scores.items()} if best > 0 else scores


def normalize(hits: Sequence[tuple[str, float]]) -> dict[str, float]:
    """Each score divided by the list's best, floored at 0 (the first hit of an id counts)."""
    top = max((score for _, score in hits), default=0.0)
    if top <= 0:
        return {item: 0.0 for item, _ in hits}
    out: dict[str, float] = {}
    for item, score in hits:
        out.setdefault(item, max(score, 0.0) / top)
    return out


def context_match(query: RankQuery, candidate: Candidate) -> float:
    """Share of the query's known context features that the candidate has."""
    parts: list[tuple[float, float]] = []  # (weight, match)
    if query.domain is not None:
        parts.append((0.5, float(candidate.domain == query.domain)))
    if query.task_type is not None:
        parts.append((0.25, float(candidate.task_type == query.task_type)))
    if query.language is not None:
        parts.append((0.15, float(candidate.language == query.language)))
    if query.tags:
        union = query.tags | candidate.tags
        parts.append((0.1, len(query.tags & candidate.tags) / len(union)))
    total = sum(weight for weight, _ in parts)
    return sum(weight * match for weight, match in parts) / total if total else 0.0


_VERDICT_VALUE: dict[str | None, float] = {
    "success": 1.0,
    "partial": 0.6,
    "abstained": 0.3,
    "failure": 0.15,
    None: 0.3,
}


def outcome_score(candidate: Candidate) -> float:
    """Verdict value blended with reward; a failure that recovered from an error teaches more."""
    base = _VERDICT_VALUE.get(candidate.verdict, 0.3)
    if candidate.verdict == "failure" and candidate.recovered:
        base = 0.5
    if candidate.reward is None:
        return base
    return 0.7 * base + 0.3 * min(max(candidate.reward, 0.0), 1.0)


def recency_score(candidate: Candidate, now: datetime, half_life_days: float) -> float:
    age_days = max((now - candidate.started_at).total_seconds(), 0.0) / 86_400
    return 0.5 ** (age_days / half_life_days) if half_life_days > 0 else 1.0


def mmr(
    items: Sequence[T],
    scores: Mapping[int, float] | Sequence[float],
    similarity: Callable[[T, T], float],
    limit: int,
    lambda_: float,
) -> list[int]:
    """Maximal marginal relevance: indices of ``items`` picked greedily for score and novelty."""
    remaining = list(range(len(items)))
    chosen: list[int] = []
    while remaining and len(chosen) < limit:
        best = max(
            remaining,
            key=lambda i: (
                lambda_ * scores[i]
                - (1 - lambda_) * max((similarity(items[i], items[j]) for j in chosen), default=0.0)
            ),
        )
        chosen.append(best)
        remaining.remove(best)
    return chosen


def _words(text: str) -> frozenset[str]:
    return frozenset(_WORD.findall(text.lower()))


def _jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 0.0


def _why(b: ScoreBreakdown, candidate: Candidate, query: RankQuery) -> str:
    reasons: list[str] = []
    if b.learned >= 0.3:
        reasons.append(f"asks for the same kind of work ({b.learned:.2f})")
    if b.semantic >= 0.5:
        reasons.append(f"similar text ({b.semantic:.2f})")
    if b.keyword >= 0.5:
        reasons.append("shared keywords")
    if query.domain is not None and candidate.domain == query.domain:
        reasons.append(f"same domain ({candidate.domain})")
    if b.tool_overlap >= 0.5:
        reasons.append(f"uses the expected tools ({b.tool_overlap:.2f})")
    if candidate.verdict == "failure":
        reasons.append("failed, but recovered from an error" if candidate.recovered else "failed")
    elif candidate.verdict == "success":
        reasons.append("succeeded")
    return "; ".join(reasons) or "weak match"


def rank(
    query: RankQuery,
    sources: Mapping[str, Sequence[tuple[str, float]]],
    candidates: Mapping[str, Candidate],
    limit: int,
    weights: RankingWeights = DEFAULT_WEIGHTS,
) -> list[ScoredEpisode]:
    """Score every candidate, then pick ``limit`` of them with MMR. Best first."""
    semantic_raw = dict(sources.get("semantic", ()))
    text_parts = {
        "learned": {i: min(max(s, 0.0), 1.0) for i, s in sources.get("learned", ())},
        "semantic": normalize(sources.get("semantic", ())),
        "keyword": normalize(sources.get("keyword", ())),
        "fusion": fuse(
            {name: [i for i, _ in hits] for name, hits in sources.items()}, weights.rrf_k
        ),
    }
    pool = [candidates[i] for i in text_parts["fusion"] if i in candidates]
    text = {
        c.episode_id: sum(
            getattr(weights, name) * text_parts[name].get(c.episode_id, 0.0) for name in _TEXT_PARTS
        )
        for c in pool
    }
    by_text = sorted(pool, key=lambda c: (-text[c.episode_id], c.episode_id))
    posterior = set_posterior(
        query.predicted_sets,
        [(c.tools, text[c.episode_id]) for c in by_text[: weights.consensus_depth]],
        weights.predictor_share,
    )
    idf = tool_idf([c.tools for c in pool])
    reliability = min(max(query.set_reliability, 0.0), 1.0)
    matches: dict[frozenset[str], float] = {}
    rows: list[tuple[Candidate, ScoreBreakdown]] = []
    for c in pool:
        # Evidence that the episode is about this task at all; without any, leave it out.
        relevant = (
            semantic_raw.get(c.episode_id, 0.0) >= weights.min_similarity
            or text_parts["keyword"].get(c.episode_id, 0.0) > 0
            or text_parts["learned"].get(c.episode_id, 0.0) > 0
            or (query.domain is not None and c.domain == query.domain)
            or (query.task_type is not None and c.task_type == query.task_type)
        )
        if not relevant:
            continue
        key = frozenset(c.tools)
        if key not in matches:
            matches[key] = reliability * expected_match(posterior, c.tools, idf)
        parts = {name: text_parts[name].get(c.episode_id, 0.0) for name in _TEXT_PARTS}
        parts["context"] = context_match(query, c)
        parts["outcome"] = outcome_score(c)
        parts["recency"] = recency_score(c, query.now, weights.recency_half_life_days)
        parts["tool_overlap"] = matches[key]
        total = sum(getattr(weights, name) * value for name, value in parts.items())
        rows.append((c, ScoreBreakdown(**parts, total=total)))
    rows.sort(key=lambda row: (-row[1].total, row[0].episode_id))
    rows = rows[: max(limit * 4, limit)]  # MMR only reorders near the top
    words = [_words(c.description) for c, _ in rows]
    top = rows[0][1].total if rows else 0.0
    # Diversity over text only: episodes sharing a tool set are often exactly the relevant
    # ones, so penalising tool overlap here would undo the tool-set signal above.
    order = mmr(
        list(range(len(rows))),
        [b.total / top if top > 0 else 0.0 for _, b in rows],
        lambda i, j: _jaccard(words[i], words[j]),
        limit,
        weights.mmr_lambda,
    )
    return [_scored(*rows[i], query) for i in order]


def _scored(c: Candidate, b: ScoreBreakdown, query: RankQuery) -> ScoredEpisode:
    return ScoredEpisode(
        episode_id=c.episode_id,
        task_description=c.description,
        domain=c.domain,
        verdict=c.verdict,
        reward=c.reward,
        tools=list(c.tools),
        score=b.total,
        breakdown=b,
        why=_why(b, c, query),
    )
