"""RetrievedContext renders a bounded, most-important-first prompt and round-trips as JSON."""

from __future__ import annotations

import pytest

from episodic_memory import ValidationError
from episodic_memory.core.context import (
    CHARS_PER_TOKEN,
    RetrievedContext,
    ScoreBreakdown,
    ScoredEpisode,
    SuggestedTool,
    ToolPrediction,
)
from episodic_memory.core.patterns import ErrorRecovery, Heuristic, ToolSequence


def episode(n: int, description: str = "") -> ScoredEpisode:
    return ScoredEpisode(
        episode_id=f"ep-{n}",
        task_description=description or f"Cancel pending order number {n} for the customer",
        domain="retail",
        verdict="success",
        reward=0.9,
        tools=["find_user", "get_order", "cancel_order"],
        score=1.0 - n / 100,
        breakdown=ScoreBreakdown(semantic=0.8, total=1.0 - n / 100),
        why="similar text",
    )


def full_context(episodes: int = 5) -> RetrievedContext:
    return RetrievedContext(
        query="Cancel my order",
        episodes=[episode(i) for i in range(episodes)],
        patterns=[
            ToolSequence(
                pattern_id="p1",
                key="k1",
                tools=["find_user", "cancel_order"],
                confidence=0.8,
                occurrences=12,
            ),
            ErrorRecovery(
                pattern_id="p2",
                key="k2",
                failed_tool="cancel_order",
                error_signature="order not pending",
                recovery_tools=["get_order"],
                confidence=0.5,
                occurrences=3,
            ),
        ],
        heuristics=[
            Heuristic(
                heuristic_id="h1",
                condition="for cancel tasks in domain retail",
                action="start with find_user",
                confidence=0.7,
                evidence_count=9,
            )
        ],
        suggested_tools=[
            SuggestedTool(tool="find_user", confidence=0.9, source="predictor"),
            SuggestedTool(tool="cancel_order", confidence=0.6, source="episodes"),
        ],
    )


def test_prompt_lists_tools_then_episodes_then_rules_then_patterns() -> None:
    prompt = full_context().to_prompt(max_tokens=2000)
    order = [
        prompt.index("Suggested tools"),
        prompt.index("1. [success, reward 0.90]"),
        prompt.index("start with find_user"),
        prompt.index("when cancel_order fails"),
    ]
    assert order == sorted(order)
    assert "find_user → get_order → cancel_order" in prompt


@pytest.mark.parametrize("max_tokens", [0, 5, 12, 30, 60, 120, 400])
def test_prompt_never_exceeds_the_token_budget(max_tokens: int) -> None:
    long = full_context(episodes=40)
    long.episodes[0] = episode(0, "word " * 3000)
    assert len(long.to_prompt(max_tokens=max_tokens)) <= max_tokens * CHARS_PER_TOKEN


def test_a_small_budget_keeps_the_most_important_part() -> None:
    prompt = full_context(episodes=40).to_prompt(max_tokens=60)
    assert "Suggested tools" in prompt
    assert "Patterns:" not in prompt
    assert not prompt.rstrip().endswith(":")  # no header left without items


def test_empty_context_renders_its_explanation() -> None:
    context = RetrievedContext(query="anything", explanation="memory has no episodes yet")
    assert "memory has no episodes yet" in context.to_prompt()


def test_context_round_trips_through_json_with_its_patterns() -> None:
    original = full_context()
    restored = RetrievedContext.model_validate_json(original.model_dump_json())
    assert restored == original
    assert isinstance(restored.patterns[1], ErrorRecovery)


def test_a_tool_prediction_round_trips_and_defaults_to_knowing_nothing() -> None:
    empty = ToolPrediction()
    assert (empty.tools, empty.sets, empty.neighbours, empty.reliability) == ([], [], [], 0.0)
    full = ToolPrediction(
        tools=[("find_user", 0.9)],
        sequence=["find_user"],
        sets=[(["cancel_order", "find_user"], 0.7)],
        neighbours=[("ep-1", 0.8)],
        reliability=0.6,
    )
    assert ToolPrediction.model_validate_json(full.model_dump_json()) == full
    with pytest.raises(ValidationError):
        ToolPrediction(reliability=1.5)
