"""Learning turns episodes into merged patterns and heuristics with honest, bounded confidence."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import pytest

from episodic_memory import ValidationError
from episodic_memory.core.learning import (
    LearningDelta,
    confidence_at,
    episode_succeeded,
    extract_heuristic_evidence,
    extract_patterns,
    learn,
    merge_heuristics,
    merge_patterns,
    normalize_error,
)
from episodic_memory.core.merge import wilson_lower_bound
from episodic_memory.core.models import (
    Episode,
    ExecutionStep,
    RewardScore,
    TaskContext,
    TaskOutcome,
)
from episodic_memory.core.patterns import (
    MAX_EVIDENCE_IDS,
    ContextPattern,
    DecisionPoint,
    ErrorRecovery,
    Heuristic,
    Pattern,
    ToolSequence,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def episode(
    tools: Sequence[str | tuple[str, str]],
    *,
    eid: str = "e1",
    verdict: str = "success",
    at: datetime = T0,
    domain: str = "web",
    language: str | None = "python",
    framework: str | None = None,
    task_type: str = "bugfix",
) -> Episode:
    """An episode from tool names; ``(tool, error)`` marks a failed step."""
    steps = []
    for item in tools:
        if isinstance(item, tuple):
            steps.append(ExecutionStep(tool=item[0], success=False, error=item[1], latency_ms=10))
        else:
            steps.append(ExecutionStep(tool=item, latency_ms=10, tokens=5))
    outcome = TaskOutcome(verdict=verdict)  # type: ignore[arg-type]
    return Episode(
        episode_id=eid,
        task_description="fix the failing parser test",
        task_type=task_type,
        context=TaskContext(domain=domain, language=language, framework=framework),
        steps=steps,
        status="completed",
        outcome=outcome,
        completed_at=at,
    )


def fold(episodes: Sequence[Episode], now: datetime = T0) -> dict[str, Pattern]:
    """Merge episodes one at a time into an empty store, as the storage side would."""
    store: dict[str, Pattern] = {}
    for ep in episodes:
        for record in merge_patterns(store, extract_patterns(ep), now):
            store[record.pattern_id] = record
    return store


K = TypeVar("K", ToolSequence, DecisionPoint, ErrorRecovery, ContextPattern)


def of_kind(patterns: Iterable[Pattern], kind: type[K]) -> list[K]:
    return [p for p in patterns if isinstance(p, kind)]


def test_the_same_sequence_from_fifty_episodes_is_one_pattern_counted_fifty_times() -> None:
    store = fold([episode(["read", "edit", "pytest"], eid=f"e{i}") for i in range(50)])
    sequences = of_kind(list(store.values()), ToolSequence)
    assert len(sequences) == 1
    assert sequences[0].occurrences == 50
    assert sequences[0].successes == 50
    assert sequences[0].total_latency_ms == pytest.approx(50 * 30)
    assert len(sequences[0].episode_ids) == MAX_EVIDENCE_IDS


def test_relearning_the_same_episode_changes_nothing() -> None:
    ep = episode(["read", ("pytest", "boom"), "edit", "pytest"])
    store = fold([ep])
    assert merge_patterns(store, extract_patterns(ep), T0 + timedelta(days=1)) == []
    heuristics = {
        h.heuristic_id: h for h in merge_heuristics({}, extract_heuristic_evidence(ep), T0)
    }
    assert merge_heuristics(heuristics, extract_heuristic_evidence(ep), T0) == []


def test_a_replayed_pre_merged_batch_is_skipped() -> None:
    batch = [episode(["read", "edit"], eid="a"), episode(["read", "edit"], eid="b")]
    delta = learn(batch, now=T0)
    store = {p.pattern_id: p for p in delta.patterns}
    assert merge_patterns(store, delta.patterns, T0) == []


def test_merging_a_batch_at_once_equals_merging_one_episode_at_a_time() -> None:
    episodes = [
        episode(["read", "edit", "pytest"], eid="a", at=T0),
        episode(["read", ("pytest", "E1"), "pytest"], eid="b", at=T0 + timedelta(days=3)),
        episode(["read", "edit", "pytest"], eid="c", verdict="failure", at=T0 + timedelta(days=9)),
    ]
    now = T0 + timedelta(days=10)
    one_by_one = fold(episodes, now)
    all_at_once = merge_patterns({}, [p for e in episodes for p in extract_patterns(e)], now)
    # pre-merged within a batch, then folded into a store that already holds the first episode
    pre_merged = learn(episodes[1:], now=now).patterns
    two_step = dict(fold(episodes[:1], now))
    two_step.update({p.pattern_id: p for p in merge_patterns(two_step, pre_merged, now)})
    for merged in (all_at_once, list(two_step.values())):
        assert {p.pattern_id for p in merged} == set(one_by_one)
        for record in merged:
            expected = one_by_one[record.pattern_id]
            assert record.occurrences == expected.occurrences
            assert record.successes == expected.successes
            assert record.episode_ids == expected.episode_ids
            assert record.weighted_occurrences == pytest.approx(expected.weighted_occurrences)
            assert record.confidence == pytest.approx(expected.confidence)


def test_confidence_is_bounded_and_approaches_but_never_reaches_one() -> None:
    seen = []
    for count in (1, 10, 100, 10_000):
        seen.append(wilson_lower_bound(count, count))
    assert seen == sorted(seen)
    assert all(0.0 < value < 1.0 for value in seen)
    assert wilson_lower_bound(0, 0) == 0.0
    # daily evidence for years: the decayed sample size stays bounded, so does confidence
    store = fold([episode(["a", "b"], eid=f"d{i}", at=T0 + timedelta(days=i)) for i in range(400)])
    sequence = of_kind(list(store.values()), ToolSequence)[0]
    assert sequence.weighted_occurrences < 50
    assert 0.9 < sequence.confidence < 1.0


def test_a_pattern_that_stops_succeeding_loses_confidence() -> None:
    def history(first: str, then: str) -> ToolSequence:
        eps = [
            episode(
                ["a", "b"], eid=f"{i}", verdict=first if i < 20 else then, at=T0 + timedelta(days=i)
            )
            for i in range(40)
        ]
        return of_kind(list(fold(eps, T0 + timedelta(days=40)).values()), ToolSequence)[0]

    fading, improving = history("success", "failure"), history("failure", "success")
    assert fading.successes == improving.successes == 20
    assert fading.confidence < improving.confidence
    assert fading.confidence < wilson_lower_bound(20, 40) < improving.confidence


def test_an_idle_pattern_decays_towards_zero_confidence() -> None:
    store = fold([episode(["a", "b"], eid=f"e{i}") for i in range(30)])
    sequence = of_kind(list(store.values()), ToolSequence)[0]
    later = [confidence_at(sequence, T0 + timedelta(days=d)) for d in (0, 30, 180, 3650)]
    assert later[0] == pytest.approx(sequence.confidence)
    assert later == sorted(later, reverse=True)
    assert later[-1] < 0.01


def test_each_pattern_kind_is_extracted_from_an_episode_with_failures_and_recoveries() -> None:
    ep = episode(
        [
            "read",
            ("pytest", "FAILED tests/test_a.py::test_x - AssertionError at line 42"),
            "edit",
            "pytest",
            "pytest",
            ("git", "fatal: not a git repository: /home/u/x/.git"),
            "hg",
        ],
        framework="django",
    )
    patterns = extract_patterns(ep)
    assert all(p.occurrences == 1 for p in patterns)
    [sequence] = of_kind(patterns, ToolSequence)
    assert sequence.tools == ["read", "pytest", "edit", "pytest", "git", "hg"]
    decisions = {
        (tuple(p.after_tools), p.chosen_tool): p.successes for p in of_kind(patterns, DecisionPoint)
    }
    assert decisions[((), "read")] == 1
    assert decisions[(("read",), "pytest")] == 0  # the run failed, so did the choice
    assert decisions[(("pytest",), "git")] == 0
    recoveries = {p.failed_tool: p for p in of_kind(patterns, ErrorRecovery)}
    assert recoveries["pytest"].recovery_tools == ["edit", "pytest"]
    assert recoveries["pytest"].error_signature == "failed assertionerror at line"
    assert recoveries["pytest"].successes == 1
    assert recoveries["git"].recovery_tools == ["hg"]
    context = {p.tools[0]: p for p in of_kind(patterns, ContextPattern)}
    assert set(context) == {"read", "pytest", "edit", "git", "hg"}
    assert context["hg"].features == {"domain": "web", "language": "python", "framework": "django"}
    assert context["git"].successes == 0


def test_a_recovery_counts_as_working_only_if_the_episode_succeeded_unless_retried() -> None:
    failed = episode([("deploy", "timeout"), "rollback"], verdict="failure")
    retried = episode([("deploy", "timeout"), "deploy"], verdict="failure", eid="e2")
    [alternative] = of_kind(extract_patterns(failed), ErrorRecovery)
    [retry] = of_kind(extract_patterns(retried), ErrorRecovery)
    assert alternative.successes == 0
    assert retry.successes == 1


def test_partial_episodes_count_as_success_only_with_a_high_reward() -> None:
    def partial(total: float | None) -> Episode:
        ep = episode(["a"], verdict="partial")
        if total is None:
            return ep
        parts = {name: 0.0 for name in RewardScore.model_fields if name != "total"}
        parts.pop("schema_version")
        return ep.model_copy(update={"reward": RewardScore(total=total, **parts)})

    assert episode_succeeded(partial(0.8))
    assert not episode_succeeded(partial(0.3))
    assert not episode_succeeded(partial(None))
    assert not episode_succeeded(episode(["a"], verdict="abstained"))


def test_active_episodes_teach_nothing_and_are_not_marked_learned() -> None:
    active = Episode(task_description="x", steps=[ExecutionStep(tool="a")])
    assert extract_patterns(active) == []
    assert extract_heuristic_evidence(active) == []
    delta = learn([active, episode(["a"], eid="done")], now=T0)
    assert delta.episode_ids == ["done"]


def test_heuristics_of_every_trigger_read_as_rules() -> None:
    ep = episode(["read", ("pytest", "ImportError: no module named x"), "pip", "pytest"])
    rules = {(h.trigger, h.condition, h.action) for h in extract_heuristic_evidence(ep)}
    assert ("task_start", "for bugfix tasks in domain web", "start with read") in rules
    assert ("after_tool", "in domain web, after pytest", "use pip next") in rules
    assert (
        "after_error",
        "in domain web, when pytest fails with 'importerror: no module named x'",
        "recover with pip then pytest",
    ) in rules
    assert ("context", "in domain web, when language is python", "use pip") in rules


def test_heuristic_evidence_from_many_episodes_merges_into_counted_rules() -> None:
    episodes = [
        episode(["read", "edit"], eid=f"e{i}", verdict="success" if i % 4 else "failure")
        for i in range(20)
    ]
    store: dict[str, Heuristic] = {}
    for ep in episodes:
        for record in merge_heuristics(store, extract_heuristic_evidence(ep), T0):
            store[record.heuristic_id] = record
    [start] = [h for h in store.values() if h.trigger == "task_start"]
    assert (start.evidence_count, start.success_count) == (20, 15)
    assert start.tool == "read"
    assert 0.0 < start.confidence < 15 / 20
    assert start.updated_at == T0
    assert len({h.heuristic_id for h in store.values()}) == len(store) == 4


def test_evidence_keeps_the_most_recent_episode_ids() -> None:
    eps = [episode(["a"], eid=f"e{i:03d}", at=T0 + timedelta(hours=i)) for i in range(80)]
    sequence = of_kind(list(fold(eps).values()), ToolSequence)[0]
    assert sequence.episode_ids == [f"e{i:03d}" for i in range(30, 80)]
    assert sequence.occurrences == 80


def test_records_stored_before_decayed_counts_existed_merge_from_their_raw_counts() -> None:
    [old] = of_kind(extract_patterns(episode(["a"], eid="old")), ToolSequence)
    old = old.model_copy(
        update={
            "occurrences": 9,
            "successes": 9,
            "weighted_occurrences": 0.0,
            "weighted_successes": 0.0,
        }
    )
    [merged] = of_kind(
        merge_patterns({old.pattern_id: old}, extract_patterns(episode(["a"])), T0), ToolSequence
    )
    assert merged.occurrences == 10
    assert merged.weighted_occurrences == pytest.approx(10.0)
    assert merged.confidence == pytest.approx(wilson_lower_bound(10, 10))


def test_a_pattern_id_naming_two_keys_is_rejected() -> None:
    [first] = of_kind(extract_patterns(episode(["a"], eid="x")), ToolSequence)
    [second] = of_kind(extract_patterns(episode(["b"], eid="y")), ToolSequence)
    forged = second.model_copy(update={"pattern_id": first.pattern_id})
    with pytest.raises(ValidationError, match="pattern_id"):
        merge_patterns({first.pattern_id: first}, [forged], T0)


def test_error_signatures_ignore_ids_paths_quotes_and_numbers() -> None:
    a = normalize_error("KeyError: 'user_1234' in /srv/app/models.py line 12")
    b = normalize_error("KeyError: 'user_99' in /opt/other/models.py line 7")
    assert a == b == "keyerror: in line"
    trace = 'Traceback (most recent call last):\n  File "x.py", line 1\nValueError: bad #W123456'
    assert normalize_error(trace) == "valueerror: bad"
    assert normalize_error(None) == normalize_error("  ") == "unknown error"
    assert len(normalize_error("error " * 100)) <= 80


def test_a_learning_delta_round_trips_through_json() -> None:
    delta = learn(
        [episode(["read", ("pytest", "boom"), "pytest"]), episode(["x"], eid="e2")], now=T0
    )
    again = LearningDelta.model_validate_json(delta.model_dump_json())
    assert again == delta
    assert {type(p) for p in again.patterns} == {
        ToolSequence,
        DecisionPoint,
        ErrorRecovery,
        ContextPattern,
    }
