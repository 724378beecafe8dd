"""Hypothesis strategies for valid records: any unicode, sub-second aware timestamps, JSON."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import strategies as st
from pydantic import JsonValue

from episodic_memory.core.models import (
    Episode,
    ExecutionStep,
    Reflection,
    RewardScore,
    TaskContext,
    TaskOutcome,
)

# Everything the models accept: no NUL, no lone surrogates (both rejected on purpose).
CHARS = st.characters(exclude_categories=("Cs",), exclude_characters="\x00")
text = st.text(CHARS, max_size=40)
label = st.text(CHARS, min_size=1, max_size=20).filter(lambda s: bool(s.strip()))
timestamps = st.datetimes(
    min_value=datetime(1971, 1, 1),
    max_value=datetime(2100, 1, 1),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30))]),
)
json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | text
)
json_value: st.SearchStrategy[JsonValue] = st.recursive(
    json_leaf,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(text, children, max_size=3),
    max_leaves=8,
)
json_object = st.dictionaries(text, json_value, max_size=4)

contexts = st.builds(
    TaskContext,
    language=st.none() | label,
    domain=label,
    tags=st.lists(label, max_size=4),
    framework=st.none() | label,
    complexity=st.sampled_from(["simple", "moderate", "complex"]),
    task_type=st.none() | label,
)


def _step(number: int) -> st.SearchStrategy[ExecutionStep]:
    return st.builds(
        ExecutionStep,
        step_number=st.just(number),
        tool=label,
        action=text,
        parameters=json_object,
        latency_ms=st.floats(min_value=0, max_value=1e6, allow_nan=False),
        tokens=st.integers(min_value=0, max_value=10**6),
        success=st.booleans(),
        observation=text,
        error=st.none() | text,
        timestamp=timestamps,
        metadata=json_object,
    )


def steps(max_size: int = 6) -> st.SearchStrategy[list[ExecutionStep]]:
    numbers = st.lists(st.integers(1, 10_000), unique=True, max_size=max_size).map(sorted)
    return numbers.flatmap(lambda ns: st.tuples(*(_step(n) for n in ns)).map(list))


outcomes = st.builds(
    TaskOutcome,
    verdict=st.sampled_from(["success", "partial", "failure", "abstained"]),
    summary=text,
    completed=st.lists(text, max_size=3),
    failed=st.lists(text, max_size=3),
    reason=st.none() | text,
    artifacts=st.lists(text, max_size=3),
)
unit = st.floats(min_value=0, max_value=1, allow_nan=False)
rewards = st.builds(
    RewardScore,
    total=unit,
    outcome=unit,
    efficiency=unit,
    time_efficiency=unit,
    step_efficiency=unit,
    complexity_bonus=unit,
    error_penalty=unit,
    recovery_bonus=unit,
)
reflections = st.builds(
    Reflection,
    successes=st.lists(text, max_size=2),
    improvements=st.lists(text, max_size=2),
    insights=st.lists(text, max_size=2),
)


@st.composite
def episodes(draw: st.DrawFn) -> Episode:
    completed = draw(st.booleans())
    started = draw(timestamps)
    return Episode(
        task_description=draw(label),
        context=draw(contexts),
        task_type=draw(label),
        agent_id=draw(st.none() | label),
        status="completed" if completed else "active",
        steps=draw(steps()),
        outcome=draw(outcomes) if completed else None,
        reward=draw(st.none() | rewards) if completed else None,
        reflection=draw(st.none() | reflections) if completed else None,
        started_at=started,
        completed_at=draw(timestamps) if completed else None,
        metadata=draw(json_object),
        pattern_ids=draw(st.lists(label, max_size=3)),
        revision=draw(st.integers(min_value=0, max_value=2**31)),
    )
