"""Ranking-shaped reads: retrieval candidates as single rows, never whole episodes.

Retrieval looks at a few hundred candidates per query and ranks them on a handful of header
facts (``core.ranking.Candidate``). Loading each as a validated ``Episode`` with every step
cost most of a query (measured: ~120 episodes, ~20 ms of JSON and validation per query at 10k
episodes), so candidates come straight from indexed columns plus two values derived at seal
time (``tool_path``, ``recovered``; migration 0002). Rows sealed before that migration carry
NULL there and are derived from the steps table instead: the same answer, one extra read.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import orjson

from episodic_memory.core.models import Verdict
from episodic_memory.core.ranking import Candidate, tool_path
from episodic_memory.errors import StorageError
from episodic_memory.storage.sql import Params, Statement, Value, marks

__all__ = [
    "candidate_rows",
    "metadata_candidate_ids",
    "parse_candidates",
    "step_outcomes",
]

_VERDICTS: dict[str, Verdict] = {"success": "success", "partial": "partial", "failure": "failure"}

_CANDIDATE_SELECT = (
    "SELECT episode_id, json_extract(data, '$.task_description'), domain, started_at, "
    "language, json_extract(data, '$.context.tags'), task_type, verdict, reward_total, "
    "tool_path, recovered FROM episodes"
)


# ``+status`` keeps SQLite off the (status, learned_at) index: with a plain ``status = ?`` the
# planner walked every completed episode instead of looking the ids up (12 ms vs 0.7 ms for
# 150 ids at 10k episodes), and, in the metadata tiers, instead of the (…, started_at) indexes.
_COMPLETED = "+status = 'completed'"


def candidate_rows(episode_ids: Sequence[str]) -> Statement:
    """Candidate columns of the completed episodes among ``episode_ids`` (any order)."""
    return (
        f"{_CANDIDATE_SELECT} WHERE episode_id IN ({marks(len(episode_ids))}) AND {_COMPLETED}",
        tuple(episode_ids),
    )


def step_outcomes(episode_ids: Sequence[str]) -> Statement:
    """``(episode_id, tool, success)`` per step in order: the fallback for pre-0002 rows."""
    return (
        f"SELECT episode_id, tool, success FROM steps WHERE episode_id IN "
        f"({marks(len(episode_ids))}) ORDER BY episode_id, step_number",
        tuple(episode_ids),
    )


def metadata_candidate_ids(
    domain: str | None, task_type: str | None, limit: int
) -> list[Statement]:
    """Latest completed episodes, most specific first: same type and domain, type, domain.

    One statement per tier, each walking a ``(…, started_at DESC)`` index for ``limit`` rows;
    the caller keeps the first ``limit`` distinct ids in tier order. No tier: latest overall.
    """
    tiers: list[tuple[str, Params]] = []
    if domain and task_type:
        tiers.append(("task_type = ? AND domain = ?", (task_type, domain)))
    if task_type:
        tiers.append(("task_type = ?", (task_type,)))
    if domain:
        tiers.append(("domain = ?", (domain,)))
    if not tiers:
        tiers.append(("1 = 1", ()))
    return [
        (
            f"SELECT episode_id FROM episodes WHERE {where} AND {_COMPLETED} "
            "ORDER BY started_at DESC, seq LIMIT ?",
            (*params, limit),
        )
        for where, params in tiers
    ]


def _text(value: Value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _optional_text(value: Value) -> str | None:
    return None if value is None else _text(value)


def _tags(value: Value) -> frozenset[str]:
    if value is None:
        return frozenset()
    tags = orjson.loads(_text(value))
    return frozenset(str(tag).lower() for tag in tags) if isinstance(tags, list) else frozenset()


def parse_candidates(
    rows: Sequence[Sequence[Value]], steps: dict[str, list[tuple[str, bool]]]
) -> dict[str, Candidate]:
    """Rows of ``candidate_rows`` → candidates; ``steps`` serves rows without a stored path."""
    found: dict[str, Candidate] = {}
    for row in rows:
        (eid, description, domain, started, language, tags, task_type, verdict, reward) = row[:9]
        path, recovered = row[9], row[10]
        episode_id = _text(eid)
        try:
            if path is None:
                tools, was_recovered = tool_path(steps.get(episode_id, []))
            else:
                tools, was_recovered = tuple(orjson.loads(_text(path))), bool(recovered)
            found[episode_id] = Candidate(
                episode_id=episode_id,
                description=_text(description) if description is not None else "",
                domain=_text(domain),
                started_at=datetime.fromtimestamp(float(_text(started)), UTC),
                language=_optional_text(language),
                tags=_tags(tags),
                task_type=_optional_text(task_type),
                verdict=_VERDICTS.get(_text(verdict)) if verdict is not None else None,
                reward=float(_text(reward)) if reward is not None else None,
                tools=tools,
                recovered=was_recovered,
            )
        except (ValueError, TypeError, orjson.JSONDecodeError) as exc:
            raise StorageError(
                f"stored episode {episode_id!r} has an unreadable header ({exc}): restore it "
                "from a backup or delete it"
            ) from exc
    return found
