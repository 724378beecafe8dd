"""Folding pattern and heuristic occurrences into the stored records, with bounded confidence.

Counts are running sums, so folding is associative: merging a batch at once, or one record at
a time, gives the same counts. Re-applying an episode is a no-op when its id is already in the
record's evidence (a learner retried after a crash). The evidence list is bounded to the
``MAX_EVIDENCE_IDS`` most recent ids, so this guard cannot see an episode that has aged out;
the storage-side ``learned_at`` marker (an episode is learned at most once) is the primary guard
and this one the second line. A pre-merged record whose ids only partly overlap the evidence is
applied whole: its per-episode shares cannot be told apart.

Confidence is the Wilson lower bound (z = 1.96) of the success rate over exponentially decayed
counts, with a half-life of ``CONFIDENCE_HALF_LIFE_DAYS``. Why decayed counts rather than a
penalty on time since the last success: one mechanism covers both ways a pattern goes stale.
A pattern that keeps occurring but stops succeeding sees its recent failures outweigh its old
successes, so its rate falls; a pattern nobody uses any more keeps its rate but loses effective
sample size, so the lower bound widens downwards. The lower bound of a rate is always < 1, and
counts are stored decayed to the newest evidence (``last_seen``), so nothing grows without
bound and re-merging is order-independent.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime

from episodic_memory.core.patterns import MAX_EVIDENCE_IDS, Heuristic, Pattern
from episodic_memory.errors import ValidationError

__all__ = [
    "CONFIDENCE_HALF_LIFE_DAYS",
    "WILSON_Z",
    "confidence_at",
    "decay_factor",
    "merge_heuristics",
    "merge_patterns",
    "wilson_lower_bound",
]

CONFIDENCE_HALF_LIFE_DAYS = 30.0
WILSON_Z = 1.96
_SECONDS_PER_DAY = 86_400.0


def wilson_lower_bound(successes: float, trials: float, z: float = WILSON_Z) -> float:
    """Lower end of the Wilson score interval of ``successes / trials``; 0 with no trials.

    Accepts fractional (decayed) counts. Few trials give a low bound however good the rate,
    which is why one lucky episode does not make a confident pattern.
    """
    if trials <= 0.0:
        return 0.0
    rate = min(max(successes / trials, 0.0), 1.0)
    z2 = z * z
    centre = rate + z2 / (2.0 * trials)
    margin = z * math.sqrt(rate * (1.0 - rate) / trials + z2 / (4.0 * trials * trials))
    return min(max((centre - margin) / (1.0 + z2 / trials), 0.0), 1.0)


def decay_factor(since: datetime, now: datetime, half_life_days: float) -> float:
    """Weight in (0, 1] of evidence from ``since`` seen at ``now``; a future ``since`` is 1."""
    elapsed_days = max((now - since).total_seconds(), 0.0) / _SECONDS_PER_DAY
    return float(0.5 ** (elapsed_days / half_life_days))


def _pattern_weights(pattern: Pattern) -> tuple[float, float]:
    """Decayed (occurrences, successes); older shapes without them start from the raw counts."""
    if pattern.weighted_occurrences == 0.0 and pattern.occurrences > 0:
        return float(pattern.occurrences), float(pattern.successes)
    return pattern.weighted_occurrences, pattern.weighted_successes


def _heuristic_weights(heuristic: Heuristic) -> tuple[float, float]:
    if heuristic.weighted_evidence == 0.0 and heuristic.evidence_count > 0:
        return float(heuristic.evidence_count), float(heuristic.success_count)
    return heuristic.weighted_evidence, heuristic.weighted_successes


def _heuristic_reference(heuristic: Heuristic) -> datetime:
    return heuristic.last_evidence_at or heuristic.updated_at


def confidence_at(
    record: Pattern | Heuristic,
    now: datetime,
    half_life_days: float = CONFIDENCE_HALF_LIFE_DAYS,
) -> float:
    """The record's confidence as of ``now`` (stored ``confidence`` is as of its last merge)."""
    if isinstance(record, Heuristic):
        (trials, successes), since = _heuristic_weights(record), _heuristic_reference(record)
    else:
        (trials, successes), since = _pattern_weights(record), record.last_seen
    factor = decay_factor(since, now, half_life_days)
    return wilson_lower_bound(successes * factor, trials * factor)


def _fold(
    first: tuple[float, float],
    first_at: datetime,
    second: tuple[float, float],
    second_at: datetime,
    half_life_days: float,
) -> tuple[float, float]:
    """Sum two decayed (trials, successes) pairs, both re-referenced to the later time."""
    at = max(first_at, second_at)
    a = decay_factor(first_at, at, half_life_days)
    b = decay_factor(second_at, at, half_life_days)
    return first[0] * a + second[0] * b, first[1] * a + second[1] * b


