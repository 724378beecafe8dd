"""Ranking: each score component (learned and plain text, fusion, context, outcome, recency,
expected tool-set match) moves episodes as designed."""

from __future__ import annotations

import pickle
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from episodic_memory.core.models import Episode, ExecutionStep, TaskContext, TaskOutcome
from episodic_memory.core.ranking import (
    Candidate,
    RankingWeights,
    RankQuery,
    collapse,
    context_match,
    fuse,
    mmr,
    outcome_score,
    rank,
    recency_score,
)
from episodic_memory.core.text import tokenize
from episodic_memory.core.tfidf import TfidfIndex

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def cand(episode_id: str, **fields: object) -> Candidate:
    base: dict[str, object] = {
        "episode_id": episode_id,
        "description": f"task {episode_id}",
        "domain": "retail",
        "started_at": NOW - timedelta(days=1),
        "verdict": "success",
        "tools": ("lookup", "act"),
    }
    base.update(fields)
    return Candidate(**base)  # type: ignore[arg-type]


def query(**fields: object) -> RankQuery:
    base: dict[str, object] = {"description": "q", "now": NOW, "domain": "retail"}
    base.update(fields)
    return RankQuery(**base)  # type: ignore[arg-type]


def ids(results: list) -> list[str]:  # type: ignore[type-arg]
    return [r.episode_id for r in results]


def test_an_item_ranked_high_in_two_lists_beats_one_ranked_first_in_one() -> None:
    fused = fuse({"semantic": ["a", "both", "c"], "keyword": ["d", "both", "e"]})
    assert max(fused, key=fused.__getitem__) == "both"
    assert fuse({"x": ["only"], "y": ["only"]})["only"] == pytest.approx(1.0)


def test_rank_prefers_an_episode_found_by_both_sources() -> None:
    candidates = {i: cand(i) for i in ("sem", "kw", "both")}
    sources = {
        "semantic": [("sem", 0.9), ("both", 0.85)],
        "keyword": [("kw", 12.0), ("both", 11.0)],
    }
    assert ids(rank(query(), sources, candidates, 3))[0] == "both"


def test_same_domain_language_and_tags_match_better_than_a_stranger() -> None:
    q = query(language="python", tags=frozenset({"etl", "csv"}))
    same = cand("a", language="python", tags=frozenset({"etl", "csv"}))
    other = cand("b", domain="web", language="go", tags=frozenset({"http"}))
    assert context_match(q, same) == pytest.approx(1.0)
    assert context_match(q, other) == pytest.approx(0.0)
    ranked = rank(q, {"semantic": [("a", 0.5), ("b", 0.5)]}, {"a": same, "b": other}, 2)
    assert ids(ranked) == ["a", "b"]


def test_successful_high_reward_episodes_come_before_failures() -> None:
    candidates = {
        "failed": cand("failed", verdict="failure", reward=0.1),
        "won": cand("won", verdict="success", reward=0.95),
        "meh": cand("meh", verdict="success", reward=0.4),
    }
    sources = {"semantic": [("failed", 0.8), ("meh", 0.8), ("won", 0.8)]}
    assert ids(rank(query(), sources, candidates, 3)) == ["won", "meh", "failed"]


def test_a_failure_that_recovered_from_an_error_outranks_a_plain_failure() -> None:
    plain = cand("plain", verdict="failure")
    recovered = cand("recovered", verdict="failure", recovered=True)
    assert outcome_score(recovered) > outcome_score(plain)
    sources = {"semantic": [("plain", 0.8), ("recovered", 0.8)]}
    ranked = rank(query(), sources, {"plain": plain, "recovered": recovered}, 2)
    assert ids(ranked)[0] == "recovered"
    assert "recovered" in ranked[0].why


def test_recovery_is_detected_from_steps_of_an_episode() -> None:
    episode = Episode(
        task_description="deploy",
        status="completed",
        outcome=TaskOutcome.failure("timeout later"),
        steps=[
            ExecutionStep(tool="deploy", success=False, error="denied"),
            ExecutionStep(tool="login"),
            ExecutionStep(tool="deploy"),
            ExecutionStep(tool="deploy"),
        ],
        context=TaskContext(domain="ops", tags=["Prod"]),
    )
    candidate = Candidate.from_episode(episode)
    assert candidate.recovered
    assert candidate.tools == ("deploy", "login", "deploy")
    assert candidate.tags == frozenset({"prod"})


