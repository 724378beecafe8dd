"""Expected tool-set match: which past solutions fit the tools a task is expected to need."""

from __future__ import annotations

import pytest

from episodic_memory.core.tool_match import (
    expected_match,
    set_posterior,
    set_similarity,
    tool_idf,
)


def test_tools_every_candidate_uses_weigh_nothing() -> None:
    idf = tool_idf([("find_user", "cancel"), ("find_user", "refund"), ("find_user",)])
    assert idf["cancel"] > idf["find_user"]
    flat = {"find_user": 0.0, "cancel": 1.5, "refund": 1.5}
    assert set_similarity(("find_user", "cancel"), ("find_user", "refund"), flat) == 0.0
    assert set_similarity(("cancel", "find_user"), ("find_user", "cancel"), flat) == 1.0


def test_two_episodes_without_tools_match_and_unknown_tools_weigh_the_most() -> None:
    assert set_similarity((), (), {}) == 1.0
    idf = {"known": 0.5}
    assert set_similarity(("known", "new"), ("known",), idf) == pytest.approx(0.5 / 1.0)


def test_the_posterior_blends_predictor_and_votes_each_normalised() -> None:
    posterior = set_posterior(
        [(("b", "a"), 0.6), (("c",), 0.2)],
        [(("a", "b", "a"), 2.0), (("d",), 2.0)],
        predictor_share=0.5,
    )
    assert posterior[("a", "b")] == pytest.approx(0.5 * 0.75 + 0.5 * 0.5)
    assert posterior[("c",)] == pytest.approx(0.5 * 0.25)
    assert posterior[("d",)] == pytest.approx(0.25)
    assert sum(posterior.values()) == pytest.approx(1.0)


def test_a_missing_part_leaves_the_other_alone() -> None:
    only_votes = set_posterior([], [(("x",), 3.0), (("y",), 1.0)], predictor_share=0.9)
    assert only_votes == pytest.approx({("x",): 0.75, ("y",): 0.25})
    only_predicted = set_posterior([(("x",), 0.5)], [(("y",), 0.0)], predictor_share=0.1)
    assert only_predicted == {("x",): 1.0}
    assert set_posterior([], [], predictor_share=0.5) == {}


def test_expected_match_is_the_posterior_weighted_similarity() -> None:
    idf = {"a": 1.0, "b": 1.0}
    posterior = {("a",): 0.7, ("a", "b"): 0.3}
    assert expected_match(posterior, ("a",), idf) == pytest.approx(0.7 + 0.3 * 0.5)
    assert expected_match(posterior, ("c",), idf) == 0.0
