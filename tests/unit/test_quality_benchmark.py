"""The quality benchmark's scoring: metrics by their textbook definitions, leak-free folds."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest


def _load() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "quality.py"
    spec = importlib.util.spec_from_file_location("quality_benchmark", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


quality = _load()


def row(i: str, customer: str, family: str, seq: str, split: str = "train") -> dict[str, Any]:
    return {
        "id": i,
        "split": split,
        "group": {"customer": customer},
        "family": family,
        "family_seq": seq,
        "context": {"domain": "retail"},
        "steps": [],
        "task_description": i,
    }


def test_relevance_is_two_for_the_same_sequence_one_for_the_same_family() -> None:
    query = row("q", "a", "retail:cancel", "retail:find>cancel")
    assert quality.relevance(query, row("x", "b", "retail:cancel", "retail:find>cancel")) == 2
    assert quality.relevance(query, row("y", "b", "retail:cancel", "retail:cancel")) == 1
    assert quality.relevance(query, row("z", "b", "retail:return", "retail:return")) == 0


def test_retrieval_metrics_follow_their_definitions() -> None:
    got = quality.retrieval_metrics([0, 2, 0, 1, 0], [0, 2, 0, 1, 0, 0, 0, 0, 0, 0], [2, 1, 1, 0])
    dcg = 3 / math.log2(3) + 1 / math.log2(5)
    idcg = 3 + 1 / math.log2(3) + 1 / math.log2(4)
    assert got["ndcg5"] == pytest.approx(dcg / idcg)
    assert got["mrr10"] == pytest.approx(0.5)
    assert got["hit5"] == 1.0
    assert got["recall5"] == pytest.approx(2 / 3)
    nothing = quality.retrieval_metrics([0] * 5, [0] * 10, [1])
    assert (nothing["ndcg5"], nothing["mrr10"], nothing["hit5"]) == (0.0, 0.0, 0.0)


def test_opening_positions_count_a_missing_tool_as_the_answer_no_tool() -> None:
    assert quality.opening_metrics(["a", "b"], ["a", "b"]) == {
        "first3": 1.0,
        "pos1": 1.0,
        "pos2": 1.0,
        "pos3": 1.0,
    }
    wrong = quality.opening_metrics(["a", "c", "d"], ["a", "b"])
    assert (wrong["first3"], wrong["pos1"], wrong["pos2"], wrong["pos3"]) == (0.0, 1.0, 0.0, 0.0)


def test_macro_f1_averages_over_gold_labels() -> None:
    assert quality.macro_f1(["a", "a", "b"], ["a", "b", "b"]) == pytest.approx((2 / 3 + 2 / 3) / 2)


def test_family_is_the_state_changing_tool_set_with_the_most_score_behind_it() -> None:
    writes = {"cancel", "refund"}
    assert quality.family_of("retail", ["find", "refund", "cancel"], writes) == (
        "retail:cancel+refund"
    )
    assert quality.family_of("retail", ["find"], writes) == "retail:no_write"
    votes = [("retail", ["find", "cancel"], 0.5), ("retail", ["refund"], 0.3)]
    votes.append(("retail", ["cancel"], 0.4))
    assert quality.vote_family(votes, writes) == "retail:cancel"


def test_folds_keep_a_customer_on_one_side_and_its_distractors_out_of_memory() -> None:
    train = [row(f"t{i}", f"c{i % 6}", "retail:x", "retail:x") for i in range(18)]
    extra = [row("e-held", "c0", "retail:x", "retail:x", "dev"), row("e-new", "zz", "f", "f")]
    for memory, queries in quality.folds(train, extra, k=3, seed=1, distractors=True):
        held = {q["group"]["customer"] for q in queries}
        assert not held & {m["group"]["customer"] for m in memory}
        assert ("c0" in held) == ("e-held" not in {m["id"] for m in memory})
        assert "e-new" in {m["id"] for m in memory}
    assert quality.folds(train, extra, 3, 1, False) == quality.folds(train, extra, 3, 1, False)
