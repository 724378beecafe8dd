"""The tool predictor learns which tools a task calls for, in which order, and persists."""

from __future__ import annotations

import json
import random

import pytest

from episodic_memory import ValidationError
from episodic_memory.core.models import Episode, ExecutionStep, TaskContext, TaskOutcome
from episodic_memory.core.tool_predictor import ToolPredictor

SHOP = TaskContext(domain="shop", language="en")
CODE = TaskContext(domain="code", language="python", framework="django")

TRAINING = [
    ("cancel my pending order {n}, I changed my mind", ["find_user", "get_order", "cancel_order"]),
    ("please cancel order {n} before it ships", ["find_user", "get_order", "cancel_order"]),
    ("return the broken kettle from order {n}", ["find_user", "get_order", "return_items"]),
    ("I want to return the shoes I received {n}", ["find_user", "get_order", "return_items"]),
    ("what is the status of my order {n}", ["find_user", "get_order"]),
    ("just tell me the store opening hours {n}", []),
]


def trained(copies: int = 5, seed: int | None = None) -> ToolPredictor:
    examples = [(text.format(n=i), tools) for i in range(copies) for text, tools in TRAINING]
    if seed is not None:
        random.Random(seed).shuffle(examples)
    predictor = ToolPredictor()
    for text, tools in examples:
        predictor.observe(text, SHOP, tools)
    return predictor


def test_the_predictor_learns_which_tools_a_description_calls_for() -> None:
    predictor = trained()
    scores = dict(predictor.predict("cancel the order I placed yesterday", SHOP))
    assert scores["cancel_order"] > 0.5 > scores["return_items"]
    assert scores["find_user"] > 0.5
    returns = dict(predictor.predict("return a damaged item please", SHOP))
    assert returns["return_items"] > 0.5 > returns["cancel_order"]


def test_predictions_are_probabilities_sorted_most_likely_first() -> None:
    ranked = trained().predict("cancel my order", SHOP)
    values = [p for _, p in ranked]
    assert values == sorted(values, reverse=True)
    assert all(0.0 <= p <= 1.0 for p in values)
    assert {tool for tool, _ in ranked} == {
        "find_user",
        "get_order",
        "cancel_order",
        "return_items",
    }


def test_the_predicted_opening_follows_the_learned_order_and_length() -> None:
    predictor = trained()
    assert predictor.predict_sequence("cancel my order", SHOP) == [
        "find_user",
        "get_order",
        "cancel_order",
    ]
    assert predictor.predict_sequence("cancel my order", SHOP, n=1) == ["find_user"]
    assert predictor.predict_sequence("what is the status of order", SHOP) == [
        "find_user",
        "get_order",
    ]
    assert predictor.predict_sequence("what are your opening hours", SHOP) == []


def test_sequences_longer_than_the_learned_prefix_extend_with_transitions() -> None:
    predictor = ToolPredictor(prefix_len=2)
    for i in range(5):
        predictor.observe(f"fix failing test {i}", CODE, ["read", "edit", "pytest", "git"])
    assert predictor.predict_sequence("fix the failing test", CODE, n=6) == [
        "read",
        "edit",
        "pytest",
        "git",
    ]


def test_failed_episodes_teach_nothing() -> None:
    predictor = ToolPredictor()
    predictor.observe("cancel my order", SHOP, ["wrong_tool"], success=False)
    assert predictor.predict("cancel my order", SHOP) == []
    assert predictor.predict_sequence("cancel my order", SHOP) == []
    assert predictor.episodes_observed == 0


def test_episodes_are_judged_by_the_shared_success_rule() -> None:
    def finished(verdict: str) -> Episode:
        return Episode(
            task_description="deploy the service",
            context=CODE,
            steps=[ExecutionStep(tool="kubectl")],
            status="completed",
            outcome=TaskOutcome(verdict=verdict),  # type: ignore[arg-type]
        )

    predictor = ToolPredictor()
    predictor.observe_episode(finished("failure"))
    predictor.observe_episode(finished("partial"))  # no reward: not a success
    predictor.observe_episode(Episode(task_description="still running", context=CODE))
    assert predictor.episodes_observed == 0
    predictor.observe_episode(finished("success"))
    assert predictor.predict("deploy it", CODE) == [("kubectl", 1.0)]


def test_an_unseen_domain_falls_back_to_what_all_domains_taught() -> None:
    predictor = trained()
    for i in range(5):
        predictor.observe(f"fix failing test {i}", CODE, ["pytest"])
    elsewhere = TaskContext(domain="never-seen")
    assert predictor.predict_sequence("cancel my order", elsewhere) == [
        "find_user",
        "get_order",
        "cancel_order",
    ]
    assert dict(predictor.predict("fix the failing test", elsewhere))["pytest"] > 0.5
    assert "pytest" not in dict(predictor.predict("fix the failing test", SHOP))


def test_learning_does_not_depend_on_the_order_episodes_arrive_in() -> None:
    a, b = trained(seed=1), trained(seed=2)
    for text in ("cancel my order", "return shoes", "opening hours?"):
        assert dict(a.predict(text, SHOP)) == pytest.approx(dict(b.predict(text, SHOP)))


