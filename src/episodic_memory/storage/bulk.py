"""Bulk writes: an ingest batch as bound rows, written by the storage side in one transaction.

Why rows and not ``Episode`` objects: pickling a thousand validated episodes (ten steps each)
across a Ray actor boundary costs ~15× more than pickling the tuples ``storage.sql`` builds from
them, and the storage actor is the one writer everybody waits on. So the caller does the CPU
work (validation, redaction, JSON, ``sql.upsert_episode``/``sql.insert_step``) and the storage
side only checks the statements are ours and executes them.

Per episode, a group of statements — its steps first (a completed episode's full-text row reads
the steps table), then its vector, then its header and full-text row — so an episode is stored
*with* its steps and vector or not at all. With the embedded store (``file:``) the whole batch is
one transaction; a remote store gets transactions of at most ``write_batch_size`` whole groups
(bounded request size), which keeps the same per-episode guarantee. An id already stored is left
as it is (counted in ``BatchResult.skipped``): a retried or resumed batch writes nothing twice,
and "stored" is a sound test for "done" because a header is never committed without its steps
and vector.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from episodic_memory.core.models import Episode, ExecutionStep, TaskOutcome
from episodic_memory.errors import StorageError, ValidationError
from episodic_memory.storage import sql
from episodic_memory.storage.base import EpisodeStore, StoredEmbedding
from episodic_memory.storage.executors import SqliteExecutor
from episodic_memory.storage.libsql_store import SqlEpisodeStore
from episodic_memory.storage.sql import Statement

__all__ = [
    "BatchResult",
    "EpisodeRows",
    "IngestRows",
    "embedding_rows",
    "episode_rows",
    "stored_ids",
    "write_rows",
]

ID_CHUNK = 500  # ids per IN (...) list


@dataclass(frozen=True, slots=True)
class EpisodeRows:
    """One episode as the statements ``storage.sql`` builds for it (plain data: cheap to send)."""

    episode_id: str
    header: list[Statement]
    steps: list[Statement]
    learned: bool = False  # mark it learned in the same transaction (its learning is skipped)


@dataclass(frozen=True, slots=True)
class IngestRows:
    """A batch: episodes in input order, and the vectors of the completed ones by episode id."""

    episodes: list[EpisodeRows]
    embeddings: dict[str, Statement] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BatchResult:
    """Which episodes a batch wrote, which it found stored already, and the step rows it added.

    ``repeats``: records of the batch whose id came earlier in the same batch (dropped).
    """

    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    steps: int = 0
    repeats: int = 0


def episode_rows(episode: Episode, *, learned: bool = False) -> EpisodeRows:
    """The statements of a prepared episode: numbered steps, header and full-text row."""
    eid = episode.episode_id
    return EpisodeRows(
        episode_id=eid,
        header=sql.upsert_episode(episode),
        steps=[sql.insert_step(eid, step) for step in episode.steps],
        learned=learned,
    )


def embedding_rows(embeddings: Sequence[StoredEmbedding]) -> dict[str, Statement]:
    return {e.episode_id: sql.upsert_embedding(e) for e in embeddings}


def _allowed() -> frozenset[str]:
    """The SQL texts a batch may carry: whatever the builders emit, found by calling them."""
    when = datetime(2000, 1, 1, tzinfo=UTC)
    step = ExecutionStep(step_number=1, tool="t", timestamp=when)
    active = Episode(episode_id="x", task_description="x", steps=[step], started_at=when)
    done = active.model_copy(update={"status": "completed", "outcome": TaskOutcome.success()})
    vector = StoredEmbedding(episode_id="x", model="m", dim=1, vector=b"\0\0\0\0")
    texts = {s for e in (active, done) for s, _ in sql.upsert_episode(e)}
    return frozenset(texts | {sql.insert_step("x", step)[0], sql.upsert_embedding(vector)[0]})


_ALLOWED = _allowed()


def _check(batch: IngestRows) -> None:
    """Only our builders' statements, each about the episode it is filed under."""
    for index, rows in enumerate(batch.episodes):
        for text, _ in [*rows.header, *rows.steps]:
            if text not in _ALLOWED:
                raise ValidationError(
                    f"batch.episodes.{index}", "carries SQL that storage.sql did not build",
                    "build rows with storage.bulk.episode_rows",
                )  # fmt: skip
        owners = [params[0] for _, params in [*rows.header[:1], *rows.steps]]
        if any(owner != rows.episode_id for owner in owners):
            raise ValidationError(
                f"batch.episodes.{index}", "has rows of another episode", "rebuild the rows"
            )
    for eid, (text, params) in batch.embeddings.items():
        if text not in _ALLOWED or params[0] != eid:
            raise ValidationError("batch.embeddings", f"entry {eid!r} is not a vector row", "")


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _sql_store(store: EpisodeStore) -> SqlEpisodeStore:
    if not isinstance(store, SqlEpisodeStore):
        raise StorageError(f"bulk writes need a libSQL store, not {type(store).__name__}")
    return store


async def stored_ids(store: EpisodeStore, episode_ids: Sequence[str]) -> set[str]:
    """Which of these episode ids the store holds (any status)."""
    executor = _sql_store(store).executor
    found: set[str] = set()
    for ids in _chunks(list(dict.fromkeys(episode_ids)), ID_CHUNK):
        marks = ", ".join("?" for _ in ids)
        result = await executor.execute(
            f"SELECT episode_id FROM episodes WHERE episode_id IN ({marks})", tuple(ids)
        )
        found.update(str(row[0]) for row in result.rows)
    return found


async def write_rows(store: EpisodeStore, batch: IngestRows, group_limit: int) -> BatchResult:
    """Write the episodes of ``batch`` the store does not hold yet; see the module docstring.

    ``group_limit``: episodes per transaction for a remote store (the embedded one takes the
    whole batch at once).
    """
    _check(batch)
    sql_store = _sql_store(store)
    executor = sql_store.executor
    have = await stored_ids(store, [rows.episode_id for rows in batch.episodes])
    fresh: dict[str, EpisodeRows] = {}
    for rows in batch.episodes:
        if rows.episode_id not in have:
            fresh.setdefault(rows.episode_id, rows)  # a repeat within the batch: first wins
    order = list(fresh)
    size = len(order) if isinstance(executor, SqliteExecutor) else max(1, group_limit)
    steps = 0
    now = time.time()
    for ids in _chunks(order, max(1, size)):
        statements: list[Statement] = []
        counted: list[int] = []  # positions of the step inserts, whose row counts add up
        for eid in ids:
            rows = fresh[eid]
            counted.extend(range(len(statements), len(statements) + len(rows.steps)))
            statements.extend(rows.steps)
            if (vector := batch.embeddings.get(eid)) is not None:
                statements.append(vector)
            statements.extend(rows.header)
        learned = [eid for eid in ids if fresh[eid].learned]
        statements += [sql.mark_learned(part, now) for part in _chunks(learned, ID_CHUNK)]
        if statements:
            results = await executor.batch(statements)
            steps += sum(results[i].rows_affected for i in counted)
    skipped: list[str] = []
    first: set[str] = set()
    for rows in batch.episodes:
        if rows.episode_id in fresh and rows.episode_id not in first:
            first.add(rows.episode_id)
        else:
            skipped.append(rows.episode_id)
    return BatchResult(written=order, skipped=skipped, steps=steps)
