"""Pattern occurrences from one completed episode, and the episode views learners share.

``extract_patterns`` returns *occurrences*: records with ``occurrences == 1`` that
``core.merge`` folds into the stored records. Extraction is pure and deterministic (times
come from the episode, never the clock), so re-learning an episode yields identical records.

What counts as success: ``success`` does; ``partial`` does only when the episode's reward is at
least ``PARTIAL_SUCCESS_REWARD`` — a partial that earned a good reward did most of the work and
its patterns deserve credit, while one that scraped by should not lift confidence. Without a
reward a partial is not a success. ``failure`` and ``abstained`` never are.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from episodic_memory.core.models import Episode, ExecutionStep
from episodic_memory.core.patterns import (
    ContextPattern,
    DecisionPoint,
    ErrorRecovery,
    Pattern,
    ToolSequence,
    stable_id,
)

__all__ = [
    "DECISION_WINDOW",
    "MAX_ERROR_SIGNATURE_CHARS",
    "MAX_SEQUENCE_TOOLS",
    "PARTIAL_SUCCESS_REWARD",
    "RECOVERY_WINDOW",
    "Recovery",
    "Run",
    "collapse",
    "episode_succeeded",
    "evidence_time",
    "extract_patterns",
    "find_recoveries",
    "normalize_error",
    "tool_runs",
]

PARTIAL_SUCCESS_REWARD = 0.6
DECISION_WINDOW = 1
"""Tools of context before a decision. One (a Markov step) keeps evidence from splitting too
thin to learn from at tens to hundreds of episodes per domain."""
RECOVERY_WINDOW = 4
"""Steps after a failure searched for what fixed it; later work is unrelated to the error."""
MAX_SEQUENCE_TOOLS = 50
"""A tool sequence keys on at most this many (collapsed) leading tools."""
MAX_ERROR_SIGNATURE_CHARS = 80

_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"|`[^`]*`")
_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://\S+")
_PATH = re.compile(r"\S*(?:[\\/]|::)\S*|\b[\w.\-]+\.(?:py|js|ts|go|rs|java|rb|json|ya?ml|toml)\b")
_HEXLIKE = re.compile(r"\b0x[0-9a-f]+\b|\b[0-9a-f]{8,}\b|\b[0-9a-f-]{32,36}\b")
_ID_TOKEN = re.compile(r"[#@]?\b[\w-]*\d[\w-]*\b")
_NON_WORD = re.compile(r"[^a-z:_ ]+")
_SPACES = re.compile(r"\s+")


def episode_succeeded(episode: Episode) -> bool:
    """The success rule every learner shares (see the module docstring)."""
    if episode.verdict == "success":
        return True
    if episode.verdict == "partial" and episode.reward is not None:
        return episode.reward.total >= PARTIAL_SUCCESS_REWARD
    return False


def normalize_error(text: str | None) -> str:
    """A stable signature for an error message: the same failure in another run maps here.

    Lowercased; quoted strings, URLs, paths, hex, numbers and ids stripped, so two runs that
    failed on different files or line numbers share one signature; truncated. Of a multi-line
    text (a traceback), the last line naming an error or exception is kept, else the first.
    """
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    if not lines:
        return "unknown error"
    named = [line for line in lines if "error" in line.lower() or "exception" in line.lower()]
    line = (named[-1] if named else lines[0]).lower()
    for pattern in (_QUOTED, _URL, _PATH, _HEXLIKE, _ID_TOKEN):
        line = pattern.sub(" ", line)
    line = _SPACES.sub(" ", _NON_WORD.sub(" ", line)).strip(" :_")
    return line[:MAX_ERROR_SIGNATURE_CHARS].rstrip() or "unknown error"


def collapse(tools: Sequence[str]) -> list[str]:
    """Consecutive repeats collapsed: a retry or a loop over items is one decision."""
    out: list[str] = []
    for tool in tools:
        if not out or out[-1] != tool:
            out.append(tool)
    return out


@dataclass(frozen=True)
class Run:
    """Consecutive steps of one tool; it succeeded if its last attempt did."""

    tool: str
    success: bool
    latency_ms: float
    tokens: int


def tool_runs(steps: Sequence[ExecutionStep]) -> list[Run]:
    runs: list[Run] = []
    for step in steps:
        if runs and runs[-1].tool == step.tool:
            last = runs[-1]
            runs[-1] = Run(
                step.tool,
                step.success,
                last.latency_ms + step.latency_ms,
                last.tokens + step.tokens,
            )
        else:
            runs.append(Run(step.tool, step.success, step.latency_ms, step.tokens))
    return runs


def evidence_time(episode: Episode) -> datetime:
    return episode.completed_at or episode.started_at


def _common(episode: Episode, kind: str, parts: Sequence[str]) -> dict[str, Any]:
    domain = episode.context.domain
    when = evidence_time(episode)
    return {
        "pattern_id": stable_id(kind, domain, *parts),
        "key": "|".join([kind, domain, *parts]),
        "domain": domain,
        "task_type": episode.task_type,
        "occurrences": 1,
        "episode_ids": [episode.episode_id],
        "first_seen": when,
        "last_seen": when,
        "weighted_occurrences": 1.0,
    }


def _outcome(success: bool, latency_ms: float, tokens: int) -> dict[str, Any]:
    return {
        "successes": int(success),
        "weighted_successes": float(success),
        "total_latency_ms": latency_ms,
        "total_tokens": tokens,
    }


@dataclass(frozen=True)
class Recovery:
    failed_tool: str
    signature: str
    tools: tuple[str, ...]
    worked: bool
    latency_ms: float
    tokens: int


def find_recoveries(episode: Episode, succeeded: bool) -> list[Recovery]:
    """For each failing step: the successful steps that followed until the work went through.

    A later success of the same tool within ``RECOVERY_WINDOW`` steps is a recovery that worked
    (the steps in between are the fix). Otherwise, the successful steps that followed up to the
    next failure are an alternative route, which worked only if the episode succeeded.
    """
    steps = episode.steps
    found: list[Recovery] = []
    for index, step in enumerate(steps):
        if step.success:
            continue
        window = steps[index + 1 : index + 1 + RECOVERY_WINDOW]
        retry = next(
            (n for n, later in enumerate(window) if later.tool == step.tool and later.success),
            None,
        )
        if retry is not None:
            fix = [later for later in window[: retry + 1] if later.success]
            worked = True
        else:
            fix = []
            for later in window:
                if not later.success:
                    break
                fix.append(later)
            worked = succeeded
        if not fix:
            continue
        found.append(
            Recovery(
                failed_tool=step.tool,
                signature=normalize_error(step.error or step.observation),
                tools=tuple(collapse([s.tool for s in fix])),
                worked=worked,
                latency_ms=step.latency_ms + sum(s.latency_ms for s in fix),
                tokens=step.tokens + sum(s.tokens for s in fix),
            )
        )
    return found


def _context_features(episode: Episode) -> dict[str, str]:
    ctx = episode.context
    features = {"domain": ctx.domain}
    if ctx.language:
        features["language"] = ctx.language
    if ctx.framework:
        features["framework"] = ctx.framework
    if ctx.tags:
        features["tags"] = ",".join(sorted(set(ctx.tags)))
    return features


def _one_per_pattern(found: Sequence[Pattern]) -> list[Pattern]:
    """One occurrence per pattern and episode: instances sum costs, succeed only if all did."""
    merged: dict[str, Pattern] = {}
    for pattern in found:
        seen = merged.get(pattern.pattern_id)
        if seen is None:
            merged[pattern.pattern_id] = pattern
            continue
        successes = min(seen.successes, pattern.successes)
        merged[pattern.pattern_id] = seen.model_copy(
            update={
                "successes": successes,
                "weighted_successes": float(successes),
                "total_latency_ms": seen.total_latency_ms + pattern.total_latency_ms,
                "total_tokens": seen.total_tokens + pattern.total_tokens,
            }
        )
    return list(merged.values())


def extract_patterns(episode: Episode) -> list[Pattern]:
    """Occurrences of all four pattern kinds in a completed episode ([] if not completed)."""
    if episode.outcome is None or not episode.steps:
        return []
    ok = episode_succeeded(episode)
    runs = tool_runs(episode.steps)
    tools = [run.tool for run in runs]
    latency = sum(s.latency_ms for s in episode.steps)
    tokens = sum(s.tokens for s in episode.steps)
    sequence = tools[:MAX_SEQUENCE_TOOLS]
    found: list[Pattern] = [
        ToolSequence(
            **_common(episode, "tool_sequence", [">".join(sequence)]),
            **_outcome(ok, latency, tokens),
            tools=sequence,
        )
    ]
    for index, run in enumerate(runs):
        after = tools[max(0, index - DECISION_WINDOW) : index]
        found.append(
            DecisionPoint(
                **_common(episode, "decision_point", [">".join(after), run.tool]),
                **_outcome(ok and run.success, run.latency_ms, run.tokens),
                after_tools=after,
                chosen_tool=run.tool,
            )
        )
    for rec in find_recoveries(episode, ok):
        parts = [rec.failed_tool, rec.signature, ">".join(rec.tools)]
        found.append(
            ErrorRecovery(
                **_common(episode, "error_recovery", parts),
                **_outcome(rec.worked, rec.latency_ms, rec.tokens),
                failed_tool=rec.failed_tool,
                error_signature=rec.signature,
                recovery_tools=list(rec.tools),
            )
        )
    features = _context_features(episode)
    feature_key = ";".join(f"{name}={value}" for name, value in sorted(features.items()))
    for run_tool in sorted(set(tools)):
        of_tool = [run for run in runs if run.tool == run_tool]
        found.append(
            ContextPattern(
                **_common(episode, "context_pattern", [feature_key, run_tool]),
                **_outcome(
                    ok and of_tool[-1].success,
                    sum(run.latency_ms for run in of_tool),
                    sum(run.tokens for run in of_tool),
                ),
                features=features,
                tools=[run_tool],
            )
        )
    return _one_per_pattern(found)