def test_newer_episodes_score_higher_on_recency_and_win_a_tie() -> None:
    old = cand("old", started_at=NOW - timedelta(days=90))
    new = cand("new", started_at=NOW - timedelta(hours=1))
    assert recency_score(old, NOW, 30) == pytest.approx(0.125)
    sources = {"semantic": [("old", 0.7), ("new", 0.7)]}
    assert ids(rank(query(), sources, {"old": old, "new": new}, 2)) == ["new", "old"]


COMMON = ("find_user", "get_order")
CANCEL_SET = ("cancel_order", "find_user", "get_order")


def tool_candidates() -> dict[str, Candidate]:
    others = {f"o{i}": cand(f"o{i}", tools=(*COMMON, f"other_{i}")) for i in range(4)}
    return {
        "refund": cand("refund", tools=(*COMMON, "refund_order")),
        "cancel": cand("cancel", tools=(*COMMON, "cancel_order")),
        **others,
    }


TOOL_HITS = [("refund", 0.62), ("cancel", 0.6)] + [(f"o{i}", 0.5) for i in range(4)]


def test_a_predicted_tool_set_lifts_the_episode_that_used_it() -> None:
    candidates = tool_candidates()
    without = rank(query(), {"semantic": TOOL_HITS}, candidates, 6)
    predicted = query(predicted_sets=[(CANCEL_SET, 0.9)])
    with_tools = rank(predicted, {"semantic": TOOL_HITS}, candidates, 6)
    assert ids(without)[0] == "refund"
    assert ids(with_tools)[0] == "cancel"
    assert with_tools[0].breakdown.tool_overlap > with_tools[1].breakdown.tool_overlap


def test_an_unproven_predictor_does_not_move_the_ranking() -> None:
    unproven = query(predicted_sets=[(CANCEL_SET, 0.9)], set_reliability=0.0)
    ranked = rank(unproven, {"semantic": TOOL_HITS}, tool_candidates(), 6)
    assert ids(ranked)[0] == "refund"
    assert all(r.breakdown.tool_overlap == 0.0 for r in ranked)


def test_without_a_prediction_the_top_candidates_tool_sets_vote() -> None:
    candidates = {
        "c1": cand("c1", tools=("cancel_order",)),
        "c2": cand("c2", tools=("cancel_order",)),
        "r": cand("r", tools=("refund_order",)),
    }
    sources = {"semantic": [("c1", 0.9), ("c2", 0.85), ("r", 0.84)]}
    ranked = rank(query(), sources, candidates, 3, RankingWeights(mmr_lambda=1.0))
    overlap = {r.episode_id: r.breakdown.tool_overlap for r in ranked}
    assert overlap["c2"] > overlap["r"] > 0


def test_the_learned_source_lifts_an_episode_the_text_sources_rank_low() -> None:
    candidates = {"kw": cand("kw"), "learned": cand("learned")}
    sources = {
        "keyword": [("kw", 9.0), ("learned", 3.0)],
        "learned": [("learned", 0.8), ("kw", 0.1)],
    }
    ranked = rank(query(), sources, candidates, 2)
    assert ids(ranked) == ["learned", "kw"]
    assert ranked[0].breakdown.learned == pytest.approx(0.8)
    assert "same kind of work" in ranked[0].why


def test_mmr_moves_a_near_duplicate_below_a_different_item() -> None:
    texts = ["cancel order 1", "cancel order 1 again", "book a flight"]
    scores = [1.0, 0.95, 0.8]

    def similarity(a: str, b: str) -> float:
        return len(set(a.split()) & set(b.split())) / len(set(a.split()) | set(b.split()))

    assert mmr(texts, scores, similarity, 3, lambda_=1.0) == [0, 1, 2]
    assert mmr(texts, scores, similarity, 3, lambda_=0.7) == [0, 2, 1]


