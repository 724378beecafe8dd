"""How well a past episode's tool set fits the tools a new task is expected to need.

What makes a past episode useful is that its solution applies, so ranking asks: what is the
probability that this task is solved with the candidate's tool set? The answer is an expected
set similarity under a posterior over the task's tool set,

    match(c) = sum over sets S of P(S | task) · K(S, tools(c)),

with K the Jaccard similarity of two tool sets where each tool weighs its inverse document
frequency over the candidates: tools nearly every episode calls (look-ups, logins) say little
about which task this is, so sets that differ only in those still match. The posterior blends
the tool predictor's calibrated set posterior with the sets of the candidates the text
evidence ranks highest (pseudo-relevance feedback), which carries the task where the
predictor has not learned enough.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

__all__ = ["expected_match", "set_posterior", "set_similarity", "tool_idf"]

ToolSet = tuple[str, ...]


def tool_idf(tool_sets: Sequence[Sequence[str]]) -> dict[str, float]:
    """Inverse document frequency of tools over candidates: ubiquitous tools weigh little."""
    counts: dict[str, int] = {}
    for tools in tool_sets:
        for tool in set(tools):
            counts[tool] = counts.get(tool, 0) + 1
    n = len(tool_sets)
    return {tool: math.log((n + 1) / (count + 0.5)) for tool, count in counts.items()}


def set_similarity(a: Sequence[str], b: Sequence[str], idf: Mapping[str, float]) -> float:
    """IDF-weighted Jaccard of two tool sets; two empty sets are identical."""
    first, second = set(a), set(b)
    if not first and not second:
        return 1.0
    default = max(idf.values(), default=1.0)

    def mass(tools: set[str]) -> float:
        return sum(max(idf.get(tool, default), 0.0) for tool in tools)

    union = mass(first | second)
    return mass(first & second) / union if union > 0 else 0.0


def set_posterior(
    predicted: Sequence[tuple[ToolSet, float]],
    neighbours: Sequence[tuple[Sequence[str], float]],
    predictor_share: float,
) -> dict[ToolSet, float]:
    """Blend the predictor's set posterior with the weighted votes of the top candidates.

    Each part is normalised first; when one is missing the other stands alone.
    """
    votes: dict[ToolSet, float] = {}
    for tools, weight in neighbours:
        if weight > 0:
            key = tuple(sorted(set(tools)))
            votes[key] = votes.get(key, 0.0) + weight
    learned = {tuple(sorted(set(s))): p for s, p in predicted if p > 0}
    parts = [(part, sum(part.values())) for part in (learned, votes)]
    if not all(total > 0 for _, total in parts):
        only = next(((part, total) for part, total in parts if total > 0), None)
        return {s: p / only[1] for s, p in only[0].items()} if only else {}
    share = min(max(predictor_share, 0.0), 1.0)
    blended: dict[ToolSet, float] = {}
    for (part, total), weight in zip(parts, (share, 1.0 - share), strict=True):
        for key, value in part.items():
            blended[key] = blended.get(key, 0.0) + weight * value / total
    return blended


def expected_match(
    posterior: Mapping[ToolSet, float],
    tools: Sequence[str],
    idf: Mapping[str, float],
    min_probability: float = 1e-3,
) -> float:
    """E[K(S, tools)] for S drawn from ``posterior`` (negligible sets skipped)."""
    return sum(
        p * set_similarity(s, tools, idf) for s, p in posterior.items() if p >= min_probability
    )
