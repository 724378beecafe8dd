"""Reward: one number in [0, 1] per completed episode, with every component kept.

Retrieval ranks past episodes partly by reward and learning weighs evidence by it, so the score
must be deterministic (same episode → same score, on any node) and explain itself. The formula::

    O  outcome     success 1.0 · partial 0.2 + 0.4·done/(done+failed) (0.4 when unknown)
                   · abstained 0.1 · failure 0.0
    T  time eff.   B / (B + Σ latency_ms)          B = time budget of the complexity
    S  step eff.   min(1, E / n_steps)             E = expected steps of the complexity (1 if n = 0)
    F  efficiency  (T + S) / 2
    C  complexity  O · {simple 0, moderate 0.05, complex 0.1}
    P  penalty     0.3 · failed_steps / n_steps
    R  recovery    0.15 · recovered_failures / n_steps

    total = clamp(O · (0.6 + 0.3·F) + C + R − P, 0, 1)

Why these weights:
- The outcome dominates (0.6 of 0.9 before bonuses): before error penalties, any success
  outranks any partial result and any partial result outranks an abstention, however slow,
  because what an agent most needs to copy is what *worked*. A failure scores 0: nothing in
  it should be imitated.
- Efficiency only scales the outcome (0.3): a fast failure is not a good episode.
- The complexity bonus (≤ 0.1) keeps hard successes from looking worse than easy ones just
  because they took more steps; it scales with the outcome so it never rewards failing at hard
  work.
- The error penalty (0.3 at a 100 % error rate) is larger than the recovery refund (0.15 per
  recovered failure), so a recovered failure still costs half of an unrecovered one: fewer
  errors always score higher, yet recovering is always better than not recovering.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from episodic_memory.core.models import Complexity, Episode, ExecutionStep, RewardScore, Verdict
from episodic_memory.errors import ValidationError

__all__ = [
    "EXPECTED_STEPS",
    "TIME_BUDGET_MS",
    "Recovery",
    "compute_reward",
    "find_recoveries",
    "outcome_value",
    "related_tools",
]

OUTCOME_VALUE: dict[Verdict, float] = {
    "success": 1.0,
    "abstained": 0.1,  # declining honestly beats a wrong answer, but is far from done
    "failure": 0.0,
}
PARTIAL_BASE = 0.2
PARTIAL_SPAN = 0.4  # partial ∈ [0.2, 0.6]: above abstention, below any success
PARTIAL_UNKNOWN_FRACTION = 0.5

EXPECTED_STEPS: dict[Complexity, int] = {"simple": 3, "moderate": 8, "complex": 20}
"""Steps a competent agent needs; beyond this, step efficiency falls as E / n."""

TIME_BUDGET_MS: dict[Complexity, float] = {
    "simple": 10_000.0,
    "moderate": 60_000.0,
    "complex": 300_000.0,
}
"""Total tool latency at which time efficiency is 0.5; it halves again at three budgets."""

COMPLEXITY_BONUS: dict[Complexity, float] = {"simple": 0.0, "moderate": 0.05, "complex": 0.1}

OUTCOME_FLOOR = 0.6
EFFICIENCY_WEIGHT = 0.3
ERROR_PENALTY_WEIGHT = 0.3
RECOVERY_WEIGHT = 0.15  # half the penalty of the failure it recovers

_TOOL_WORDS = re.compile(r"[^a-z0-9]+")
_CAMEL = re.compile(r"([a-z0-9])([A-Z])")
# fmt: off
_GENERIC_VERBS = frozenset({
    "get", "set", "list", "run", "create", "update", "delete", "find", "fetch", "read", "write",
    "put", "post", "make", "do", "call", "check", "add", "remove", "execute", "exec", "apply",
    "send",
})
# fmt: on


@dataclass(frozen=True, slots=True)
class Recovery:
    """A failed step and the later successful step (same or related tool) that made up for it."""

    failed_index: int
    failed_tool: str
    error: str
    recovered_index: int
    recovered_tool: str


def _family(tool: str) -> str:
    """A tool's family: its first name word, or two when the first is a generic verb.

    ``search_web`` → ``search``; ``readFile`` → ``read_file`` and ``get_order_details`` →
    ``get_order``, because a bare generic verb (get, run, ...) would relate everything.
    """
    words = [w for w in _TOOL_WORDS.split(_CAMEL.sub(r"\1_\2", tool).lower()) if w]
    if not words:
        return ""
    if words[0] in _GENERIC_VERBS and len(words) > 1:
        return f"{words[0]}_{words[1]}"
    return words[0]


def related_tools(a: str, b: str) -> bool:
    """Same tool, or the same family by first name word (``search_web`` ~ ``search_docs``).

    Cheap and deterministic on purpose: agents name tools ``verb_object``, and retrying a
    failed call usually means the same verb on another object or backend.
    """
    if a == b:
        return True
    family = _family(a)
    return bool(family) and family == _family(b)


def find_recoveries(steps: list[ExecutionStep]) -> list[Recovery]:
    """Each failed step paired with the first later success of the same or a related tool.

    One backward pass remembering the next success per tool and per family, so a long episode
    of failures costs O(n), not O(n²).
    """
    next_by_tool: dict[str, int] = {}
    next_by_family: dict[str, int] = {}
    found: list[Recovery] = []
    for i in range(len(steps) - 1, -1, -1):
        step = steps[i]
        family = _family(step.tool)
        if step.success:
            next_by_tool[step.tool] = i
            if family:
                next_by_family[family] = i
            continue
        j = next_by_family.get(family) if family else next_by_tool.get(step.tool)
        if j is not None:
            found.append(Recovery(i, step.tool, step.error or "", j, steps[j].tool))
    found.reverse()
    return found


def outcome_value(episode: Episode) -> float:
    """The outcome component O of the formula (see the module docstring)."""
    outcome = episode.outcome
    if outcome is None:
        raise ValidationError(
            "Episode.outcome",
            "is missing; a reward needs to know how the task ended",
            "complete the episode with a TaskOutcome before computing its reward",
        )
    if outcome.verdict != "partial":
        return OUTCOME_VALUE[outcome.verdict]
    done, failed = len(outcome.completed), len(outcome.failed)
    fraction = done / (done + failed) if done + failed else PARTIAL_UNKNOWN_FRACTION
    return PARTIAL_BASE + PARTIAL_SPAN * fraction


def compute_reward(episode: Episode) -> RewardScore:
    """Score a finished episode; pure and deterministic. Raises ValidationError without outcome."""
    outcome = outcome_value(episode)
    complexity = episode.context.complexity
    steps = episode.steps
    n_steps = len(steps)

    total_latency_ms = sum(step.latency_ms for step in steps)
    budget_ms = TIME_BUDGET_MS[complexity]
    time_efficiency = budget_ms / (budget_ms + total_latency_ms)
    step_efficiency = min(1.0, EXPECTED_STEPS[complexity] / n_steps) if n_steps else 1.0
    efficiency = (time_efficiency + step_efficiency) / 2.0

    complexity_bonus = outcome * COMPLEXITY_BONUS[complexity]
    failed_steps = sum(1 for step in steps if not step.success)
    error_penalty = ERROR_PENALTY_WEIGHT * failed_steps / n_steps if n_steps else 0.0
    recovered = len(find_recoveries(steps)) if failed_steps else 0
    recovery_bonus = RECOVERY_WEIGHT * recovered / n_steps if n_steps else 0.0

    raw = (
        outcome * (OUTCOME_FLOOR + EFFICIENCY_WEIGHT * efficiency)
        + complexity_bonus
        + recovery_bonus
        - error_penalty
    )
    return RewardScore(
        total=min(1.0, max(0.0, raw)),
        outcome=outcome,
        efficiency=efficiency,
        time_efficiency=time_efficiency,
        step_efficiency=step_efficiency,
        complexity_bonus=complexity_bonus,
        error_penalty=error_penalty,
        recovery_bonus=recovery_bonus,
    )
