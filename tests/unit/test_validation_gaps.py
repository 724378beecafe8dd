"""Every way into a record raises our ValidationError: assignment, pattern parsing, text checks."""

from __future__ import annotations

import pytest

from episodic_memory.config import FlushPolicy
from episodic_memory.core.models import TaskContext
from episodic_memory.core.patterns import Heuristic, ToolSequence, parse_pattern
from episodic_memory.errors import ValidationError


def test_assigning_a_bad_value_after_construction_raises_our_error_naming_the_field() -> None:
    context = TaskContext()
    with pytest.raises(ValidationError) as refused:
        context.domain = ""
    assert refused.value.field == "TaskContext.domain"
    assert context.domain == "general"


def test_assigning_to_a_frozen_config_raises_our_error() -> None:
    with pytest.raises(ValidationError):
        FlushPolicy().flush_max_steps = 3  # type: ignore[misc]


def test_parse_pattern_reads_every_kind_and_refuses_bad_ones_with_our_error() -> None:
    pattern = ToolSequence(pattern_id="p1", key="k", tools=["read_file", "pytest"])
    assert parse_pattern(pattern.model_dump_json()) == pattern
    assert parse_pattern(pattern.model_dump(mode="json")) == pattern
    with pytest.raises(ValidationError) as refused:
        parse_pattern('{"kind": "tool_sequence"}')
    assert refused.value.field.startswith("Pattern.")
    with pytest.raises(ValidationError):
        parse_pattern('{"kind": "no_such_kind"}')
    with pytest.raises(ValidationError):
        parse_pattern(b"not json")


@pytest.mark.parametrize("bad", ["nul\x00inside", "lone \ud800 surrogate"])
def test_pattern_and_heuristic_text_refuses_nul_and_lone_surrogates(bad: str) -> None:
    with pytest.raises(ValidationError, match="tools"):
        ToolSequence(pattern_id="p", key="k", tools=["ok", bad])
    with pytest.raises(ValidationError, match="condition"):
        Heuristic(heuristic_id="h", condition=bad, action="retry")
    with pytest.raises(ValidationError, match="features"):
        parse_pattern(
            {
                "kind": "context_pattern",
                "pattern_id": "p",
                "key": "k",
                "features": {bad: "x"},
                "tools": [],
            }
        )