def test_rank_demotes_a_near_duplicate_description() -> None:
    candidates = {
        "a": cand("a", description="cancel the pending order for alice today"),
        "a2": cand("a2", description="cancel the pending order for alice today please"),
        "b": cand("b", description="return a delivered item for bob"),
    }
    sources = {"semantic": [("a", 0.9), ("a2", 0.88), ("b", 0.8)]}
    assert ids(rank(query(), sources, candidates, 3, RankingWeights(mmr_lambda=1.0)))[1] == "a2"
    assert ids(rank(query(), sources, candidates, 3, RankingWeights(mmr_lambda=0.7)))[1] == "b"


def test_every_component_lands_in_the_breakdown_and_sums_to_the_total() -> None:
    weights = RankingWeights()
    candidates = {"a": cand("a", reward=0.8)}
    sources = {
        "semantic": [("a", 0.7)],
        "keyword": [("a", 3.0)],
        "learned": [("a", 0.4)],
        "metadata": [("a", 0.0)],
    }
    q = query(predicted_sets=[(("act", "lookup"), 0.9)], set_reliability=0.5)
    (scored,) = rank(q, sources, candidates, 1, weights)
    b = scored.breakdown
    parts = (
        "learned",
        "semantic",
        "keyword",
        "fusion",
        "context",
        "outcome",
        "recency",
        "tool_overlap",
    )
    assert all(getattr(b, name) > 0 for name in parts)
    assert b.tool_overlap == pytest.approx(0.5)  # a certain match, discounted by reliability
    assert b.total == pytest.approx(sum(getattr(weights, n) * getattr(b, n) for n in parts))
    assert scored.score == b.total


def test_candidates_without_any_evidence_of_relevance_are_left_out() -> None:
    q = query(domain=None)
    candidates = {"far": cand("far", domain="web"), "near": cand("near")}
    sources = {"semantic": [("near", 0.6), ("far", 0.05)]}
    assert ids(rank(q, sources, candidates, 5)) == ["near"]


def test_rank_returns_at_most_limit_and_skips_unknown_ids() -> None:
    candidates = {f"e{i}": cand(f"e{i}") for i in range(10)}
    sources = {"semantic": [(f"e{i}", 0.9 - i / 100) for i in range(10)] + [("ghost", 1.0)]}
    ranked = rank(query(), sources, candidates, 4, replace(RankingWeights(), mmr_lambda=1.0))
    assert ids(ranked) == ["e0", "e1", "e2", "e3"]


def test_collapse_merges_consecutive_repeats_only() -> None:
    assert collapse(["a", "a", "b", "a"]) == ("a", "b", "a")


def test_tfidf_ranks_shared_rare_words_first_and_forgets_removed_documents() -> None:
    index = TfidfIndex(tokenize)
    index.add("cancel", "Cancel my pending order, I changed my mind")
    index.add("return", "Return the delivered keyboard order")
    index.add("flight", "Book a flight to Seattle")
    hits = index.search("please cancel the pending order", 3)
    assert hits[0][0] == "cancel"
    assert "flight" not in dict(hits)
    index.remove("cancel")
    assert "cancel" not in dict(index.search("cancel pending", 3))
    assert len(index) == 2


def test_tfidf_search_can_be_restricted_to_some_documents() -> None:
    index = TfidfIndex(tokenize)
    index.add("a", "refund order")
    index.add("b", "refund order now")
    assert [doc for doc, _ in index.search("refund", 5, where=lambda doc: doc == "b")] == ["b"]


def test_a_candidate_pickles_compactly_and_comes_back_equal() -> None:
    candidate = Candidate(
        episode_id="e1",
        description="fix the login test",
        domain="web",
        started_at=datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=UTC),
        language="python",
        tags=frozenset({"auth", "login"}),
        task_type="debugging",
        verdict="success",
        reward=0.8,
        tools=("read_file", "run_tests"),
        recovered=True,
    )
    assert pickle.loads(pickle.dumps(candidate)) == candidate
    plain = Candidate("e2", "d", "general", datetime(2026, 1, 1, tzinfo=UTC))
    assert pickle.loads(pickle.dumps(plain)) == plain
