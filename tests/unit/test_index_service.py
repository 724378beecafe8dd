"""IndexService: episodes in, vectors out for storage, search, rebuild, predict, persist."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from episodic_memory.config import IndexConfig
from episodic_memory.core.models import Episode, ExecutionStep, TaskContext, TaskOutcome
from episodic_memory.index.service import IndexService, embedding_text

CONFIG = IndexConfig(embedder="hashing", hashing_dim=256)
RETAIL = TaskContext(domain="retail")


def episode(episode_id: str, description: str, tools: list[str]) -> Episode:
    return Episode(
        episode_id=episode_id,
        task_description=description,
        context=RETAIL,
        status="completed",
        outcome=TaskOutcome.success(),
        steps=[ExecutionStep(tool=tool) for tool in tools],
    )


EPISODES = [
    episode("c1", "Cancel my pending order, I no longer need it", ["find_user", "cancel_order"]),
    episode("c2", "Please cancel the pending order I placed", ["find_user", "cancel_order"]),
    episode("r1", "Return the keyboard from my delivered order", ["find_user", "return_items"]),
    episode("r2", "I want to return a delivered lamp for a refund", ["find_user", "return_items"]),
]


def test_added_episodes_come_back_as_little_endian_float32_bytes_for_storage() -> None:
    service = IndexService(CONFIG)
    stored = service.add_episodes(EPISODES)
    assert [s.episode_id for s in stored] == ["c1", "c2", "r1", "r2"]
    first = stored[0]
    assert first.model == service.embedder.name  # type: ignore[union-attr]
    assert first.dim == 256
    vector = np.frombuffer(first.vector, dtype="<f4")
    assert np.linalg.norm(vector) == pytest.approx(1.0, rel=1e-5)


def test_search_finds_the_episode_about_the_same_task_first() -> None:
    service = IndexService(CONFIG)
    service.add_episodes(EPISODES)
    hits = service.search("cancel a pending order", RETAIL, k=4)
    assert hits[0][0] in {"c1", "c2"}
    assert {hit[0] for hit in hits[:2]} == {"c1", "c2"}


def test_the_query_and_episode_text_include_domain_and_tags() -> None:
    text = embedding_text("do it", TaskContext(domain="ops", tags=["k8s", "prod"]))
    assert "ops" in text
    assert "k8s prod" in text


def test_rebuild_from_stored_vectors_restores_search_and_skips_other_models() -> None:
    original = IndexService(CONFIG)
    stored = original.add_episodes(EPISODES)
    foreign = stored[0].model_copy(update={"episode_id": "x", "model": "another-model"})
    fresh = IndexService(CONFIG)
    assert fresh.rebuild([*stored, foreign]) == 4
    query = ("return a delivered item", RETAIL, 4)
    assert fresh.search(*query) == original.search(*query)


def test_rebuild_of_a_large_memory_goes_straight_to_the_approximate_index() -> None:
    config = IndexConfig(embedder="hashing", hashing_dim=64, approximate_threshold=50)
    service = IndexService(config)
    stored = service.add_episodes(
        [episode(f"e{i}", f"task number {i} about item {i % 7}", ["t"]) for i in range(80)]
    )
    rebuilt = IndexService(config)
    rebuilt.rebuild(stored)
    assert rebuilt.stats()["index_kind"] == config.approximate_kind  # no flat phase first
    assert rebuilt.stats()["vectors"] == 80


def test_removed_episodes_are_no_longer_found() -> None:
    service = IndexService(CONFIG)
    service.add_episodes(EPISODES)
    assert service.remove(["c1", "nope"]) == 1
    assert "c1" not in {hit[0] for hit in service.search("cancel pending order", RETAIL, 4)}


def test_without_an_embedder_nothing_is_embedded_or_found() -> None:
    service = IndexService(IndexConfig(embedder="none"))
    assert service.add_episodes(EPISODES) == []
    assert service.search("cancel", RETAIL, 5) == []
    assert service.rebuild([]) == 0
    assert service.stats()["vectors"] == 0


def test_observed_episodes_teach_the_tool_predictor() -> None:
    service = IndexService(CONFIG)
    assert service.predict_tools("cancel my order", RETAIL).tools == []
    service.observe(EPISODES)
    prediction = service.predict_tools("cancel the pending order", RETAIL)
    probabilities = dict(prediction.tools)
    assert probabilities["cancel_order"] > probabilities.get("return_items", 0.0)
    assert prediction.sequence[:2] == ["find_user", "cancel_order"]


def test_save_and_load_restore_vectors_and_predictor(tmp_path: Path) -> None:
    service = IndexService(CONFIG, tmp_path)
    service.add_episodes(EPISODES)
    service.observe(EPISODES)
    service.save()
    restored = IndexService(CONFIG, tmp_path)
    loaded = restored.load()
    assert loaded.vectors
    assert loaded.predictor
    query = ("cancel pending order", RETAIL)
    assert restored.search(*query, k=3) == service.search(*query, k=3)
    assert restored.predict_tools(*query) == service.predict_tools(*query)


def test_load_after_an_embedder_change_asks_for_a_rebuild(tmp_path: Path) -> None:
    service = IndexService(CONFIG, tmp_path)
    service.add_episodes(EPISODES)
    service.save()
    other = IndexService(IndexConfig(embedder="hashing", hashing_dim=512), tmp_path)
    loaded = other.load()
    assert not loaded.vectors
    assert other.stats()["vectors"] == 0


def test_load_of_an_empty_folder_restores_nothing(tmp_path: Path) -> None:
    assert tuple(IndexService(CONFIG, tmp_path).load()) == (False, False)
    (tmp_path / "tool_predictor.json").write_text("{not json")
    assert not IndexService(CONFIG, tmp_path).load().predictor


def test_stats_report_size_kind_and_memory() -> None:
    service = IndexService(CONFIG)
    service.add_episodes(EPISODES)
    stats = service.stats()
    assert stats["vectors"] == 4
    assert stats["index_kind"] == "flat"
    assert isinstance(stats["memory_bytes"], int)
    assert stats["memory_bytes"] >= 4 * 256 * 4


def many(copies: int = 5) -> list[Episode]:
    return [
        e.model_copy(update={"episode_id": f"{e.episode_id}-{i}"})
        for i in range(copies)
        for e in EPISODES
    ]


def test_a_prediction_carries_tool_sets_neighbours_and_reliability() -> None:
    service = IndexService(CONFIG, neighbours=3)
    service.observe(many())
    prediction = service.predict_tools("cancel the pending order", RETAIL)
    assert prediction.sets[0][0] == ["cancel_order", "find_user"]
    assert len(prediction.neighbours) == 3
    assert all(i.startswith("c") for i, _ in prediction.neighbours)
    assert 0.5 < prediction.reliability <= 1.0


def test_removed_episodes_are_no_longer_neighbours() -> None:
    service = IndexService(CONFIG)
    episodes = many()
    service.add_episodes(episodes)
    service.observe(episodes)
    service.remove(["c1-0", "c2-0"])
    found = {i for i, _ in service.predict_tools("cancel the pending order", RETAIL).neighbours}
    assert found
    assert not found & {"c1-0", "c2-0"}
    assert service.stats()["predictor_neighbours"] == len(episodes) - 2


def test_a_save_copying_the_predictor_keeps_learning_out_but_not_queries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At a million episodes the copy takes ~0.7 s: queries must not wait for it."""
    from episodic_memory.core import neighbours_state

    service = IndexService(CONFIG, tmp_path)
    service.observe(EPISODES)
    copying, release = threading.Event(), threading.Event()
    real_snapshot = neighbours_state.snapshot

    def slow_snapshot(index: Any) -> Any:
        copying.set()
        assert release.wait(30)
        return real_snapshot(index)

    monkeypatch.setattr(neighbours_state, "snapshot", slow_snapshot)
    saver = threading.Thread(target=service.save)
    saver.start()
    assert copying.wait(30)
    predicted: list[Any] = []
    query = threading.Thread(
        target=lambda: predicted.append(service.predict_tools("cancel my order", RETAIL))
    )
    query.start()
    query.join(10)
    learned = threading.Thread(target=service.observe, args=([episode("c3", "cancel it", [])],))
    learned.start()
    learned.join(0.5)
    try:
        assert predicted, "a query waited for the save"
        assert learned.is_alive(), "learning changed the predictor while a save copied it"
    finally:
        release.set()
        saver.join(30)
        learned.join(30)
    assert not learned.is_alive()
    assert service.predictor.episodes_observed == len(EPISODES) + 1
