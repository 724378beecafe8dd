"""What retrieval hands back to an agent: ranked episodes that explain their scores, the
patterns and heuristics that apply, suggested next tools, and a prompt-sized rendering.

Records are plain pydantic models (``core.base.Record``), so they cross a Ray boundary as
cheaply as a dict and serialize to JSON for the CLI.
"""

from __future__ import annotations

from pydantic import Field

from episodic_memory.core.base import Record
from episodic_memory.core.models import Verdict
from episodic_memory.core.patterns import (
    DecisionPoint,
    ErrorRecovery,
    Heuristic,
    Pattern,
    ToolSequence,
)

__all__ = [
    "CHARS_PER_TOKEN",
    "RetrievedContext",
    "ScoreBreakdown",
    "ScoredEpisode",
    "SuggestedTool",
    "ToolPrediction",
]

CHARS_PER_TOKEN = 4
"""Rough size of one token in English text; budgets are approximate by design."""


class ScoreBreakdown(Record):
    """Every component of an episode's score, each in [0, 1]; ``total`` is their weighted sum.

    ``fusion`` is the reciprocal-rank agreement of the candidate sources (semantic, keyword,
    learned, metadata); ``semantic`` and ``keyword`` are each source's own normalised score;
    ``learned`` is the similarity over the words the memory learned to predict tool use;
    ``tool_overlap`` the expected match of the episode's tool set with the task's, discounted
    by the tool predictor's measured reliability.
    """

    learned: float = 0.0
    semantic: float = 0.0
    keyword: float = 0.0
    fusion: float = 0.0
    context: float = 0.0
    outcome: float = 0.0
    recency: float = 0.0
    tool_overlap: float = 0.0
    total: float = 0.0


class ScoredEpisode(Record):
    """One retrieved episode, small enough to ship: its tools but not its steps."""

    episode_id: str
    task_description: str
    domain: str
    verdict: Verdict | None = None
    reward: float | None = None
    tools: list[str] = Field(default_factory=list)  # step order, consecutive repeats collapsed
    score: float
    breakdown: ScoreBreakdown
    why: str = ""


class SuggestedTool(Record):
    """A tool to call, in suggested order. ``source`` names who proposed it (``+``-joined)."""

    tool: str
    confidence: float = Field(ge=0.0, le=1.0)
    source: str


class ToolPrediction(Record):
    """What the tool predictor expects a task to use, before anything has run.

    ``tools``: each tool's probability of being used; ``sets``: the most probable tool sets
    as a whole (sorted names, calibrated probability); ``sequence``: the most likely first
    tools, in order; ``neighbours``: past successful episodes most alike in the words that
    predict tools, as ``(episode_id, similarity)``; ``reliability``: the mean probability the
    set posterior recently gave the set an episode then used (0: not measured yet).
    """

    tools: list[tuple[str, float]] = Field(default_factory=list)
    sequence: list[str] = Field(default_factory=list)
    sets: list[tuple[list[str], float]] = Field(default_factory=list)
    neighbours: list[tuple[str, float]] = Field(default_factory=list)
    reliability: float = Field(default=0.0, ge=0.0, le=1.0)


_EPISODES_HEADER = "Similar past tasks (best first):"
_HEURISTICS_HEADER = "Learned rules:"
_PATTERNS_HEADER = "Patterns:"
_HEADERS = frozenset({_EPISODES_HEADER, _HEURISTICS_HEADER, _PATTERNS_HEADER})


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: max(limit - 1, 0)].rstrip() + "…"


def _describe_pattern(pattern: Pattern) -> str:
    stats = f"(confidence {pattern.confidence:.2f}, seen {pattern.occurrences}×)"
    if isinstance(pattern, ToolSequence):
        return f"sequence that worked: {' → '.join(pattern.tools)} {stats}"
    if isinstance(pattern, DecisionPoint):
        after = " → ".join(pattern.after_tools) or "the start"
        return f"after {after}, chose {pattern.chosen_tool} {stats}"
    if isinstance(pattern, ErrorRecovery):
        recovery = " → ".join(pattern.recovery_tools)
        return f"when {pattern.failed_tool} fails ({pattern.error_signature}): {recovery} {stats}"
    where = ", ".join(f"{key}={value}" for key, value in sorted(pattern.features.items()))
    return f"in {where}: {', '.join(pattern.tools)} {stats}"


class RetrievedContext(Record):
    """Ranked past experience for one task, most useful first."""

    query: str
    episodes: list[ScoredEpisode] = Field(default_factory=list)
    patterns: list[Pattern] = Field(default_factory=list)
    heuristics: list[Heuristic] = Field(default_factory=list)
    suggested_tools: list[SuggestedTool] = Field(default_factory=list)
    explanation: str | None = None  # set when nothing relevant was found, and why

    def to_prompt(self, max_tokens: int = 800) -> str:
        """A compact plain-text briefing within about ``max_tokens`` tokens.

        Sections in order of how much they change an agent's next move: what to call, what
        worked on similar tasks, the rules learned, then the patterns. Lines that would
        overflow the budget are shortened, and whatever still does not fit is left out.
        """
        budget = max(max_tokens, 0) * CHARS_PER_TOKEN
        lines: list[str] = [f"Past experience for: {_clip(self.query, 160)}"]
        if self.explanation:
            lines.append(f"Note: {self.explanation}")
        if self.suggested_tools:
            tools = ", ".join(f"{s.tool} ({s.confidence:.2f})" for s in self.suggested_tools)
            lines.append(f"Suggested tools, in order: {tools}")
        if self.episodes:
            lines.append(_EPISODES_HEADER)
        for rank, episode in enumerate(self.episodes, start=1):
            outcome: str = episode.verdict or "unfinished"
            if episode.reward is not None:
                outcome += f", reward {episode.reward:.2f}"
            tools = " → ".join(episode.tools) or "no tools"
            lines.append(
                f"{rank}. [{outcome}] {_clip(episode.task_description, 240)} | tools: {tools}"
            )
        if self.heuristics:
            lines.append(_HEURISTICS_HEADER)
        for heuristic in self.heuristics:
            lines.append(
                f"- if {heuristic.condition}: {heuristic.action} "
                f"(confidence {heuristic.confidence:.2f}, {heuristic.evidence_count} episodes)"
            )
        if self.patterns:
            lines.append(_PATTERNS_HEADER)
        lines.extend(f"- {_describe_pattern(pattern)}" for pattern in self.patterns)
        return _fit(lines, budget)


def _fit(lines: list[str], budget: int) -> str:
    """Join lines in order until the character budget is spent; shorten the one that overflows."""
    kept: list[str] = []
    used = 0
    for line in lines:
        room = budget - used - (1 if kept else 0)
        if room <= 0:
            break
        if len(line) > room:
            if room >= 40 and line not in _HEADERS:  # a shortened line must still say something
                kept.append(_clip(line, room))
            break
        kept.append(line)
        used += len(line) + (1 if len(kept) > 1 else 0)
    # A section header without any item under it is noise.
    while kept and kept[-1] in _HEADERS:
        kept.pop()
    return "\n".join(kept)
