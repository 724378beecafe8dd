"""Every episode gets a coarse, predictable task type for the index."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from episodic_memory import TaskContext
from episodic_memory.core.task_type import TASK_TYPES, classify_task


@pytest.mark.parametrize(
    ("description", "expected"),
    [
        ("Fix the failing test in the parser", "debugging"),
        ("Debugging the crash in worker.py: Traceback shows KeyError", "debugging"),
        ("Write unit tests for the CSV parser", "testing"),
        ("Refactor the payment module to remove duplication", "refactoring"),
        ("Update the README and the docstrings", "documentation"),
        ("Deploy the service to kubernetes with helm", "devops"),
        ("Convert the sales spreadsheet to parquet and aggregate by region", "data_processing"),
        ("Analyze last week's latency metrics and report the p99 trend", "analysis"),
        ("Summarize recent papers on retrieval augmented generation", "research"),
        ("Implement a REST endpoint that returns orders", "code_generation"),
        ("Cancel my flight reservation and refund the payment", "customer_service"),
        ("hello there", "general"),
        ("", "general"),
    ],
)
def test_descriptions_are_classified_by_their_keywords(description: str, expected: str) -> None:
    assert classify_task(description, TaskContext()) == expected


def test_an_explicit_task_type_in_the_context_always_wins() -> None:
    context = TaskContext(task_type="Billing-Dispute", tags=["customer_service"])
    assert classify_task("Fix the failing test", context) == "Billing-Dispute"


def test_keywords_match_whole_words_not_fragments() -> None:
    assert classify_task("bring the helmet and the testament", TaskContext()) == "general"
    assert classify_task("the tests were tested", TaskContext()) == "testing"


def test_a_tag_or_domain_naming_the_type_outweighs_a_stray_keyword() -> None:
    by_tag = TaskContext(domain="retail", tags=["customer_service", "retail"])
    assert classify_task("my lamp arrived broken", by_tag) == "customer_service"
    assert classify_task("my lamp arrived broken", TaskContext()) == "debugging"
    assert classify_task("move the box", TaskContext(domain="airline")) == "customer_service"
    assert classify_task("move the box", TaskContext(tags=["DevOps"])) == "devops"


def test_ties_go_to_the_more_specific_type() -> None:
    # one keyword each for refactoring ("refactor") and customer service ("payment")
    assert classify_task("refactor payment", TaskContext()) == "refactoring"


@settings(max_examples=300, deadline=None)
@given(
    description=st.text(max_size=300),
    tags=st.lists(st.sampled_from(["customer_service", "devops", "x", "retail"]), max_size=3),
)
def test_the_result_is_always_a_known_type_and_deterministic(
    description: str, tags: list[str]
) -> None:
    context = TaskContext(tags=tags)
    first = classify_task(description, context)
    assert first in TASK_TYPES
    assert classify_task(description, context) == first