def test_state_round_trips_through_json_and_keeps_learning() -> None:
    original = trained()
    original.observe("cancel it now", SHOP, ["find_user", "cancel_order"], episode_id="x")
    restored = ToolPredictor.from_state(json.loads(json.dumps(original.to_state())))
    queries = ["cancel my order", "return the kettle", "status of order", "hours"]
    for text in queries:
        assert restored.predict(text, SHOP) == original.predict(text, SHOP)
        assert restored.predict_sets(text, SHOP) == original.predict_sets(text, SHOP)
        assert restored.predict_sequence(text, SHOP) == original.predict_sequence(text, SHOP)
        assert restored.find_neighbours(text, SHOP, 5) == original.find_neighbours(text, SHOP, 5)
    assert restored.reliability(SHOP) == original.reliability(SHOP)
    for predictor in (original, restored):
        predictor.observe("swap the kettle for a blue one", SHOP, ["find_user", "exchange"])
    for text in [*queries, "swap the kettle"]:
        assert restored.predict(text, SHOP) == original.predict(text, SHOP)
    assert restored.episodes_observed == original.episodes_observed


def test_an_empty_predictor_predicts_nothing() -> None:
    predictor = ToolPredictor()
    assert predictor.predict("anything", None) == []
    assert predictor.predict_sequence("anything", None) == []


def test_state_from_another_version_or_bad_settings_are_rejected() -> None:
    state = trained(copies=1).to_state()
    with pytest.raises(ValidationError, match="version"):
        ToolPredictor.from_state({**state, "version": 99})
    with pytest.raises(ValidationError, match="alpha"):
        ToolPredictor(alpha=0.0)
    with pytest.raises(ValidationError, match="prefix_len"):
        ToolPredictor(prefix_len=0)


def test_whole_tool_sets_are_predicted_with_probabilities() -> None:
    sets = trained().predict_sets("cancel the order I placed", SHOP, k=3)
    assert sets[0][0] == ("cancel_order", "find_user", "get_order")
    probabilities = [p for _, p in sets]
    assert probabilities == sorted(probabilities, reverse=True)
    assert 0 < sum(probabilities) <= 1.0 + 1e-9
    assert ToolPredictor().predict_sets("anything", SHOP) == []


def noisy(seed: int = 0) -> ToolPredictor:
    """Descriptions that barely predict the tools: every word is shared by both outcomes."""
    rng = random.Random(seed)
    predictor = ToolPredictor()
    for i in range(80):
        words = " ".join(rng.sample(["order", "item", "help", "please", "today", "soon"], 3))
        predictor.observe(f"{words} {i}", SHOP, [rng.choice(["lookup", "refund", "cancel"])])
    return predictor


def test_calibration_softens_an_overconfident_posterior_and_keeps_an_honest_one() -> None:
    clean, muddled = trained(copies=10), noisy()
    assert clean.predict_sets("cancel my pending order", SHOP, k=1)[0][1] > 0.9
    untempered = muddled._model(SHOP)[0].sets.posterior(["order", "item", "help"])  # type: ignore[union-attr]
    tempered = muddled.predict_sets("order item help", SHOP, k=1)[0][1]
    assert tempered < min(0.6, float(untempered.max()))  # three equally likely answers


def test_reliability_is_high_where_descriptions_tell_the_tools_and_low_where_not() -> None:
    assert trained(copies=10).reliability(SHOP) > 0.7
    assert noisy().reliability(SHOP) < 0.5
    assert ToolPredictor().reliability(SHOP) == 0.0


def test_observed_episodes_with_ids_become_neighbours() -> None:
    predictor = ToolPredictor()
    for i, (text, tools) in enumerate(TRAINING * 4):
        predictor.observe(text.format(n=i), SHOP, tools, episode_id=f"e{i}")
    predictor.observe("cancel a failed one", SHOP, ["oops"], success=False, episode_id="bad")
    hits = predictor.find_neighbours("please cancel my order", SHOP, k=3)
    assert hits
    assert all(int(i[1:]) % 6 in (0, 1) for i, _ in hits)  # the two cancel templates
    assert predictor.forget(["e0", "bad"]) == 1
    assert "e0" not in dict(predictor.find_neighbours("please cancel my order", SHOP, k=50))


def test_learning_without_calibration_learns_the_same_but_scores_nothing() -> None:
    scored, unscored = ToolPredictor(), ToolPredictor()
    for i in range(12):
        for predictor, calibrate in ((scored, True), (unscored, False)):
            predictor.observe(
                f"cancel order {i}",
                SHOP,
                ["find", "cancel"],
                episode_id=f"c{i}",
                calibrate=calibrate,
            )
            predictor.observe(
                f"return item {i}",
                SHOP,
                ["find", "refund"],
                episode_id=f"r{i}",
                calibrate=calibrate,
            )
    assert scored.reliability(SHOP) > 0
    assert unscored.reliability(SHOP) == 0.0  # nothing measured yet
    # Same counts learned; only the temperature (softest until measured) differs.
    best = [p.predict_sets("cancel my order", SHOP, 1)[0][0] for p in (scored, unscored)]
    assert best[0] == best[1] == ("cancel", "find")
