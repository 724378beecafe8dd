"""Restoring the index from storage: vectors streamed into one matrix, the predictor relearned.

Real parts: a libSQL file database and LMDB (StorageService), the hashing embedder and FAISS.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from episodic_memory.actors.index_thread import ThreadedIndex, restore_index
from episodic_memory.config import IndexConfig, MemoryConfig
from episodic_memory.core.models import Episode, ExecutionStep, TaskContext, TaskOutcome
from episodic_memory.index.service import IndexService
from episodic_memory.storage.base import StoredEmbedding
from episodic_memory.storage.service import StorageService

TASKS = [
    ("cancel the pending order of {n}", ["find_user", "get_order", "cancel_order"]),
    ("return the delivered jacket of {n}", ["find_user", "get_order", "return_items"]),
    ("book a flight to Denver for {n}", ["search_flights", "book"]),
]


def episode(number: int) -> Episode:
    text, _ = TASKS[number % len(TASKS)]
    return Episode(
        episode_id=f"ep-{number:03d}",
        task_description=text.format(n=f"customer {number}"),
        context=TaskContext(domain="shop"),
    )


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[StorageService]:
    service = await StorageService.open(MemoryConfig(data_dir=tmp_path / "memory"))
    yield service
    await service.close()


async def fill(storage: StorageService, count: int) -> list[Episode]:
    """Completed episodes in storage, with the vectors an index made for them."""
    sealed = []
    for number in range(count):
        header = episode(number)
        await storage.create_episodes([header])
        tools = TASKS[number % len(TASKS)][1]
        steps = [ExecutionStep(step_number=i + 1, tool=t) for i, t in enumerate(tools)]
        done = header.model_copy(
            update={"status": "completed", "outcome": TaskOutcome.success(), "steps": steps}
        )
        sealed += await storage.seal_episodes([done])
    maker = IndexService(IndexConfig(hashing_dim=256))
    await storage.put_embeddings(maker.add_episodes(sealed))
    return sealed


def fresh_index(folder: Path) -> ThreadedIndex:
    return ThreadedIndex(IndexService(IndexConfig(hashing_dim=256), folder))


async def test_an_index_without_files_is_rebuilt_and_relearned_from_storage(
    storage: StorageService, tmp_path: Path
) -> None:
    sealed = await fill(storage, 30)
    index = fresh_index(tmp_path / "index")
    try:
        await restore_index(index, storage)
        assert index.dirty  # rebuilt: worth saving
        service = index.service
        assert service.vectors is not None
        assert len(service.vectors) == 30
        assert len(service.predictor.neighbours) == 30
        hits, prediction = await index.retrieval_hints(
            "cancel the pending order of a customer", TaskContext(domain="shop"), 3
        )
        assert {i for i, _ in hits} <= {e.episode_id for e in sealed[0::3]}
        assert prediction.sequence[:3] == ["find_user", "get_order", "cancel_order"]
        await index.save()
    finally:
        index.close()
    reopened = fresh_index(tmp_path / "index")
    try:
        await restore_index(reopened, storage)
        assert not reopened.dirty  # everything came from the saved files
        assert reopened.service.vectors is not None
        assert len(reopened.service.vectors) == 30
    finally:
        reopened.close()


async def test_vectors_of_another_embedder_are_skipped(
    storage: StorageService, tmp_path: Path
) -> None:
    await fill(storage, 6)
    foreign = StoredEmbedding(episode_id="ep-000", model="other-model", dim=2, vector=bytes(8))
    await storage.put_embeddings([foreign])  # ep-000's vector is now another model's
    index = fresh_index(tmp_path / "index")
    try:
        await restore_index(index, storage)
        assert index.service.vectors is not None
        assert sorted(index.service.vectors.ids()) == [f"ep-{n:03d}" for n in range(1, 6)]
    finally:
        index.close()


async def test_relearning_streams_pages_of_completed_episodes_only(
    storage: StorageService,
) -> None:
    await fill(storage, 7)
    await storage.create_episodes([episode(99)])  # active: not learned from
    pages = [page async for page in storage.iter_completed(3)]
    assert all(e.status == "completed" for page in pages for e in page)
    assert sorted(e.episode_id for page in pages for e in page) == [f"ep-{n:03d}" for n in range(7)]
    assert max(len(page) for page in pages) <= 3
