"""Learned neighbours: words weigh what they say about the tools used, and nothing by chance."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from episodic_memory.core.neighbours import TaskNeighbours, chi2_1_quantile, term_weights

NAMES = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"]


def corpus(index: TaskNeighbours, copies: int = 6) -> None:
    """Cancel and return requests by the same customers: names are shared, intents are not."""
    for i in range(copies):
        for name in NAMES[:4]:
            index.add(f"c-{name}-{i}", "shop", {"cancel", "pending", name}, {"find", "cancel"})
            index.add(f"r-{name}-{i}", "shop", {"return", "received", name}, {"find", "refund"})


def test_chi2_quantiles_match_the_tables() -> None:
    assert chi2_1_quantile(0.95) == pytest.approx(3.841, abs=1e-3)
    assert chi2_1_quantile(0.99) == pytest.approx(6.635, abs=1e-3)


def test_words_that_predict_tools_weigh_and_shared_or_chance_words_do_not() -> None:
    index = TaskNeighbours()
    corpus(index)
    weights = index.weights("shop", ["cancel", "return", "alice", "unseen"])
    assert weights["cancel"] > 0
    assert weights["return"] > 0
    assert weights["alice"] == 0.0  # a name appears with both intents alike
    assert weights["unseen"] == 0.0


def test_a_word_in_every_episode_or_a_tool_in_every_episode_carries_nothing() -> None:
    co = np.array([[5.0, 10.0], [5.0, 5.0]])  # term rows × tool columns
    df = np.array([10.0, 5.0])
    weights = term_weights(co, df, tool_docs=np.array([5.0, 10.0]), episodes=10.0)
    assert weights[0] == 0.0  # term 0 is in every episode
    assert weights[1] > 0.0  # term 1 marks exactly the episodes that use tool 0


def test_search_prefers_the_same_intent_over_the_same_customer() -> None:
    index = TaskNeighbours()
    corpus(index)
    hits = index.search("shop", {"cancel", "alice", "today"}, k=5)
    assert hits
    assert all(episode_id.startswith("c-") for episode_id, _ in hits)
    assert all(0 < sim <= 1.0 + 1e-9 for _, sim in hits)
    assert index.search("elsewhere", {"cancel"}, k=5) == []
    assert index.search("shop", {"alice"}, k=5) == []  # nothing informative asked


def test_a_small_memory_learns_no_weights_from_chance() -> None:
    index = TaskNeighbours()
    rng = random.Random(3)
    for i in range(12):
        words = set(rng.sample(NAMES, 3))
        index.add(f"e{i}", "shop", words, {rng.choice(["a", "b"])})
    assert all(w == 0.0 for w in index.weights("shop", NAMES).values())


def test_removing_an_episode_undoes_exactly_what_adding_it_did() -> None:
    index, reference = TaskNeighbours(), TaskNeighbours()
    corpus(index)
    corpus(reference)
    index.add("extra", "shop", {"cancel", "received"}, {"refund"})
    index.add("extra", "shop", {"cancel", "received", "twice"}, {"refund"})  # re-indexed
    assert index.remove(["extra", "never-added"]) == 1
    words = ["cancel", "return", "received", "twice"]
    assert index.weights("shop", words) == pytest.approx(reference.weights("shop", words))
    assert "extra" not in {i for i, _ in index.search("shop", {"cancel"}, k=100)}
    assert len(index) == len(reference)


def test_state_round_trips_through_json() -> None:
    index = TaskNeighbours()
    corpus(index, copies=3)
    index.remove(["c-alice-0"])
    restored = TaskNeighbours.from_state(json.loads(json.dumps(index.to_state())))
    query = {"return", "received", "bob"}
    assert restored.search("shop", query, k=10) == index.search("shop", query, k=10)
    assert len(restored) == len(index)


def test_a_word_marking_a_block_of_tools_counts_once_not_once_per_tool() -> None:
    # Term 0 marks the 5 episodes that use tools 0-3 together; term 1 marks the 5 that use
    # tool 4. Both split the episodes the same way, so both weigh the same.
    co = np.array([[5.0] * 4 + [0.0], [0.0] * 4 + [5.0]])
    df = np.array([5.0, 5.0])
    weights = term_weights(co, df, tool_docs=np.array([5.0] * 5), episodes=10.0)
    assert weights[0] == pytest.approx(weights[1])
    assert weights[0] > 0


def test_a_large_corpus_refreshes_its_weights_after_one_percent_of_change() -> None:
    index = TaskNeighbours()
    corpus(index, copies=30)  # 240 episodes: a refresh after 2.4 episodes of change
    assert index.weights("shop", ["cancel"])["cancel"] > 0
    for i in range(2):
        index.add(f"x{i}", "shop", {"exchange", "swap"}, {"find", "exchange"})
    assert index.weights("shop", ["exchange"])["exchange"] == 0.0  # not recomputed yet
    found = {i for i, _ in index.search("shop", {"cancel"}, k=300)}  # stale weights still serve
    assert len(found) == 120
    assert all(i.startswith("c-") for i in found)
    for i in range(2, 12):
        index.add(f"x{i}", "shop", {"exchange", "swap"}, {"find", "exchange"})
    assert index.weights("shop", ["exchange"])["exchange"] > 0
    assert {i for i, _ in index.search("shop", {"swap"}, k=20)} == {f"x{i}" for i in range(12)}


def test_an_episode_without_words_is_stored_and_never_found() -> None:
    index = TaskNeighbours()
    corpus(index, copies=3)
    index.add("empty", "shop", set(), {"find"})
    hits = index.search("shop", {"cancel"}, k=50)
    assert hits
    assert "empty" not in {episode_id for episode_id, _ in hits}
    index.add("late", "shop", {"cancel", "pending"}, {"find", "cancel"})
    assert "late" in {episode_id for episode_id, _ in index.search("shop", {"cancel"}, k=50)}


def test_a_query_word_scores_only_its_latest_postings(monkeypatch: pytest.MonkeyPatch) -> None:
    from episodic_memory.core import neighbours

    index = TaskNeighbours()
    corpus(index, copies=6)
    everything = {i for i, _ in index.search("shop", {"cancel", "pending"}, k=100)}
    assert len(everything) == 24  # six copies of four customers' cancels
    monkeypatch.setattr(neighbours, "MAX_POSTINGS", 4)
    latest = [i for i, _ in index.search("shop", {"cancel", "pending"}, k=100)]
    assert set(latest) == {f"c-{name}-5" for name in NAMES[:4]}  # the last copy added


def test_a_query_reads_its_most_informative_words_deepest_within_the_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from episodic_memory.core import neighbours

    index = TaskNeighbours()
    for i in range(6):  # "cancel" marks the cancel tool; "soon" leans that way, less surely
        for name in NAMES[:4]:
            index.add(f"c-{name}-{i}", "shop", {"cancel", "soon", name}, {"find", "cancel"})
            soon = {"soon"} if i < 2 else set()
            index.add(f"r-{name}-{i}", "shop", {"return", name, *soon}, {"find", "refund"})
    weights = index.weights("shop", ["cancel", "soon"])
    assert weights["cancel"] > weights["soon"] > 0
    unbounded = {i for i, _ in index.search("shop", {"cancel", "soon"}, k=100)}
    assert {f"r-{name}-{i}" for name in NAMES[:4] for i in range(2)} <= unbounded

    monkeypatch.setattr(neighbours, "SEARCH_BUDGET", 30)
    monkeypatch.setattr(neighbours, "MIN_POSTINGS", 4)
    bounded = {i for i, _ in index.search("shop", {"cancel", "soon"}, k=100)}
    # "cancel" is read whole (24 postings); "soon" gets what is left, its latest 6 (all cancels).
    assert bounded == {f"c-{name}-{i}" for name in NAMES[:4] for i in range(6)}
