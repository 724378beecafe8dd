"""Bulk writes (``storage/bulk.py``) on every backend: a file database and sqld over ws and http.

A batch writes each new episode with its steps, vector, full-text row and learned mark; a
stored id is skipped whole (a retried batch writes nothing twice); rows from anywhere but the
SQL builders are refused. Remote stores get transactions of ``group_limit`` whole episodes.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from store_helpers import make_episode

from episodic_memory.core.models import Episode, ExecutionStep
from episodic_memory.errors import ValidationError
from episodic_memory.storage import bulk
from episodic_memory.storage.base import StoredEmbedding
from episodic_memory.storage.libsql_store import SqlEpisodeStore


def episodes(count: int) -> list[Episode]:
    made = []
    for n in range(count):
        episode = make_episode(f"rotate the keys of service {n}", completed=True)
        steps = [ExecutionStep(step_number=i, tool=f"tool{i}", action="run") for i in (1, 2, 3)]
        made.append(episode.model_copy(update={"episode_id": f"bulk-{n}", "steps": steps}))
    return made


def batch(items: list[Episode], *, learned: bool = False) -> bulk.IngestRows:
    vectors = [
        StoredEmbedding(episode_id=e.episode_id, model="m", dim=2, vector=b"\0" * 8) for e in items
    ]
    return bulk.IngestRows(
        [bulk.episode_rows(e, learned=learned) for e in items], bulk.embedding_rows(vectors)
    )


async def count(store: SqlEpisodeStore, sql: str) -> int:
    return int(str((await store.executor.execute(sql)).rows[0][0]))


async def test_a_batch_writes_each_new_episode_whole_and_skips_stored_ones(
    store: SqlEpisodeStore,
) -> None:
    first = await bulk.write_rows(store, batch(episodes(7), learned=True), group_limit=3)
    assert (len(first.written), first.skipped, first.steps) == (7, [], 21)
    again = await bulk.write_rows(store, batch(episodes(9)), group_limit=3)
    assert (again.written, again.skipped, again.steps) == (
        ["bulk-7", "bulk-8"],
        [f"bulk-{n}" for n in range(7)],
        6,
    )
    assert await count(store, "SELECT count(*) FROM steps") == 27
    assert await count(store, "SELECT count(*) FROM embeddings") == 9
    assert await count(store, "SELECT count(*) FROM episodes WHERE learned_at IS NOT NULL") == 7
    assert await count(store, "SELECT count(*) FROM episodes WHERE tool_path IS NOT NULL") == 9
    hits = await store.keyword_search("tool2 rotate")  # the FTS row holds the steps' text
    assert len(hits) == 9
    assert await bulk.stored_ids(store, ["bulk-0", "nope"]) == {"bulk-0"}


async def test_rows_not_built_by_the_sql_builders_are_refused(store: SqlEpisodeStore) -> None:
    rows = batch(episodes(1))
    forged = replace(rows.episodes[0], steps=[("DELETE FROM episodes", ())])
    with pytest.raises(ValidationError, match="did not build"):
        await bulk.write_rows(store, bulk.IngestRows([forged]), group_limit=10)
    other = replace(rows.episodes[0], episode_id="someone-else")
    with pytest.raises(ValidationError, match="another episode"):
        await bulk.write_rows(store, bulk.IngestRows([other]), group_limit=10)
    assert await count(store, "SELECT count(*) FROM episodes") == 0
