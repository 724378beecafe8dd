"""Learning across episodes: heuristic evidence, and the batch entry point the learner runs.

``learn(episodes)`` extracts pattern occurrences (``core.extract``) and heuristic evidence
(here) from every completed episode of a batch and pre-merges them (``core.merge``), so the
storage side folds one record per pattern into its tables instead of one per episode.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from itertools import pairwise
from typing import Literal

from pydantic import Field

from episodic_memory.core.base import Record, utc_now
from episodic_memory.core.extract import (
    episode_succeeded,
    evidence_time,
    extract_patterns,
    find_recoveries,
    normalize_error,
    tool_runs,
)
from episodic_memory.core.merge import confidence_at, merge_heuristics, merge_patterns
from episodic_memory.core.models import Episode
from episodic_memory.core.patterns import Heuristic, Pattern, stable_id

__all__ = [
    "LearningDelta",
    "confidence_at",
    "episode_succeeded",
    "extract_heuristic_evidence",
    "extract_patterns",
    "learn",
    "merge_heuristics",
    "merge_patterns",
    "normalize_error",
]

Trigger = Literal["task_start", "after_tool", "after_error", "context"]


class LearningDelta(Record):
    """What one learning batch found: pre-merged records to fold into storage.

    ``episode_ids`` lists every completed episode the batch covered (also those that yielded
    nothing), so storage can mark them all learned in the same transaction.
    """

    episode_ids: list[str] = Field(default_factory=list)
    patterns: list[Pattern] = Field(default_factory=list)
    heuristics: list[Heuristic] = Field(default_factory=list)


def _evidence(
    episode: Episode,
    trigger: Trigger,
    parts: Sequence[str],
    condition: str,
    action: str,
    tool: str,
    success: bool,
) -> Heuristic:
    domain = episode.context.domain
    when = evidence_time(episode)
    return Heuristic(
        heuristic_id=stable_id("heuristic", trigger, domain, *parts),
        condition=condition,
        action=action,
        domain=domain,
        trigger=trigger,
        tool=tool,
        evidence_count=1,
        success_count=int(success),
        episode_ids=[episode.episode_id],
        created_at=when,
        updated_at=when,
        last_evidence_at=when,
        weighted_evidence=1.0,
        weighted_successes=float(success),
    )


def extract_heuristic_evidence(episode: Episode) -> list[Heuristic]:
    """One piece of evidence per condition → action rule the episode exhibits.

    Task-start rules key on the episode's ``task_type`` (set by the task classifier): a single
    episode cannot tell which of its words are salient, so term-level conditions are learned
    across episodes by ``core.tool_predictor`` instead. A rule seen twice in one episode counts
    once, and as a success only if every instance was one.
    """
    if episode.outcome is None or not episode.steps:
        return []
    ok = episode_succeeded(episode)
    runs = tool_runs(episode.steps)
    domain, task_type = episode.context.domain, episode.task_type
    first = runs[0]
    found = [
        _evidence(
            episode,
            "task_start",
            [task_type, first.tool],
            f"for {task_type} tasks in domain {domain}",
            f"start with {first.tool}",
            first.tool,
            ok and first.success,
        )
    ]
    for before, after in pairwise(runs):
        found.append(
            _evidence(
                episode,
                "after_tool",
                [before.tool, after.tool],
                f"in domain {domain}, after {before.tool}",
                f"use {after.tool} next",
                after.tool,
                ok and after.success,
            )
        )
    for rec in find_recoveries(episode, ok):
        found.append(
            _evidence(
                episode,
                "after_error",
                [rec.failed_tool, rec.signature, ">".join(rec.tools)],
                f"in domain {domain}, when {rec.failed_tool} fails with '{rec.signature}'",
                "recover with " + " then ".join(rec.tools),
                rec.tools[0],
                rec.worked,
            )
        )
    ctx = episode.context
    setting = [f"language is {ctx.language}"] if ctx.language else []
    setting += [f"framework is {ctx.framework}"] if ctx.framework else []
    if setting:
        for tool in sorted({run.tool for run in runs}):
            last = [run for run in runs if run.tool == tool][-1]
            found.append(
                _evidence(
                    episode,
                    "context",
                    [ctx.language or "", ctx.framework or "", tool],
                    f"in domain {domain}, when " + " and ".join(setting),
                    f"use {tool}",
                    tool,
                    ok and last.success,
                )
            )
    unique: dict[str, Heuristic] = {}
    for heuristic in found:
        seen = unique.get(heuristic.heuristic_id)
        if seen is None or heuristic.success_count < seen.success_count:
            unique[heuristic.heuristic_id] = heuristic
    return list(unique.values())


def learn(episodes: Sequence[Episode], now: datetime | None = None) -> LearningDelta:
    """Extract from every completed episode and pre-merge within the batch.

    Active episodes are skipped and not listed: they are learned once completed.
    """
    now = now or utc_now()
    completed = [episode for episode in episodes if episode.outcome is not None]
    patterns = merge_patterns({}, [p for e in completed for p in extract_patterns(e)], now)
    heuristics = merge_heuristics(
        {}, [h for e in completed for h in extract_heuristic_evidence(e)], now
    )
    return LearningDelta(
        episode_ids=list(dict.fromkeys(e.episode_id for e in completed)),
        patterns=patterns,
        heuristics=heuristics,
    )
