"""Models reject bad input with our typed error naming the field, and round-trip losslessly."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone

import pytest

from episodic_memory import (
    Episode,
    EpisodicMemoryError,
    ExecutionStep,
    TaskContext,
    TaskOutcome,
    ValidationError,
)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"tool": ""}, "ExecutionStep.tool"),
        ({"tool": "   "}, "ExecutionStep.tool"),
        ({"tool": "t", "latency_ms": -1}, "ExecutionStep.latency_ms"),
        ({"tool": "t", "latency_ms": math.nan}, "ExecutionStep.latency_ms"),
        ({"tool": "t", "latency_ms": math.inf}, "ExecutionStep.latency_ms"),
        ({"tool": "t", "tokens": -5}, "ExecutionStep.tokens"),
        ({"tool": "t", "observation": "x" * 100_001}, "ExecutionStep.observation"),
        ({"tool": "t", "action": "a\x00b"}, "ExecutionStep.action"),
        ({"tool": "t", "observation": "bad \udc80 surrogate"}, "ExecutionStep.observation"),
        ({"tool": "t", "parameters": {"x": math.nan}}, "ExecutionStep.parameters.x"),
        ({"tool": "t", "latncy_ms": 3}, "ExecutionStep.latncy_ms"),
    ],
)
def test_bad_step_values_raise_our_error_naming_the_field(
    kwargs: dict[str, object], field: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        ExecutionStep(**kwargs)  # type: ignore[arg-type]
    assert caught.value.field == field
    assert isinstance(caught.value, EpisodicMemoryError)
    assert isinstance(caught.value, ValueError)


def test_deeply_nested_parameters_are_rejected_with_a_fix() -> None:
    nested: dict[str, object] = {}
    cursor = nested
    for _ in range(40):
        cursor["x"] = {}
        cursor = cursor["x"]  # type: ignore[assignment]
    with pytest.raises(ValidationError, match="nested deeper") as caught:
        ExecutionStep(tool="t", parameters=nested)  # type: ignore[arg-type]
    assert caught.value.field == "ExecutionStep.parameters"


def test_unknown_verdict_and_too_many_tags_are_rejected() -> None:
    with pytest.raises(ValidationError) as verdict:
        TaskOutcome(verdict="great")  # type: ignore[arg-type]
    assert verdict.value.field == "TaskOutcome.verdict"
    assert "success" in verdict.value.fix
    with pytest.raises(ValidationError) as tags:
        TaskContext(tags=[f"t{i}" for i in range(33)])
    assert tags.value.field == "TaskContext.tags"


def test_nested_errors_carry_the_full_path() -> None:
    with pytest.raises(ValidationError) as caught:
        Episode.model_validate({"task_description": "x", "steps": [{"tool": "a", "tokens": -1}]})
    assert caught.value.field == "Episode.steps.0.tokens"


def test_naive_timestamps_are_taken_as_utc_and_offsets_normalised() -> None:
    naive = ExecutionStep(tool="t", timestamp=datetime(2026, 1, 2, 3, 4, 5, 678901))
    assert naive.timestamp.tzinfo is UTC
    shifted = ExecutionStep(
        tool="t", timestamp=datetime(2026, 1, 2, 5, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    )
    assert shifted.timestamp == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_episode_round_trips_through_json_losslessly() -> None:
    episode = Episode(
        task_description="Résumé parsing — 日本語 ✓",
        context=TaskContext(language="python", domain="etl", tags=["a", "ü"]),
        steps=[
            ExecutionStep(
                step_number=1,
                tool="read_file",
                parameters={"path": "/tmp/x", "n": [1, 2.5, None, True]},
                latency_ms=12.5,
                tokens=7,
                observation="ok",
                metadata={"k": {"nested": "v"}},
            )
        ],
        status="completed",
        outcome=TaskOutcome.partial(completed=["a"], failed=["b"]),
    )
    again = Episode.model_validate_json(episode.model_dump_json())
    assert again == episode


def test_old_json_shape_without_later_fields_still_loads() -> None:
    old = '{"episode_id": "e1", "task_description": "legacy", "steps": [{"tool": "t"}]}'
    episode = Episode.model_validate_json(old)
    assert episode.revision == 0
    assert episode.pattern_ids == []
    assert episode.steps[0].parameters == {}


def test_integers_beyond_64_bits_in_parameters_are_rejected_as_bad_input() -> None:
    with pytest.raises(ValidationError) as caught:
        ExecutionStep(tool="t", parameters={"n": 2**70})
    assert caught.value.field == "ExecutionStep.parameters"
