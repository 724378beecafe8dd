"""The reward orders episodes the way an agent should want to imitate them."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from episodic_memory import Episode, ExecutionStep, TaskContext, TaskOutcome, ValidationError
from episodic_memory.core.reward import compute_reward, find_recoveries, related_tools

COMPONENTS = (
    "total",
    "outcome",
    "efficiency",
    "time_efficiency",
    "step_efficiency",
    "complexity_bonus",
    "error_penalty",
    "recovery_bonus",
)


def episode(
    steps: list[ExecutionStep],
    outcome: TaskOutcome | None = None,
    complexity: str = "moderate",
) -> Episode:
    return Episode(
        task_description="fix the failing build",
        context=TaskContext(complexity=complexity),  # type: ignore[arg-type]
        steps=steps,
        outcome=outcome or TaskOutcome.success(),
        status="completed",
    )


def ok(tool: str, latency_ms: float = 100.0) -> ExecutionStep:
    return ExecutionStep(tool=tool, latency_ms=latency_ms)


def bad(tool: str, error: str = "boom", latency_ms: float = 100.0) -> ExecutionStep:
    return ExecutionStep(tool=tool, success=False, error=error, latency_ms=latency_ms)


STEPS = [ok("read_file"), bad("run_tests"), ok("edit_file"), ok("run_tests")]


def test_reward_decreases_from_success_to_partial_to_abstained_to_failure() -> None:
    outcomes = [
        TaskOutcome.success(),
        TaskOutcome.partial(completed=["a", "b"], failed=["c"]),
        TaskOutcome.partial(completed=["a"], failed=["b", "c"]),
        TaskOutcome.abstained("not enough information"),
        TaskOutcome.failure("tests still red"),
    ]
    totals = [compute_reward(episode([ok("a"), ok("b")], o)).total for o in outcomes]
    assert totals == sorted(totals, reverse=True)
    assert len(set(totals)) == len(totals)
    assert totals[-1] == 0.0


def test_partial_reward_grows_with_the_fraction_completed() -> None:
    less = compute_reward(episode([], TaskOutcome.partial(completed=["a"], failed=["b", "c"])))
    more = compute_reward(episode([], TaskOutcome.partial(completed=["a", "b"], failed=["c"])))
    unknown = compute_reward(episode([], TaskOutcome.partial(completed=[], failed=[])))
    assert less.outcome < unknown.outcome < more.outcome
    assert less.total < more.total


def test_fewer_failed_steps_score_higher() -> None:
    clean = compute_reward(episode([ok("a"), ok("b"), ok("c"), ok("d")]))
    one = compute_reward(episode([ok("a"), bad("b"), ok("c"), ok("d")]))
    two = compute_reward(episode([bad("a"), bad("b"), ok("c"), ok("d")]))
    assert clean.total > one.total > two.total
    assert clean.error_penalty == 0.0 < one.error_penalty < two.error_penalty


def test_a_recovered_failure_earns_a_bonus_but_still_costs_something() -> None:
    recovered = compute_reward(episode([ok("x"), bad("search_web"), ok("search_docs")]))
    unrecovered = compute_reward(episode([ok("x"), bad("search_web"), ok("edit_file")]))
    clean = compute_reward(episode([ok("x"), ok("search_web"), ok("search_docs")]))
    assert recovered.recovery_bonus > 0.0
    assert unrecovered.recovery_bonus == 0.0
    assert unrecovered.total < recovered.total < clean.total


def test_a_retry_of_the_same_tool_counts_as_a_recovery() -> None:
    found = find_recoveries([bad("run_tests", "2 failed"), ok("edit_file"), ok("run_tests")])
    assert [(r.failed_tool, r.error, r.recovered_tool, r.recovered_index) for r in found] == [
        ("run_tests", "2 failed", "run_tests", 2)
    ]


def test_generic_verbs_do_not_make_unrelated_tools_related() -> None:
    assert related_tools("search_web", "search_docs")
    assert related_tools("readFile", "read_file_range")
    assert related_tools("get_order_details", "get_order_status")
    assert not related_tools("get_order_details", "get_product_details")
    assert not related_tools("run_tests", "run_linter")
    assert not related_tools("___", "---")


def test_slower_and_longer_episodes_are_less_efficient() -> None:
    fast = compute_reward(episode([ok("a", 10.0)]))
    slow = compute_reward(episode([ok("a", 600_000.0)]))
    assert slow.time_efficiency < fast.time_efficiency
    assert slow.total < fast.total
    short = compute_reward(episode([ok(f"t{i}", 0.0) for i in range(8)]))
    long = compute_reward(episode([ok(f"t{i}", 0.0) for i in range(40)]))
    assert short.step_efficiency == 1.0
    assert long.step_efficiency == pytest.approx(8 / 40)
    assert long.total < short.total


def test_complex_successes_get_a_bonus_that_failures_do_not() -> None:
    steps = [ok(f"t{i}", 0.0) for i in range(3)]
    simple = compute_reward(episode(steps, complexity="simple"))
    complex_ = compute_reward(episode(steps, complexity="complex"))
    failed = compute_reward(episode(steps, TaskOutcome.failure("no"), complexity="complex"))
    assert simple.complexity_bonus == 0.0 < complex_.complexity_bonus
    assert complex_.total > simple.total
    assert failed.complexity_bonus == 0.0


def test_an_episode_without_steps_scores_on_its_outcome_alone() -> None:
    score = compute_reward(episode([]))
    assert score.step_efficiency == 1.0
    assert score.time_efficiency == 1.0
    assert score.error_penalty == 0.0
    assert score.total == pytest.approx(0.6 + 0.3 + 0.05)


def test_reward_without_an_outcome_raises_our_error_naming_the_field() -> None:
    active = Episode(task_description="still running", steps=[ok("a")])
    with pytest.raises(ValidationError) as caught:
        compute_reward(active)
    assert caught.value.field == "Episode.outcome"


def test_reward_is_deterministic() -> None:
    assert compute_reward(episode(STEPS)) == compute_reward(episode(STEPS))


def test_a_long_run_of_failures_is_scored_without_quadratic_work() -> None:
    steps = [bad(f"tool_{i % 50}") for i in range(10_000)]
    score = compute_reward(episode(steps, TaskOutcome.failure("gave up")))
    assert score.recovery_bonus == 0.0
    assert score.total == 0.0


_text = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=20)
_steps = st.lists(
    st.builds(
        ExecutionStep,
        tool=st.sampled_from(["search_web", "search_docs", "run_tests", "edit_file", "x"]),
        success=st.booleans(),
        latency_ms=st.floats(min_value=0.0, max_value=7 * 24 * 3600 * 1000.0),
        error=st.one_of(st.none(), _text),
    ),
    max_size=60,
)
_outcomes = st.one_of(
    st.just(TaskOutcome.success()),
    st.just(TaskOutcome.failure("x")),
    st.just(TaskOutcome.abstained()),
    st.builds(
        TaskOutcome.partial,
        completed=st.lists(_text, max_size=5),
        failed=st.lists(_text, max_size=5),
    ),
)


@settings(max_examples=300, deadline=None)
@given(
    steps=_steps,
    outcome=_outcomes,
    complexity=st.sampled_from(["simple", "moderate", "complex"]),
)
def test_every_component_is_finite_and_the_total_stays_in_bounds(
    steps: list[ExecutionStep], outcome: TaskOutcome, complexity: str
) -> None:
    score = compute_reward(episode(steps, outcome, complexity))
    values = score.model_dump()
    for name in COMPONENTS:
        assert math.isfinite(values[name]), name
    assert 0.0 <= score.total <= 1.0
    assert 0.0 <= score.outcome <= 1.0
    assert 0.0 < score.time_efficiency <= 1.0
    assert 0.0 < score.step_efficiency <= 1.0
    assert 0.0 <= score.recovery_bonus <= score.error_penalty / 2 + 1e-12


@settings(max_examples=200, deadline=None)
@given(steps=_steps, complexity=st.sampled_from(["simple", "moderate", "complex"]))
def test_for_the_same_steps_a_better_verdict_never_scores_lower(
    steps: list[ExecutionStep], complexity: str
) -> None:
    ranked = [
        TaskOutcome.success(),
        TaskOutcome.partial(completed=["a"], failed=["b"]),
        TaskOutcome.abstained(),
        TaskOutcome.failure("x"),
    ]
    totals = [compute_reward(episode(steps, o, complexity)).total for o in ranked]
    assert totals == sorted(totals, reverse=True)
