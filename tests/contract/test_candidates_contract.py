"""Ranking rows straight from the store equal what ranking would build from the whole episode.

Same three backends as the store contract: a ``file:`` database and a real sqld (ws, http).
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from store_helpers import T0, make_episode, step, store_completed

from episodic_memory.core.models import Episode, RewardScore, TaskContext
from episodic_memory.core.ranking import Candidate
from episodic_memory.storage.libsql_store import SqlEpisodeStore


def _same(stored: Candidate, expected: Candidate) -> None:
    """Equal but for ``started_at``, which travels as epoch seconds (sub-ms float error)."""
    assert abs(stored.started_at - expected.started_at) < timedelta(milliseconds=1)
    assert dataclasses.replace(stored, started_at=expected.started_at) == expected


def _rich(description: str, *, domain: str = "web", task_type: str = "debugging") -> Episode:
    return make_episode(description, domain=domain, task_type=task_type, completed=True).model_copy(
        update={
            "context": TaskContext(domain=domain, language="python", tags=["Auth", "login"]),
            "reward": RewardScore(
                total=0.8,
                outcome=1.0,
                efficiency=0.5,
                time_efficiency=0.5,
                step_efficiency=0.5,
                complexity_bonus=0.0,
                error_penalty=0.1,
                recovery_bonus=0.05,
            ),
        }
    )


STEPS = [
    step(1, "read_file"),
    step(2, "run_tests", success=False, error="AssertionError"),
    step(3, "run_tests"),
    step(4, "edit_file"),
]


async def test_a_sealed_episode_reads_back_as_the_candidate_of_its_steps(
    store: SqlEpisodeStore,
) -> None:
    episode = _rich("fix the failing login test").model_copy(update={"steps": STEPS})
    await store.put_episodes([episode.model_copy(update={"status": "active", "outcome": None})])
    await store.append_steps([(episode.episode_id, s) for s in STEPS])
    await store.put_episodes([episode])  # sealed with its steps: the tool path is stored
    found = await store.candidates([episode.episode_id])
    expected = Candidate.from_episode(episode)
    assert expected.tools == ("read_file", "run_tests", "edit_file")
    assert expected.recovered
    _same(found[episode.episode_id], expected)
    # A later header write without steps keeps the stored path.
    await store.put_episodes([episode.model_copy(update={"steps": [], "revision": 3})])
    rows = await store.executor.execute(
        "SELECT tool_path, recovered FROM episodes WHERE episode_id = ?", (episode.episode_id,)
    )
    assert rows.rows == [('["read_file","run_tests","edit_file"]', 1)]


async def test_rows_without_a_stored_path_are_derived_from_the_steps_table(
    store: SqlEpisodeStore,
) -> None:
    # Sealed by a header write without steps, as rows written before migration 0002 are.
    episode = await store_completed(store, _rich("rotate the api keys"), STEPS)
    [loaded] = await store.get_episodes([episode.episode_id])
    found = await store.candidates([episode.episode_id])
    _same(found[episode.episode_id], Candidate.from_episode(loaded))
    assert found[episode.episode_id].tools == ("read_file", "run_tests", "edit_file")


async def test_active_and_unknown_episodes_are_not_candidates(store: SqlEpisodeStore) -> None:
    active = make_episode("still running")
    await store.put_episodes([active])
    done = await store_completed(store, make_episode("done", completed=True), [step(1)])
    found = await store.candidates([active.episode_id, "no-such-id", done.episode_id])
    assert list(found) == [done.episode_id]
    assert found[done.episode_id].tools == ("shell",)
    assert await store.candidates([]) == {}


async def test_metadata_ids_come_most_specific_first_then_newest(store: SqlEpisodeStore) -> None:
    def at(minutes: int, **kw: str) -> Episode:
        return make_episode(
            f"task {minutes}", completed=True, started_at=T0 + timedelta(minutes=minutes), **kw
        )

    both_old = at(1, domain="web", task_type="debugging")
    both_new = at(2, domain="web", task_type="debugging")
    type_only = at(3, domain="data", task_type="debugging")
    domain_only = at(4, domain="web", task_type="refactor")
    unrelated = at(5, domain="ops", task_type="deploy")
    active = make_episode("active", domain="web", task_type="debugging", started_at=T0)
    for episode in (both_old, both_new, type_only, domain_only, unrelated):
        await store_completed(store, episode, [step(1)])
    await store.put_episodes([active])
    ids = await store.metadata_candidate_ids("web", "debugging", 10)
    assert ids == [
        both_new.episode_id,
        both_old.episode_id,
        type_only.episode_id,
        domain_only.episode_id,
    ]
    assert await store.metadata_candidate_ids("web", "debugging", 2) == ids[:2]
    assert await store.metadata_candidate_ids(None, None, 2) == [
        unrelated.episode_id,
        domain_only.episode_id,
    ]
    assert await store.metadata_candidate_ids("web", None, 0) == []
