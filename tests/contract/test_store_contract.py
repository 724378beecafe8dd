"""The EpisodeStore contract: the same assertions on a file database and on sqld (ws, http)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from store_helpers import T0, make_episode, step, store_completed, store_config
from store_strategies import episodes

from episodic_memory.core.models import (
    Episode,
    ExecutionStep,
    Reflection,
    RewardScore,
    TaskContext,
    TaskOutcome,
)
from episodic_memory.errors import StorageError, ValidationError
from episodic_memory.storage.base import EpisodeQuery, EpisodeStore, StoredEmbedding
from episodic_memory.storage.libsql_store import SqlEpisodeStore, open_store


def test_the_sql_store_satisfies_the_episode_store_protocol(store: SqlEpisodeStore) -> None:
    assert isinstance(store, EpisodeStore)


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(episode=episodes())
async def test_any_valid_episode_with_steps_round_trips_losslessly(
    store: SqlEpisodeStore, episode: Episode
) -> None:
    await store.put_episodes([episode])
    assert await store.append_steps([(episode.episode_id, s) for s in episode.steps]) == len(
        episode.steps
    )
    [loaded] = await store.get_episodes([episode.episode_id])
    assert loaded == episode
    [listed] = await store.list_episodes(
        EpisodeQuery(task_type=episode.task_type, domain=episode.context.domain, with_steps=True)
    )
    assert listed == episode
    await store.delete_episodes([episode.episode_id])


async def test_sub_second_timestamps_and_unicode_survive_exactly(store: SqlEpisodeStore) -> None:
    started = datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=UTC)
    episode = Episode(
        task_description="répare le 🐛 dans «parser» — 修复解析器\nline two\ttab",
        context=TaskContext(domain="δομή", language="日本語", tags=["ü", "😀", "a b"]),
        task_type="débogage",
        status="completed",
        outcome=TaskOutcome.partial(completed=["a"], failed=["b"], summary="½"),
        reward=RewardScore(
            total=0.625,
            outcome=0.5,
            efficiency=0.1,
            time_efficiency=0.2,
            step_efficiency=0.3,
            complexity_bonus=0.0,
            error_penalty=0.05,
            recovery_bonus=0.1,
        ),
        reflection=Reflection(successes=["ok"], improvements=["faster"], insights=["x"]),
        started_at=started,
        completed_at=started + timedelta(microseconds=1),
        metadata={"nested": {"list": [1, 2.5, None, True, "ß"]}, "big": 2**62},
        pattern_ids=["p1", "p2"],
        revision=7,
    )
    steps = [
        step(1, "read_file", parameters={"path": "/tmp/ü"}, latency_ms=0.001, tokens=3),
        step(2, "edit", success=False, error="boom ✗", timestamp=started + timedelta(0, 0, 7)),
    ]
    expected = await store_completed(store, episode, steps)
    [loaded] = await store.get_episodes([episode.episode_id])
    assert loaded == expected
    assert loaded.started_at == started
    assert loaded.completed_at is not None
    assert loaded.completed_at - loaded.started_at == timedelta(microseconds=1)


async def test_appending_the_same_steps_twice_stores_them_once(store: SqlEpisodeStore) -> None:
    episode = make_episode()
    await store.put_episodes([episode])
    batch = [(episode.episode_id, step(n)) for n in (1, 2, 3)]
    assert await store.append_steps(batch) == 3
    assert await store.append_steps(batch) == 0
    assert await store.append_steps([*batch, (episode.episode_id, step(4))]) == 1
    [loaded] = await store.get_episodes([episode.episode_id])
    assert [s.step_number for s in loaded.steps] == [1, 2, 3, 4]
    assert (await store.counts())["steps"] == 4


async def test_a_retried_step_keeps_its_first_content(store: SqlEpisodeStore) -> None:
    episode = make_episode()
    await store.put_episodes([episode])
    await store.append_steps([(episode.episode_id, step(1, "first"))])
    await store.append_steps([(episode.episode_id, step(1, "second"))])
    [loaded] = await store.get_episodes([episode.episode_id])
    assert [s.tool for s in loaded.steps] == ["first"]


async def test_steps_come_back_in_step_number_order_whatever_the_arrival_order(
    store: SqlEpisodeStore,
) -> None:
    episode = make_episode()
    await store.put_episodes([episode])
    for number in (10, 2, 7):
        await store.append_steps([(episode.episode_id, step(number, f"t{number}"))])
    await store.append_steps([(episode.episode_id, step(n, f"t{n}")) for n in (5, 1)])
    [loaded] = await store.get_episodes([episode.episode_id])
    assert [s.step_number for s in loaded.steps] == [1, 2, 5, 7, 10]


async def test_a_step_without_a_number_is_rejected_and_nothing_is_written(
    store: SqlEpisodeStore,
) -> None:
    episode = make_episode()
    await store.put_episodes([episode])
    unnumbered = ExecutionStep(tool="shell")
    with pytest.raises(ValidationError) as caught:
        await store.append_steps([(episode.episode_id, step(1)), (episode.episode_id, unnumbered)])
    assert caught.value.field == "steps.1.step_number"
    assert (await store.counts())["steps"] == 0


async def test_rewriting_a_header_keeps_its_steps_and_its_learned_mark(
    store: SqlEpisodeStore,
) -> None:
    episode = make_episode(completed=True)
    await store_completed(store, episode, [step(1), step(2)])
    await store.mark_learned([episode.episode_id])
    await store.put_episodes([episode.model_copy(update={"revision": 5})])
    [loaded] = await store.get_episodes([episode.episode_id])
    assert len(loaded.steps) == 2
    assert loaded.revision == 5
    assert await store.unlearned_episode_ids() == []


async def test_get_episodes_keeps_the_asked_order_and_skips_unknown_ids(
    store: SqlEpisodeStore,
) -> None:
    a, b, c = (make_episode(f"task {n}") for n in "abc")
    await store.put_episodes([a, b, c])
    ids = [c.episode_id, "no-such-episode", a.episode_id, b.episode_id, c.episode_id]
    loaded = await store.get_episodes(ids)
    assert [e.episode_id for e in loaded] == [c.episode_id, a.episode_id, b.episode_id]
    assert await store.get_episodes([]) == []


async def test_list_episodes_is_newest_first_and_applies_every_filter(
    store: SqlEpisodeStore,
) -> None:
    def at(minutes: int) -> datetime:
        return T0 + timedelta(minutes=minutes)

    rows = [
        make_episode("a", domain="web", task_type="debug", started_at=at(0), completed=True),
        make_episode("b", domain="web", task_type="refactor", started_at=at(1)),
        make_episode(
            "c",
            domain="data",
            task_type="debug",
            started_at=at(2),
            completed=True,
            verdict="failure",
        ),
        make_episode("d", domain="web", task_type="debug", started_at=at(3), completed=True),
    ]
    await store.put_episodes(rows)

    async def listed(**filters: object) -> list[str]:
        found = await store.list_episodes(EpisodeQuery(**filters))  # type: ignore[arg-type]
        return [e.task_description for e in found]

    assert await listed() == ["d", "c", "b", "a"]
    assert await listed(domain="web") == ["d", "b", "a"]
    assert await listed(task_type="debug") == ["d", "c", "a"]
    assert await listed(verdict="failure") == ["c"]
    assert await listed(status="active") == ["b"]
    assert await listed(started_after=at(1)) == ["d", "c", "b"]
    assert await listed(started_before=at(2)) == ["b", "a"]
    assert await listed(domain="web", task_type="debug", verdict="success") == ["d", "a"]
    assert await listed(limit=2) == ["d", "c"]
    assert await listed(limit=2, offset=2) == ["b", "a"]
    assert await listed(domain="nowhere") == []
    without_steps = await store.list_episodes(EpisodeQuery(limit=1))
    assert without_steps[0].steps == []


async def test_keyword_search_finds_completed_episodes_by_description_and_step_text(
    store: SqlEpisodeStore,
) -> None:
    by_description = make_episode("migrate the postgres schema", completed=True)
    by_steps = make_episode("an unrelated title", completed=True)
    other = make_episode("bake bread", completed=True)
    await store_completed(store, by_description, [step(1)])
    await store_completed(
        store,
        by_steps,
        [
            step(1, "psql", action="run migration", observation="postgres says ok", error=None),
            step(2, "kubectl", error="postgres pod crashed"),
        ],
    )
    await store_completed(store, other, [step(1, "oven")])
    hits = await store.keyword_search("postgres")
    assert {h.episode_id for h in hits} == {by_description.episode_id, by_steps.episode_id}
    assert hits[0].episode_id == by_description.episode_id  # description weighs more
    assert all(h.score > 0 for h in hits)
    assert [h.episode_id for h in await store.keyword_search("kubectl crashed")] == [
        by_steps.episode_id
    ]
    assert [h.episode_id for h in await store.keyword_search("oven")] == [other.episode_id]


async def test_keyword_search_skips_active_episodes_and_filters_by_domain(
    store: SqlEpisodeStore,
) -> None:
    active = make_episode("deploy the service")
    web = make_episode("deploy the website", domain="web", completed=True)
    infra = make_episode("deploy the cluster", domain="infra", completed=True)
    await store.put_episodes([active])
    await store_completed(store, web, [])
    await store_completed(store, infra, [])
    assert {h.episode_id for h in await store.keyword_search("deploy")} == {
        web.episode_id,
        infra.episode_id,
    }
    assert [h.episode_id for h in await store.keyword_search("deploy", domain="web")] == [
        web.episode_id
    ]
    assert len(await store.keyword_search("deploy", limit=1)) == 1
    assert await store.keyword_search("deploy", limit=0) == []


@pytest.mark.parametrize(
    "query",
    [
        "NEAR(deploy cluster, 2)",
        '"unbalanced deploy',
        "description:deploy",
        "deploy AND NOT cluster",
        "deploy*",
        "^deploy",
        "(deploy) OR )(",
        "deploy'; DROP TABLE episodes; --",
        "deploy\x01\u200b\U0001f600",
    ],
)
async def test_fts_syntax_in_user_text_is_only_ever_plain_words(
    store: SqlEpisodeStore, query: str
) -> None:
    episode = make_episode("deploy the cluster", completed=True)
    await store_completed(store, episode, [])
    hits = await store.keyword_search(query)
    assert [h.episode_id for h in hits] == [episode.episode_id]
    assert (await store.counts())["episodes"] == 1


async def test_keyword_search_with_no_words_returns_nothing(store: SqlEpisodeStore) -> None:
    await store_completed(store, make_episode("deploy", completed=True), [])
    assert await store.keyword_search("  ?!* \"' ") == []
    assert await store.keyword_search("") == []


async def test_unlearned_ids_are_completed_episodes_until_marked(store: SqlEpisodeStore) -> None:
    first = make_episode("one", completed=True, started_at=T0)
    second = make_episode("two", completed=True, started_at=T0 + timedelta(hours=1))
    active = make_episode("three")
    await store.put_episodes([first, second, active])
    assert await store.unlearned_episode_ids() == [first.episode_id, second.episode_id]
    assert await store.unlearned_episode_ids(limit=1) == [first.episode_id]
    await store.mark_learned([first.episode_id, "unknown"])
    assert await store.unlearned_episode_ids() == [second.episode_id]


async def test_episode_versions_lists_completed_episodes_with_their_revision(
    store: SqlEpisodeStore,
) -> None:
    done = make_episode("done", completed=True).model_copy(update={"revision": 3})
    await store.put_episodes([done, make_episode("active")])
    assert await store.episode_versions() == {done.episode_id: 3}


async def test_delete_removes_the_episode_its_steps_embedding_and_search_row(
    store: SqlEpisodeStore,
) -> None:
    gone = make_episode("delete me please", completed=True)
    kept = make_episode("keep me please", completed=True)
    await store_completed(store, gone, [step(1), step(2)])
    await store_completed(store, kept, [step(1)])
    await store.put_embeddings(
        [StoredEmbedding(episode_id=gone.episode_id, model="m", dim=1, vector=b"\0\0\0\0")]
    )
    assert await store.delete_episodes([gone.episode_id, gone.episode_id, "unknown"]) == 1
    assert await store.get_episodes([gone.episode_id]) == []
    assert [h.episode_id for h in await store.keyword_search("please")] == [kept.episode_id]
    assert await store.counts() == {
        "episodes": 1,
        "steps": 1,
        "patterns": 0,
        "heuristics": 0,
        "embeddings": 0,
    }
    assert await store.delete_episodes([gone.episode_id]) == 0


async def test_iter_episodes_pages_through_every_episode_oldest_first(
    store: SqlEpisodeStore,
) -> None:
    stored = [make_episode(f"e{n}", started_at=T0 + timedelta(seconds=n)) for n in range(7)]
    same_time = [make_episode(f"tie{n}", started_at=T0 + timedelta(seconds=3)) for n in range(3)]
    await store.put_episodes(list(reversed(stored)) + same_time)
    await store.append_steps([(stored[0].episode_id, step(1))])
    pages = [page async for page in store.iter_episodes(batch_size=3)]
    assert [len(page) for page in pages] == [3, 3, 3, 1]
    seen = [e for page in pages for e in page]
    assert len({e.episode_id for e in seen}) == 10
    assert [e.started_at for e in seen] == sorted(e.started_at for e in seen)
    assert seen[0].episode_id == stored[0].episode_id
    assert len(seen[0].steps) == 1


async def test_writes_larger_than_one_transaction_all_land(store: SqlEpisodeStore) -> None:
    small_batches = SqlEpisodeStore(store.executor, write_batch_size=7)
    many = [make_episode(f"bulk {n}", started_at=T0 + timedelta(seconds=n)) for n in range(30)]
    await small_batches.put_episodes(many)
    appended = await small_batches.append_steps(
        [(e.episode_id, step(n)) for e in many[:5] for n in range(1, 5)]
    )
    assert appended == 20
    assert (await store.counts())["episodes"] == 30
    assert len(await store.get_episodes([e.episode_id for e in many])) == 30


async def test_counts_reports_rows_per_table(store: SqlEpisodeStore) -> None:
    assert await store.counts() == {
        "episodes": 0,
        "steps": 0,
        "patterns": 0,
        "heuristics": 0,
        "embeddings": 0,
    }


async def test_an_episode_stored_in_an_older_json_shape_still_loads(
    store: SqlEpisodeStore,
) -> None:
    # A v1 writer that knew none of the optional fields: only the required ones in `data`.
    old_json = '{"episode_id": "old-1", "task_description": "legacy task"}'
    await store.executor.execute(
        "INSERT INTO episodes (episode_id, task_type, domain, status, started_at, "
        "schema_version, data) VALUES (?, 'general', 'general', 'active', 0, 1, ?)",
        ("old-1", old_json),
    )
    await store.executor.execute(
        "INSERT INTO steps (episode_id, step_number, tool, success, timestamp, schema_version, "
        "data) VALUES ('old-1', 1, 'grep', 1, 0, 1, ?)",
        ('{"tool": "grep", "step_number": 1}',),
    )
    [loaded] = await store.get_episodes(["old-1"])
    assert loaded.task_description == "legacy task"
    assert loaded.context == TaskContext()
    assert loaded.steps[0].tool == "grep"
    assert loaded.steps[0].parameters == {}


async def test_a_stored_row_that_no_longer_validates_is_a_storage_error(
    store: SqlEpisodeStore,
) -> None:
    await store.executor.execute(
        "INSERT INTO episodes (episode_id, task_type, domain, status, started_at, "
        "schema_version, data) VALUES ('bad', 'general', 'general', 'active', 0, 1, ?)",
        ('{"episode_id": "bad", "task_description": "", "revision": -1}',),
    )
    with pytest.raises(StorageError, match="'bad'"):
        await store.get_episodes(["bad"])


async def test_a_closed_store_refuses_calls_with_a_storage_error(
    database_url: str, tmp_path: Path
) -> None:
    opened = await open_store(store_config(database_url, tmp_path))
    await opened.close()
    await opened.close()  # idempotent
    with pytest.raises(StorageError, match="closed"):
        await opened.counts()
