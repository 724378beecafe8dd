"""Pure SQL builders: each store operation becomes ``(sql, params)`` and nothing else.

Backends only *execute* what these functions build, so the SQL is written once, tested
without a database, and every value travels as a bound parameter (never spliced into text).
Upserts use ``ON CONFLICT DO UPDATE``: measured 2× faster than ``INSERT OR REPLACE`` when the
row exists (REPLACE deletes and reinserts, touching every index) and it keeps columns the
writer does not own, such as ``learned_at``. Step appends are ``INSERT OR IGNORE`` on
``(episode_id, step_number)``, so a retried flush never duplicates a step.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from datetime import datetime

import orjson

from episodic_memory.core.base import SCHEMA_VERSION
from episodic_memory.core.models import Episode, ExecutionStep
from episodic_memory.core.patterns import Heuristic, Pattern
from episodic_memory.core.ranking import tool_path
from episodic_memory.core.text import STOPWORDS
from episodic_memory.storage.base import EpisodeQuery, StoredEmbedding

__all__ = [
    "MAX_FTS_TERMS",
    "Params",
    "Statement",
    "Value",
    "count_rows",
    "delete_episodes",
    "episode_versions_page",
    "episodes_page",
    "fts_any_of",
    "fts_match_expression",
    "insert_step",
    "keyword_search",
    "list_episodes",
    "load_heuristics",
    "load_patterns",
    "mark_learned",
    "marks",
    "select_embeddings_page",
    "select_episodes",
    "select_steps",
    "unlearned_episode_ids",
    "upsert_embedding",
    "upsert_episode",
    "upsert_heuristic",
    "upsert_pattern",
]

Value = None | int | float | str | bytes
Params = tuple[Value, ...]
Statement = tuple[str, Params]

MAX_FTS_TERMS = 32
"""Words kept from a keyword query: bounds the cost of a pasted wall of text."""

_EPISODE_COLUMNS = (
    "episode_id",
    "task_type",
    "domain",
    "language",
    "agent_id",
    "status",
    "verdict",
    "reward_total",
    "started_at",
    "completed_at",
    "revision",
    "schema_version",
    "data",
)
# Derived from the steps when a completed episode is written with them; a later write without
# steps (NULL) keeps what is stored.
_DERIVED_COLUMNS = ("tool_path", "recovered")
_EPISODE_UPSERT = (
    f"INSERT INTO episodes ({', '.join(_EPISODE_COLUMNS + _DERIVED_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in _EPISODE_COLUMNS + _DERIVED_COLUMNS)}) "
    "ON CONFLICT (episode_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _EPISODE_COLUMNS[1:])
    + "".join(f", {c} = coalesce(excluded.{c}, {c})" for c in _DERIVED_COLUMNS)
)
_FTS_DELETE = (
    "DELETE FROM episodes_fts WHERE rowid = (SELECT seq FROM episodes WHERE episode_id = ?)"
)
_FTS_INSERT_HEADER = (
    "INSERT INTO episodes_fts (rowid, episode_id, domain, description, steps_text) "
    "SELECT seq, episode_id, domain, ?, '' FROM episodes WHERE episode_id = ?"
)
# On completion the steps' text comes from the steps table itself (the truth), in one statement.
_STEP_TEXT = (
    "tool || ' ' || coalesce(json_extract(data, '$.action'), '') || ' ' || "
    "coalesce(json_extract(data, '$.observation'), '') || ' ' || "
    "coalesce(json_extract(data, '$.error'), '')"
)
_FTS_INSERT_COMPLETED = (
    "INSERT INTO episodes_fts (rowid, episode_id, domain, description, steps_text) "
    "SELECT seq, episode_id, domain, ?, coalesce((SELECT group_concat(t, ' ') FROM "
    f"(SELECT {_STEP_TEXT} AS t FROM steps WHERE episode_id = ? ORDER BY step_number)), '') "
    "FROM episodes WHERE episode_id = ?"
)
_STEP_INSERT = (
    "INSERT OR IGNORE INTO steps "
    "(episode_id, step_number, tool, success, timestamp, schema_version, data) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_PATTERN_COLUMNS = (
    "pattern_id",
    "kind",
    "domain",
    "confidence",
    "occurrences",
    "updated_at",
    "schema_version",
    "data",
)
_HEURISTIC_COLUMNS = (
    "heuristic_id",
    "domain",
    "confidence",
    "evidence_count",
    "updated_at",
    "schema_version",
    "data",
)
_EMBEDDING_COLUMNS = ("episode_id", "model", "dim", "vector")


def _upsert(table: str, columns: tuple[str, ...]) -> str:
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) "
        f"VALUES ({', '.join('?' for _ in columns)}) "
        f"ON CONFLICT ({columns[0]}) DO UPDATE SET "
        + ", ".join(f"{c} = excluded.{c}" for c in columns[1:])
    )


_PATTERN_UPSERT = _upsert("patterns", _PATTERN_COLUMNS)
_HEURISTIC_UPSERT = _upsert("heuristics", _HEURISTIC_COLUMNS)
_EMBEDDING_UPSERT = _upsert("embeddings", _EMBEDDING_COLUMNS)


def _epoch(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def marks(count: int) -> str:
    """``?, ?, …`` for an ``IN (...)`` list of ``count`` bound values."""
    return ", ".join("?" for _ in range(count))


# --- writes ----------------------------------------------------------------------------


def _derived(episode: Episode) -> tuple[str | None, int | None]:
    """``(tool_path JSON, recovered)`` of a completed episode written with its steps."""
    if episode.status != "completed" or not episode.steps:
        return None, None
    tools, recovered = tool_path([(s.tool, s.success) for s in episode.steps])
    return orjson.dumps(tools).decode(), int(recovered)


def upsert_episode(episode: Episode) -> list[Statement]:
    """Header upsert plus its full-text row (steps' text only once the episode is completed)."""
    data = episode.model_dump_json(exclude={"steps"})
    header: Params = (
        episode.episode_id,
        episode.task_type,
        episode.context.domain,
        episode.context.language,
        episode.agent_id,
        episode.status,
        episode.verdict,
        episode.reward.total if episode.reward else None,
        episode.started_at.timestamp(),
        _epoch(episode.completed_at),
        episode.revision,
        episode.schema_version,
        data,
        *_derived(episode),
    )
    eid = episode.episode_id
    fts: Statement
    if episode.status == "completed":
        fts = (_FTS_INSERT_COMPLETED, (episode.task_description, eid, eid))
    else:
        fts = (_FTS_INSERT_HEADER, (episode.task_description, eid))
    return [(_EPISODE_UPSERT, header), (_FTS_DELETE, (eid,)), fts]


def insert_step(episode_id: str, step: ExecutionStep) -> Statement:
    """Idempotent append; the caller guarantees ``step.step_number`` is set."""
    return (
        _STEP_INSERT,
        (
            episode_id,
            step.step_number,
            step.tool,
            int(step.success),
            step.timestamp.timestamp(),
            SCHEMA_VERSION,
            step.model_dump_json(),
        ),
    )


def upsert_pattern(pattern: Pattern) -> Statement:
    return (
        _PATTERN_UPSERT,
        (
            pattern.pattern_id,
            pattern.kind,
            pattern.domain,
            pattern.confidence,
            pattern.occurrences,
            pattern.last_seen.timestamp(),
            pattern.schema_version,
            pattern.model_dump_json(),
        ),
    )


def upsert_heuristic(heuristic: Heuristic) -> Statement:
    return (
        _HEURISTIC_UPSERT,
        (
            heuristic.heuristic_id,
            heuristic.domain,
            heuristic.confidence,
            heuristic.evidence_count,
            heuristic.updated_at.timestamp(),
            heuristic.schema_version,
            heuristic.model_dump_json(),
        ),
    )


def upsert_embedding(embedding: StoredEmbedding) -> Statement:
    return (
        _EMBEDDING_UPSERT,
        (embedding.episode_id, embedding.model, embedding.dim, bytes(embedding.vector)),
    )


def mark_learned(episode_ids: Sequence[str], learned_at: float) -> Statement:
    return (
        f"UPDATE episodes SET learned_at = ? WHERE episode_id IN ({marks(len(episode_ids))})",
        (learned_at, *episode_ids),
    )


def learned_among(episode_ids: Sequence[str]) -> Statement:
    """Which of these episodes learning has already absorbed (the durable double-count guard)."""
    return (
        "SELECT episode_id FROM episodes WHERE learned_at IS NOT NULL "
        f"AND episode_id IN ({marks(len(episode_ids))})",
        tuple(episode_ids),
    )


def delete_episodes(episode_ids: Sequence[str]) -> list[Statement]:
    """Everything stored for these episodes; the last statement's row count is the answer."""
    in_ids = marks(len(episode_ids))
    ids: Params = tuple(episode_ids)
    return [
        (
            "DELETE FROM episodes_fts WHERE rowid IN "
            f"(SELECT seq FROM episodes WHERE episode_id IN ({in_ids}))",
            ids,
        ),
        (f"DELETE FROM steps WHERE episode_id IN ({in_ids})", ids),
        (f"DELETE FROM embeddings WHERE episode_id IN ({in_ids})", ids),
        (f"DELETE FROM episodes WHERE episode_id IN ({in_ids})", ids),
    ]


# --- reads -----------------------------------------------------------------------------


def select_episodes(episode_ids: Sequence[str]) -> Statement:
    """``(episode_id, data)`` of the headers; order is restored by the caller."""
    return (
        f"SELECT episode_id, data FROM episodes WHERE episode_id IN ({marks(len(episode_ids))})",
        tuple(episode_ids),
    )


def select_steps(episode_ids: Sequence[str]) -> Statement:
    """``(episode_id, data)`` of the steps, ordered by step_number within each episode."""
    return (
        f"SELECT episode_id, data FROM steps WHERE episode_id IN ({marks(len(episode_ids))}) "
        "ORDER BY episode_id, step_number",
        tuple(episode_ids),
    )


def list_episodes(query: EpisodeQuery) -> Statement:
    """``(episode_id, data)`` newest first; every filter is an indexed column."""
    clauses: list[str] = []
    params: list[Value] = []
    for column, value in (
        ("domain", query.domain),
        ("task_type", query.task_type),
        ("verdict", query.verdict),
        ("status", query.status),
    ):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    if query.started_after is not None:
        clauses.append("started_at >= ?")
        params.append(query.started_after.timestamp())
    if query.started_before is not None:
        clauses.append("started_at < ?")
        params.append(query.started_before.timestamp())
    where = f"WHERE {' AND '.join(clauses)} " if clauses else ""
    # Ties on started_at go by seq ascending: that is the order the (…, started_at DESC)
    # indexes already hold (rowid ascending within a key), so no sort step is needed.
    sql = (
        f"SELECT episode_id, data FROM episodes {where}"
        "ORDER BY started_at DESC, seq LIMIT ? OFFSET ?"
    )
    return sql, (*params, query.limit, query.offset)


def episodes_page(after: tuple[float, int] | None, limit: int) -> Statement:
    """``(started_at, seq, episode_id, data)`` oldest first, keyset-paged on (started_at, seq)."""
    if after is None:
        return (
            "SELECT started_at, seq, episode_id, data FROM episodes "
            "ORDER BY started_at, seq LIMIT ?",
            (limit,),
        )
    return (
        "SELECT started_at, seq, episode_id, data FROM episodes "
        "WHERE (started_at, seq) > (?, ?) ORDER BY started_at, seq LIMIT ?",
        (after[0], after[1], limit),
    )


def episode_versions_page(after: str, limit: int) -> Statement:
    """``(episode_id, revision)`` of completed episodes, keyset-paged on episode_id."""
    # `+status` keeps the planner on the episode_id index: walking the status index instead
    # would sort every completed episode again for each page.
    return (
        "SELECT episode_id, revision FROM episodes WHERE +status = 'completed' "
        "AND episode_id > ? ORDER BY episode_id LIMIT ?",
        (after, limit),
    )


def unlearned_episode_ids(limit: int) -> Statement:
    """Completed episodes not learned yet, oldest first, from their partial index (0003):
    named, because without statistics SQLite picks (status, learned_at) and sorts them all."""
    return (
        "SELECT episode_id FROM episodes INDEXED BY episodes_unlearned "
        "WHERE status = 'completed' AND learned_at IS NULL ORDER BY completed_at, seq LIMIT ?",
        (limit,),
    )


def select_embeddings_page(model: str, after: str, limit: int) -> Statement:
    return (
        "SELECT episode_id, model, dim, vector FROM embeddings "
        "WHERE model = ? AND episode_id > ? ORDER BY episode_id LIMIT ?",
        (model, after, limit),
    )


def _domain_limit(table: str, order: str, domain: str | None, limit: int | None) -> Statement:
    where = "WHERE domain = ? " if domain is not None else ""
    params: Params = (domain,) if domain is not None else ()
    return (
        f"SELECT data FROM {table} {where}ORDER BY {order} LIMIT ?",
        (*params, -1 if limit is None else limit),
    )


def load_patterns(domain: str | None, limit: int | None) -> Statement:
    """``(data,)`` most confident first; the JSON's ``kind`` picks the class."""
    return _domain_limit("patterns", "confidence DESC, occurrences DESC, pattern_id", domain, limit)


def load_heuristics(domain: str | None, limit: int | None) -> Statement:
    return _domain_limit(
        "heuristics", "confidence DESC, evidence_count DESC, heuristic_id", domain, limit
    )


def count_rows() -> Statement:
    tables = ("episodes", "steps", "patterns", "heuristics", "embeddings")
    return (
        "SELECT " + ", ".join(f"(SELECT count(*) FROM {t}) AS {t}" for t in tables),
        (),
    )


# --- full text -------------------------------------------------------------------------

_WORD = re.compile(r"\w+")


def fts_match_expression(text: str, max_terms: int = MAX_FTS_TERMS) -> str | None:
    """User text → an FTS5 query that can only ever mean "any of these words".

    Words are taken with a unicode-aware tokenizer, each is double-quoted (a quoted string is
    a literal in FTS5: no column filters, NEAR, ``*``, AND/NOT, parentheses) and they are OR-ed
    so BM25 ranks by how many and how rare the shared words are. ``None`` when no word is left.
    Repeats (case-insensitive) and, when other words remain, English stopwords are dropped.
    """
    unique: dict[str, str] = {}
    for word in _WORD.findall(unicodedata.normalize("NFKC", text)):
        unique.setdefault(word.casefold(), word)
    # English stopwords match nearly every row, so BM25 must score almost the whole table for
    # them while they barely move the ranking: drop them, unless nothing else is left.
    words = [w for key, w in unique.items() if key not in STOPWORDS] or list(unique.values())
    return fts_any_of(words[:max_terms]) if words else None


def fts_any_of(words: Sequence[str]) -> str:
    """An FTS5 query matching any of ``words``, each double-quoted: a literal, never syntax."""
    return " OR ".join('"' + word.replace('"', '""') + '"' for word in words)


_BM25 = "bm25(episodes_fts, 0.0, 0.0, 2.0, 1.0)"  # description weighs twice the steps' text


def keyword_search(
    text: str,
    domain: str | None,
    limit: int,
    match: str | None = None,
    *,
    ranked_first: int | None = None,
) -> Statement | None:
    """``(episode_id, score)`` of completed episodes, best first; ``None`` for no words.

    ``match``: an FTS5 expression already built from ``text`` (``storage/keyword_plan.py``).
    ``ranked_first``: rank on the full-text index alone and read the episode rows (status,
    domain) of only that many best hits. Each row read is a random read of the episodes table,
    ~20 µs warm and far more cold; a large memory bounds them, at the price of missing a
    domain's hits ranked below that many of other domains or still running.
    """
    match = match if match is not None else fts_match_expression(text)
    if match is None:
        return None
    domain_clause = "AND e.domain = ? " if domain is not None else ""
    if ranked_first is not None:
        params: Params = (match, ranked_first, *([domain] if domain is not None else []), limit)
        sql = (
            "SELECT e.episode_id, -hit.rank AS score FROM ("
            f"SELECT rowid, {_BM25} AS rank FROM episodes_fts WHERE episodes_fts MATCH ? "
            "ORDER BY rank LIMIT ?) AS hit "
            "JOIN episodes AS e ON e.seq = hit.rowid "
            f"WHERE e.status = 'completed' {domain_clause}ORDER BY hit.rank LIMIT ?"
        )
        return sql, params
    params = (match, domain, limit) if domain is not None else (match, limit)
    sql = (
        f"SELECT e.episode_id, -{_BM25} AS score FROM episodes_fts "
        "JOIN episodes AS e ON e.seq = episodes_fts.rowid "
        f"WHERE episodes_fts MATCH ? AND e.status = 'completed' {domain_clause}"
        f"ORDER BY {_BM25} LIMIT ?"
    )
    return sql, params
