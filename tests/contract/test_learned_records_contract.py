"""Patterns, heuristics and embeddings: upserts by id, typed loads, raw bytes, paging."""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta

import pytest
from store_helpers import make_episode, step, store_completed

from episodic_memory.core.patterns import (
    ContextPattern,
    DecisionPoint,
    ErrorRecovery,
    Heuristic,
    ToolSequence,
)
from episodic_memory.errors import ValidationError
from episodic_memory.storage.base import StoredEmbedding
from episodic_memory.storage.libsql_store import SqlEpisodeStore

SEEN = datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


def all_kinds(
    domain: str = "code",
) -> list[ToolSequence | DecisionPoint | ErrorRecovery | ContextPattern]:
    common = {"domain": domain, "first_seen": SEEN, "last_seen": SEEN + timedelta(seconds=1)}
    return [
        ToolSequence(
            pattern_id=f"ts-{domain}",
            key="k1",
            tools=["read", "edit"],
            occurrences=3,
            successes=2,
            confidence=0.9,
            episode_ids=["e1", "e2"],
            **common,
        ),
        DecisionPoint(
            pattern_id=f"dp-{domain}",
            key="k2",
            after_tools=["read"],
            chosen_tool="grep",
            confidence=0.7,
            **common,
        ),
        ErrorRecovery(
            pattern_id=f"er-{domain}",
            key="k3",
            failed_tool="pip",
            error_signature="E: 404",
            recovery_tools=["pip", "retry"],
            confidence=0.5,
            total_latency_ms=12.5,
            **common,
        ),
        ContextPattern(
            pattern_id=f"cp-{domain}",
            key="k4",
            features={"language": "python"},
            tools=["pytest"],
            confidence=0.3,
            total_tokens=99,
            **common,
        ),
    ]


async def test_all_four_pattern_kinds_load_back_as_their_own_class(store: SqlEpisodeStore) -> None:
    patterns = all_kinds()
    await store.upsert_patterns(patterns)
    loaded = await store.load_patterns()
    assert loaded == patterns  # most confident first, every field equal
    assert [type(p) for p in loaded] == [ToolSequence, DecisionPoint, ErrorRecovery, ContextPattern]


async def test_upserting_a_pattern_again_replaces_it_by_id(store: SqlEpisodeStore) -> None:
    first = all_kinds()[0]
    assert isinstance(first, ToolSequence)
    await store.upsert_patterns([first])
    updated = first.model_copy(update={"occurrences": 10, "confidence": 0.95})
    await store.upsert_patterns([updated])
    assert await store.load_patterns() == [updated]
    assert (await store.counts())["patterns"] == 1


async def test_patterns_filter_by_domain_and_limit(store: SqlEpisodeStore) -> None:
    await store.upsert_patterns(all_kinds("code") + all_kinds("web"))
    web = await store.load_patterns(domain="web")
    assert {p.domain for p in web} == {"web"}
    assert len(web) == 4
    top = await store.load_patterns(limit=2)
    assert [p.confidence for p in top] == [0.9, 0.9]
    assert await store.load_patterns(domain="none") == []


async def test_heuristics_upsert_by_id_and_filter_by_domain(store: SqlEpisodeStore) -> None:
    def heuristic(hid: str, domain: str, confidence: float) -> Heuristic:
        return Heuristic(
            heuristic_id=hid,
            condition="tests fail after edit",
            action="run pytest -x first",
            domain=domain,
            trigger="after_tool",
            tool="edit",
            confidence=confidence,
            evidence_count=4,
            success_count=3,
            episode_ids=["e1"],
            created_at=SEEN,
            updated_at=SEEN,
        )

    low, high, other = (
        heuristic("h1", "code", 0.2),
        heuristic("h2", "code", 0.8),
        heuristic("h3", "web", 0.5),
    )
    await store.upsert_heuristics([low, high, other])
    assert await store.load_heuristics(domain="code") == [high, low]
    raised = low.model_copy(update={"confidence": 0.99})
    await store.upsert_heuristics([raised])
    assert await store.load_heuristics(limit=1) == [raised]
    assert (await store.counts())["heuristics"] == 3


async def test_embedding_bytes_round_trip_exactly_and_page_by_model(
    store: SqlEpisodeStore,
) -> None:
    vectors = {
        f"ep-{n}": struct.pack("<3f", n + 0.5, -0.0, float("inf") if n == 0 else 1e-38)
        for n in range(5)
    }
    await store.put_embeddings(
        [
            StoredEmbedding(episode_id=eid, model="hash-1024", dim=3, vector=v)
            for eid, v in vectors.items()
        ]
        + [StoredEmbedding(episode_id="other", model="minilm", dim=1, vector=b"\x00\x00\x80\x3f")]
    )
    pages = [page async for page in store.iter_embeddings("hash-1024", batch_size=2)]
    assert [len(page) for page in pages] == [2, 2, 1]
    loaded = {e.episode_id: e for page in pages for e in page}
    assert {eid: e.vector for eid, e in loaded.items()} == vectors
    assert {(e.model, e.dim) for e in loaded.values()} == {("hash-1024", 3)}
    assert [e.episode_id async for page in store.iter_embeddings("minilm") for e in page] == [
        "other"
    ]


async def test_an_embedding_is_replaced_when_put_again(store: SqlEpisodeStore) -> None:
    one = StoredEmbedding(episode_id="e", model="m", dim=1, vector=struct.pack("<f", 1.0))
    two = StoredEmbedding(episode_id="e", model="m2", dim=2, vector=struct.pack("<2f", 2.0, 3.0))
    await store.put_embeddings([one])
    await store.put_embeddings([two])
    assert [page async for page in store.iter_embeddings("m")] == []
    assert [page async for page in store.iter_embeddings("m2")] == [[two]]


async def test_an_embedding_of_the_wrong_byte_length_is_rejected_before_writing(
    store: SqlEpisodeStore,
) -> None:
    good = StoredEmbedding(episode_id="a", model="m", dim=2, vector=b"\0" * 8)
    bad = StoredEmbedding(episode_id="b", model="m", dim=2, vector=b"\0" * 7)
    with pytest.raises(ValidationError) as caught:
        await store.put_embeddings([good, bad])
    assert caught.value.field == "embeddings.1.vector"
    assert (await store.counts())["embeddings"] == 0


async def test_commit_learning_writes_records_and_learned_marks_together(
    store: SqlEpisodeStore,
) -> None:
    episode = await store_completed(store, make_episode("learn-me", completed=True), [step(1)])
    pattern = all_kinds()[0]
    assert await store.learned_episode_ids([episode.episode_id]) == set()
    await store.commit_learning([pattern], [], [episode.episode_id])
    assert await store.learned_episode_ids([episode.episode_id, "unknown"]) == {episode.episode_id}
    assert episode.episode_id not in await store.unlearned_episode_ids()
    assert pattern.pattern_id in {p.pattern_id for p in await store.load_patterns()}
