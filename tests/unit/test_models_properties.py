"""Every record survives model → JSON → model unchanged, and hostile input raises our error.

Hypothesis generates the records (any unicode text but NUL and lone surrogates, sub-second
aware timestamps at any offset, nested JSON parameters) and the hostile values; the example
counts are pinned with ``settings`` so a run's size is known.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from typing import Any

import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from episodic_memory import (
    ContextPattern,
    DecisionPoint,
    Episode,
    ErrorRecovery,
    ExecutionStep,
    Heuristic,
    Pattern,
    Reflection,
    RewardScore,
    TaskContext,
    TaskOutcome,
    ToolSequence,
    ValidationError,
)
from episodic_memory.config import DEFAULT_LIMITS as L

ROUND_TRIPS = 150
HOSTILE = 300
_FAST = settings(
    max_examples=ROUND_TRIPS, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

# -- strategies ---------------------------------------------------------------------------------

_chars = st.characters(exclude_categories=("Cs",), exclude_characters="\x00")
text = st.text(_chars, max_size=40)
label = st.text(_chars, min_size=1, max_size=30).filter(str.strip)
tag = st.text(_chars, min_size=1, max_size=20).filter(str.strip)
offsets = st.integers(-23 * 60, 23 * 60).map(lambda m: timedelta(minutes=m))  # as ISO-8601 has
moments = st.datetimes(
    min_value=datetime(1971, 1, 1),
    max_value=datetime(2999, 12, 31),
    timezones=offsets.map(timezone),
)
finite = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12)
json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), finite, text)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(text, inner, max_size=4)),
    max_leaves=15,
)
json_object = st.dictionaries(text, json_value, max_size=5)

contexts = st.builds(
    TaskContext,
    language=st.none() | label,
    domain=label,
    tags=st.lists(tag, max_size=5),
    framework=st.none() | label,
    complexity=st.sampled_from(["simple", "moderate", "complex"]),
    task_type=st.none() | label,
)
steps = st.builds(
    ExecutionStep,
    tool=label,
    action=text,
    parameters=json_object,
    latency_ms=st.floats(min_value=0.0, max_value=L.max_latency_ms),
    tokens=st.integers(0, L.max_tokens),
    success=st.booleans(),
    observation=st.text(_chars, max_size=300),
    error=st.none() | text,
    timestamp=moments,
    metadata=json_object,
)
outcomes = st.builds(
    TaskOutcome,
    verdict=st.sampled_from(["success", "partial", "failure", "abstained"]),
    summary=text,
    completed=st.lists(text, max_size=3),
    failed=st.lists(text, max_size=3),
    reason=st.none() | text,
    artifacts=st.lists(text, max_size=3),
)
rewards = st.builds(
    RewardScore,
    total=st.floats(0.0, 1.0),
    outcome=finite,
    efficiency=finite,
    time_efficiency=finite,
    step_efficiency=finite,
    complexity_bonus=finite,
    error_penalty=finite,
    recovery_bonus=finite,
)
reflections = st.builds(
    Reflection,
    successes=st.lists(text, max_size=3),
    improvements=st.lists(text, max_size=3),
    insights=st.lists(text, max_size=3),
)


@st.composite
def episodes(draw: st.DrawFn) -> Episode:
    drawn = draw(st.lists(steps, max_size=4))
    numbered = [s.model_copy(update={"step_number": i + 1}) for i, s in enumerate(drawn)]
    outcome = draw(st.none() | outcomes)
    return Episode(
        task_description=draw(label),
        context=draw(contexts),
        task_type=draw(label),
        agent_id=draw(st.none() | label),
        status="completed" if outcome is not None else "active",
        steps=numbered,
        outcome=outcome,
        reward=draw(st.none() | rewards),
        reflection=draw(st.none() | reflections),
        started_at=draw(moments),
        completed_at=draw(st.none() | moments),
        metadata=draw(json_object),
        pattern_ids=draw(st.lists(text, max_size=3)),
        revision=draw(st.integers(0, 2**31)),
    )


_stats = {
    "pattern_id": text,
    "key": text,
    "domain": text,
    "task_type": st.none() | text,
    "occurrences": st.integers(0, 2**40),
    "successes": st.integers(0, 2**40),
    "total_latency_ms": st.floats(0.0, 1e15),
    "total_tokens": st.integers(0, 2**40),
    "confidence": st.floats(0.0, 1.0),
    "episode_ids": st.lists(text, max_size=3),
    "first_seen": moments,
    "last_seen": moments,
}
patterns = st.one_of(
    st.builds(ToolSequence, tools=st.lists(text, max_size=4), **_stats),
    st.builds(DecisionPoint, after_tools=st.lists(text, max_size=3), chosen_tool=text, **_stats),
    st.builds(
        ErrorRecovery,
        failed_tool=text,
        error_signature=text,
        recovery_tools=st.lists(text, max_size=3),
        **_stats,
    ),
    st.builds(
        ContextPattern,
        features=st.dictionaries(text, text, max_size=3),
        tools=st.lists(text, max_size=3),
        **_stats,
    ),
)
heuristics = st.builds(
    Heuristic,
    heuristic_id=text,
    condition=text,
    action=text,
    domain=text,
    trigger=st.sampled_from(["task_start", "after_tool", "after_error", "context"]),
    tool=st.none() | text,
    confidence=st.floats(0.0, 1.0),
    evidence_count=st.integers(0, 2**40),
    success_count=st.integers(0, 2**40),
    episode_ids=st.lists(text, max_size=3),
    created_at=moments,
    updated_at=moments,
)
PATTERN: TypeAdapter[Pattern] = TypeAdapter(Pattern)

# -- round trips --------------------------------------------------------------------------------


@_FAST
@given(episodes())
def test_an_episode_survives_json_and_python_round_trips(episode: Episode) -> None:
    assert Episode.model_validate_json(episode.model_dump_json()) == episode
    assert Episode.model_validate(episode.model_dump(mode="json")) == episode
    assert episode.started_at.utcoffset() == timedelta(0)
    assert all(s.timestamp.tzinfo is not None for s in episode.steps)


@_FAST
@given(patterns)
def test_every_pattern_kind_survives_a_round_trip_through_the_union(pattern: Pattern) -> None:
    again = PATTERN.validate_json(PATTERN.dump_json(pattern))
    assert type(again) is type(pattern)
    assert again == pattern
    assert PATTERN.validate_python(PATTERN.dump_python(pattern, mode="json")) == pattern


@_FAST
@given(heuristics)
def test_a_heuristic_survives_a_round_trip(heuristic: Heuristic) -> None:
    assert Heuristic.model_validate_json(heuristic.model_dump_json()) == heuristic


@_FAST
@given(moments)
def test_timestamps_keep_their_instant_to_the_microsecond(moment: datetime) -> None:
    step = ExecutionStep(tool="t", timestamp=moment)
    again = ExecutionStep.model_validate_json(step.model_dump_json())
    assert again.timestamp == moment
    assert again.timestamp.microsecond == moment.microsecond
    assert again.timestamp.utcoffset() == timedelta(0)


# -- hostile input ------------------------------------------------------------------------------

_STEP_TEXT = ["tool", "action", "observation", "error"]
_STEP_NUMBERS = ["latency_ms", "tokens", "step_number"]


def _raises_ours(model: type[pydantic.BaseModel], data: dict[str, Any], field: str) -> None:
    """Both ways in (python and JSON where expressible) raise our error naming ``field``."""
    with pytest.raises(ValidationError) as caught:
        model.model_validate(data)
    assert caught.value.field.startswith(f"{model.__name__}.{field}"), caught.value.field
    assert not isinstance(caught.value, pydantic.ValidationError)


@settings(max_examples=HOSTILE, deadline=None)
@given(
    field=st.sampled_from(_STEP_TEXT),
    before=text,
    poison=st.sampled_from(["\x00", "\ud800", "\udfff", "a\x00b"]),
    after=text,
)
def test_nul_and_lone_surrogates_in_step_text_are_rejected(
    field: str, before: str, poison: str, after: str
) -> None:
    data = {"tool": "t", field: before + poison + after}
    _raises_ours(ExecutionStep, data, field)


@settings(max_examples=HOSTILE, deadline=None)
@given(
    field=st.sampled_from(_STEP_NUMBERS),
    bad=st.one_of(
        st.sampled_from([math.nan, math.inf, -math.inf]),
        st.floats(max_value=-1e-9, allow_nan=False, allow_infinity=False),
        st.integers(max_value=-1),
    ),
)
def test_nan_infinity_and_negative_numbers_are_rejected(field: str, bad: float) -> None:
    _raises_ours(ExecutionStep, {"tool": "t", field: bad}, field)


_REWARD = {
    name: 0.0 for name in RewardScore.model_fields if name not in ("schema_version", "total")
}


@pytest.mark.parametrize(
    ("model", "data", "field"),
    [
        (ExecutionStep, {"tool": 5}, "tool"),
        (ExecutionStep, {"tool": "t", "tokens": "many"}, "tokens"),
        (ExecutionStep, {"tool": "t", "tokens": 1.5}, "tokens"),
        (ExecutionStep, {"tool": "t", "parameters": []}, "parameters"),
        (ExecutionStep, {"tool": "t", "parameters": {"a": {1, 2}}}, "parameters"),
        (ExecutionStep, {"tool": "t", "timestamp": "yesterday"}, "timestamp"),
        (ExecutionStep, {"tool": "t", "success": [True]}, "success"),
        (Episode, {"task_description": ["x"]}, "task_description"),
        (Episode, {"task_description": "x", "steps": "abc"}, "steps"),
        (Episode, {"task_description": "x", "revision": -1}, "revision"),
        (Episode, {"task_description": "x", "context": {"tags": "a"}}, "context.tags"),
        (TaskOutcome, {"verdict": 1}, "verdict"),
        (TaskOutcome, {"verdict": "success", "completed": "all"}, "completed"),
        (RewardScore, {"total": 1.5, **_REWARD}, "total"),
        (Reflection, {"insights": [1]}, "insights"),
        (ToolSequence, {"pattern_id": "p", "key": "k", "tools": "ab"}, "tools"),
        (
            ToolSequence,
            {"pattern_id": "p", "key": "k", "tools": [], "confidence": 2},
            "confidence",
        ),
        (
            ErrorRecovery,
            {
                "pattern_id": "p",
                "key": "k",
                "failed_tool": "a",
                "error_signature": "e",
                "recovery_tools": [],
                "occurrences": -1,
            },
            "occurrences",
        ),
        (
            Heuristic,
            {"heuristic_id": "h", "condition": "c", "action": "a", "confidence": math.nan},
            "confidence",
        ),
        (
            Heuristic,
            {"heuristic_id": "h", "condition": "c", "action": "a", "trigger": "whenever"},
            "trigger",
        ),
    ],
)
def test_wrong_types_and_out_of_range_values_name_their_field(
    model: type[pydantic.BaseModel], data: dict[str, Any], field: str
) -> None:
    _raises_ours(model, data, field)


@pytest.mark.parametrize(
    ("model", "data", "field"),
    [
        (Episode, {"task_description": "x" * (L.max_description_chars + 1)}, "task_description"),
        (
            ExecutionStep,
            {"tool": "t", "observation": "x" * (L.max_observation_chars + 1)},
            "observation",
        ),
        (ExecutionStep, {"tool": "t" * (L.max_tool_chars + 1)}, "tool"),
        (TaskContext, {"tags": ["x" * (L.max_tag_chars + 1)]}, "tags"),
        (TaskContext, {"tags": [f"t{i}" for i in range(L.max_tags + 1)]}, "tags"),
        (
            ExecutionStep,
            {"tool": "t", "parameters": {"blob": "x" * L.max_json_bytes}},
            "parameters",
        ),
        (Reflection, {"insights": ["x" * (L.max_action_chars + 1)]}, "insights"),
        (Episode, {"task_description": "x", "episode_id": "a\x00b"}, "episode_id"),
        (Episode, {"task_description": "x", "pattern_ids": ["\udc80"]}, "pattern_ids"),
        (Episode, {"task_description": "x", "metadata": {"\ud800": 1}}, "metadata"),
        (Reflection, {"successes": ["ok", "bad\x00"]}, "successes"),
    ],
)
def test_huge_strings_and_poisoned_ids_are_rejected(
    model: type[pydantic.BaseModel], data: dict[str, Any], field: str
) -> None:
    _raises_ours(model, data, field)


@settings(max_examples=50, deadline=None)
@given(depth=st.integers(L.max_json_depth + 1, 3_000))
def test_deeply_nested_parameters_are_rejected_at_any_depth(depth: int) -> None:
    nested: Any = 1
    for _ in range(depth):
        nested = {"a": nested}
    with pytest.raises(ValidationError) as caught:
        ExecutionStep(tool="t", parameters=nested)
    assert caught.value.field.startswith("ExecutionStep.parameters")


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ('{"tool": "t", "latency_ms": NaN}', "ExecutionStep.latency_ms"),
        ('{"tool": "t", "latency_ms": Infinity}', "ExecutionStep.latency_ms"),
        ('{"tool": "t", "tokens": -1}', "ExecutionStep.tokens"),
        ('{"tool": "t", "timestamp": "9999-12-31T23:59:59-05:00"}', "ExecutionStep.timestamp"),
        (
            '{"tool": "t", "parameters": {"n": 123456789012345678901234567890}}',
            "ExecutionStep.parameters",
        ),
        ('{"tool": "t", "observation": "\\u0000"}', "ExecutionStep.observation"),
        ('{"tool": "t", "observation": "\\ud800"}', "ExecutionStep"),  # the JSON parser refuses
        ('{"tool": "t"', "ExecutionStep"),
    ],
)
def test_hostile_json_raises_our_error(raw: str, field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        ExecutionStep.model_validate_json(raw)
    assert caught.value.field == field