def _merge_ids(
    base: Sequence[str], base_at: datetime, new: Sequence[str], new_at: datetime
) -> list[str]:
    """Union, oldest first by evidence time, keeping the ``MAX_EVIDENCE_IDS`` most recent."""
    known = set(base)
    fresh = [eid for eid in dict.fromkeys(new) if eid not in known]
    ordered = [*base, *fresh] if new_at >= base_at else [*fresh, *base]
    return ordered[-MAX_EVIDENCE_IDS:]


def _already_applied(evidence: Sequence[str], incoming: Sequence[str]) -> bool:
    return bool(incoming) and set(incoming) <= set(evidence)


def _combine_patterns(base: Pattern, new: Pattern, half_life_days: float) -> Pattern:
    if base.kind != new.kind or base.key != new.key:
        raise ValidationError(
            "pattern_id",
            f"{base.pattern_id} names both {base.key!r} and {new.key!r}",
            "derive pattern ids with stable_id(kind, domain, parts) only",
        )
    trials, successes = _fold(
        _pattern_weights(base),
        base.last_seen,
        _pattern_weights(new),
        new.last_seen,
        half_life_days,
    )
    return base.model_copy(
        update={
            "occurrences": base.occurrences + new.occurrences,
            "successes": base.successes + new.successes,
            "total_latency_ms": base.total_latency_ms + new.total_latency_ms,
            "total_tokens": base.total_tokens + new.total_tokens,
            "weighted_occurrences": trials,
            "weighted_successes": successes,
            "episode_ids": _merge_ids(
                base.episode_ids, base.last_seen, new.episode_ids, new.last_seen
            ),
            "first_seen": min(base.first_seen, new.first_seen),
            "last_seen": max(base.last_seen, new.last_seen),
            "task_type": base.task_type if base.task_type == new.task_type else None,
        }
    )


def merge_patterns(
    existing: Mapping[str, Pattern],
    new: Sequence[Pattern],
    now: datetime,
    *,
    half_life_days: float = CONFIDENCE_HALF_LIFE_DAYS,
) -> list[Pattern]:
    """Fold ``new`` occurrences into ``existing`` (by ``pattern_id``); return changed records.

    Records are returned in first-change order with ``confidence`` recomputed as of ``now``;
    ``existing`` is not modified.
    """
    changed: dict[str, Pattern] = {}
    for pattern in new:
        base = changed.get(pattern.pattern_id)
        if base is None:
            base = existing.get(pattern.pattern_id)
        if base is None:
            trials, successes = _pattern_weights(pattern)
            merged = pattern.model_copy(
                update={"weighted_occurrences": trials, "weighted_successes": successes}
            )
        elif _already_applied(base.episode_ids, pattern.episode_ids):
            continue
        else:
            merged = _combine_patterns(base, pattern, half_life_days)
        changed[pattern.pattern_id] = merged
    return [
        record.model_copy(update={"confidence": confidence_at(record, now, half_life_days)})
        for record in changed.values()
    ]


def _combine_heuristics(base: Heuristic, new: Heuristic, half_life_days: float) -> Heuristic:
    base_at, new_at = _heuristic_reference(base), _heuristic_reference(new)
    trials, successes = _fold(
        _heuristic_weights(base), base_at, _heuristic_weights(new), new_at, half_life_days
    )
    return base.model_copy(
        update={
            "evidence_count": base.evidence_count + new.evidence_count,
            "success_count": base.success_count + new.success_count,
            "weighted_evidence": trials,
            "weighted_successes": successes,
            "episode_ids": _merge_ids(base.episode_ids, base_at, new.episode_ids, new_at),
            "created_at": min(base.created_at, new.created_at),
            "last_evidence_at": max(base_at, new_at),
        }
    )


def merge_heuristics(
    existing: Mapping[str, Heuristic],
    new: Sequence[Heuristic],
    now: datetime,
    *,
    half_life_days: float = CONFIDENCE_HALF_LIFE_DAYS,
) -> list[Heuristic]:
    """Fold ``new`` evidence into ``existing`` (by ``heuristic_id``); return changed records.

    Same rules as ``merge_patterns``; ``updated_at`` becomes ``now`` on every changed record.
    """
    changed: dict[str, Heuristic] = {}
    for heuristic in new:
        base = changed.get(heuristic.heuristic_id)
        if base is None:
            base = existing.get(heuristic.heuristic_id)
        if base is None:
            trials, successes = _heuristic_weights(heuristic)
            merged = heuristic.model_copy(
                update={
                    "weighted_evidence": trials,
                    "weighted_successes": successes,
                    "last_evidence_at": _heuristic_reference(heuristic),
                }
            )
        elif _already_applied(base.episode_ids, heuristic.episode_ids):
            continue
        else:
            merged = _combine_heuristics(base, heuristic, half_life_days)
        changed[heuristic.heuristic_id] = merged
    return [
        record.model_copy(
            update={"confidence": confidence_at(record, now, half_life_days), "updated_at": now}
        )
        for record in changed.values()
    ]
