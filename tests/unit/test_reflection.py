"""Reflection turns an episode into a few short, reusable sentences, the same way every time."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from episodic_memory import Episode, ExecutionStep, TaskContext, TaskOutcome, ValidationError
from episodic_memory.core.reflection import MAX_ITEM_CHARS, MAX_ITEMS, reflect
from episodic_memory.core.reward import compute_reward


def ok(tool: str, latency_ms: float = 100.0) -> ExecutionStep:
    return ExecutionStep(tool=tool, latency_ms=latency_ms)


def bad(tool: str, error: str, latency_ms: float = 100.0) -> ExecutionStep:
    return ExecutionStep(tool=tool, success=False, error=error, latency_ms=latency_ms)


def finished(
    steps: list[ExecutionStep], outcome: TaskOutcome, complexity: str = "moderate"
) -> Episode:
    return Episode(
        task_description="fix the flaky integration test",
        task_type="debugging",
        context=TaskContext(domain="backend", complexity=complexity),  # type: ignore[arg-type]
        steps=steps,
        outcome=outcome,
        status="completed",
    )


def lines(episode: Episode) -> tuple[list[str], list[str], list[str]]:
    r = reflect(episode, compute_reward(episode))
    return r.successes, r.improvements, r.insights


def test_a_success_names_its_tool_chain_in_successes_and_insights() -> None:
    ep = finished(
        [ok("read_file"), ok("edit_file"), ok("edit_file"), ok("run_tests")], TaskOutcome.success()
    )
    successes, improvements, insights = lines(ep)
    assert any("read_file → edit_file → run_tests" in s for s in successes)
    assert any("debugging tasks in backend" in s and "run_tests" in s for s in insights)
    assert improvements == []


def test_a_recovery_is_credited_and_becomes_a_reusable_lesson() -> None:
    ep = finished(
        [bad("search_web", "HTTP 429 Too Many Requests\nretry later"), ok("search_docs")],
        TaskOutcome.success(),
    )
    successes, _, insights = lines(ep)
    assert "Recovered from a search_web failure with search_docs" in successes
    assert (
        "When search_web fails with HTTP 429 Too Many Requests, search_docs recovered" in insights
    )


def test_a_tool_that_keeps_failing_is_named_with_its_last_error() -> None:
    ep = finished(
        [
            bad("run_tests", "3 failed"),
            ok("edit_file"),
            bad("run_tests", "2 failed"),
            bad("run_tests", "ImportError: no module named foo"),
        ],
        TaskOutcome.failure("tests still failing"),
    )
    _, improvements, insights = lines(ep)
    assert improvements[0] == "Failed: tests still failing"
    assert any(
        "run_tests failed 3 times" in s and "ImportError: no module named foo" in s
        for s in improvements
    )
    assert not any("nothing recovered it" in s and "run_tests" in s for s in improvements)
    assert any("run_tests is unreliable here: 3 of 3 calls failed" in s for s in insights)
    assert any("run_tests failing (ImportError" in s for s in insights)


def test_a_single_unrecovered_failure_is_reported_once() -> None:
    ep = finished([ok("a"), bad("deploy", "permission denied"), ok("b")], TaskOutcome.success())
    _, improvements, _ = lines(ep)
    assert improvements == ["deploy failed (permission denied) and nothing recovered it"]


def test_slow_steps_long_episodes_and_abstention_are_improvements() -> None:
    steps = [ok(f"tool_{i}", 50.0) for i in range(20)] + [ok("bulk_export", 90_000.0)]
    ep = finished(steps, TaskOutcome.abstained("no credentials for prod"), complexity="simple")
    _, improvements, _ = lines(ep)
    assert improvements[0].startswith("Abstained (no credentials for prod)")
    assert any("Step 21 (bulk_export) took 90000 ms" in s for s in improvements)
    assert any("Took 21 steps where about 3 are expected" in s for s in improvements)


def test_a_partial_outcome_lists_what_was_done_and_what_was_not() -> None:
    ep = finished(
        [ok("a")], TaskOutcome.partial(completed=["migrate users"], failed=["migrate orders"])
    )
    successes, improvements, _ = lines(ep)
    assert "Completed 1 of 2 item(s): migrate users" in successes
    assert "Not completed: migrate orders" in improvements


def test_reflection_without_an_outcome_raises_our_error() -> None:
    active = Episode(task_description="running", steps=[ok("a")])
    reward = compute_reward(finished([ok("a")], TaskOutcome.success()))
    with pytest.raises(ValidationError) as caught:
        reflect(active, reward)
    assert caught.value.field == "Episode.outcome"


def test_huge_errors_and_many_failing_tools_stay_within_bounds() -> None:
    steps = [bad(f"tool_{i}_{'x' * 150}", "E" * 5_000 + "\nmore") for i in range(200)]
    ep = finished(steps, TaskOutcome.failure("r" * 10_000))
    for sentences in lines(ep):
        assert len(sentences) <= MAX_ITEMS
        assert all(len(s) <= MAX_ITEM_CHARS for s in sentences)


_text = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=300)
_step = st.builds(
    ExecutionStep,
    tool=st.sampled_from(["search_web", "search_docs", "run_tests", "edit_file", "deploy"]),
    success=st.booleans(),
    latency_ms=st.floats(min_value=0.0, max_value=1e7),
    error=st.one_of(st.none(), _text),
)
_outcome = st.one_of(
    st.builds(TaskOutcome.success, summary=_text),
    st.builds(TaskOutcome.failure, reason=_text),
    st.builds(TaskOutcome.abstained, reason=_text),
    st.builds(
        TaskOutcome.partial,
        completed=st.lists(_text, max_size=8),
        failed=st.lists(_text, max_size=8),
    ),
)


@settings(max_examples=200, deadline=None)
@given(steps=st.lists(_step, max_size=40), outcome=_outcome)
def test_reflection_is_deterministic_bounded_and_unique(
    steps: list[ExecutionStep], outcome: TaskOutcome
) -> None:
    ep = finished(steps, outcome)
    reward = compute_reward(ep)
    first = reflect(ep, reward)
    assert first == reflect(ep.model_copy(deep=True), reward)
    for sentences in (first.successes, first.improvements, first.insights):
        assert len(sentences) <= MAX_ITEMS
        assert len(set(sentences)) == len(sentences)
        assert all(0 < len(s) <= MAX_ITEM_CHARS for s in sentences)
    failing = {s.tool for s in steps if not s.success}
    if failing:
        mentioned = " ".join(first.improvements + first.successes + first.insights)
        assert any(tool in mentioned for tool in failing)
