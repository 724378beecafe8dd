"""Incremental multinomial naive Bayes over binarized terms, with JSON-able state.

The learned parts of the memory (``core.tool_predictor``) classify task descriptions into tool
sets and openings. Naive Bayes fits because its state is a set of counts: ``add`` is an exact,
order-independent update in O(terms), the state serializes as-is, and a query touches only the
classes that saw its terms.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["ClassNB", "grown"]


def grown(array: NDArray[Any], size: int) -> NDArray[Any]:
    """``array`` with room for ``size`` items, doubling so appends stay amortized O(1)."""
    if size <= len(array):
        return array
    bigger = np.zeros(max(size, 2 * len(array)), dtype=array.dtype)
    bigger[: len(array)] = array
    return bigger


class _Posting:
    """The classes that saw one term: counts plus the cached log gains a query adds."""

    __slots__ = ("classes", "counts", "gains", "where")

    def __init__(self) -> None:
        self.classes: NDArray[np.intp] = np.zeros(2, dtype=np.intp)
        self.gains: NDArray[np.float64] = np.zeros(2)
        self.counts: list[float] = []
        self.where: dict[int, int] = {}

    @property
    def size(self) -> int:
        return len(self.counts)

    def add(self, cls: int, weight: float, alpha: float) -> None:
        pos = self.where.get(cls)
        if pos is None:
            pos = self.where[cls] = len(self.counts)
            self.counts.append(0.0)
            self.classes = grown(self.classes, len(self.counts))
            self.gains = grown(self.gains, len(self.counts))
            self.classes[pos] = cls
        self.counts[pos] += weight
        self.gains[pos] = math.log1p(self.counts[pos] / alpha)


class ClassNB:
    """Multinomial naive Bayes over binarized terms, updated in place per observed document.

    log P(c | x) = log P(c) + sum over known terms t of log((n(c, t) + a) / (n(c) + a V)) + const.
    The ``log a`` all classes share is dropped, so a term only adds its gain
    log(1 + n(c, t) / a) to the classes that saw it: a query touches just those entries.
    """

    def __init__(self, alpha: float) -> None:
        self.alpha = alpha
        self.labels: list[tuple[str, ...]] = []
        self.index: dict[tuple[str, ...], int] = {}
        self.docs: NDArray[np.float64] = np.zeros(2)  # weight of each class's documents
        self.terms: NDArray[np.float64] = np.zeros(2)  # weighted term occurrences per class
        self.postings: dict[str, _Posting] = {}

    def add(self, label: tuple[str, ...], terms: Iterable[str], weight: float) -> None:
        cls = self.index.get(label)
        if cls is None:
            cls = self.index[label] = len(self.labels)
            self.labels.append(label)
            self.docs = grown(self.docs, len(self.labels))
            self.terms = grown(self.terms, len(self.labels))
        self.docs[cls] += weight
        for term in terms:
            posting = self.postings.get(term)
            if posting is None:
                posting = self.postings[term] = _Posting()
            posting.add(cls, weight, self.alpha)
            self.terms[cls] += weight

    def log_scores(self, terms: Iterable[str]) -> NDArray[np.float64]:
        """Unnormalized log P(class | terms) in ``labels`` order (empty if nothing learned)."""
        size = len(self.labels)
        if not size:
            return np.zeros(0)
        known = [self.postings[term] for term in terms if term in self.postings]
        vocabulary = self.alpha * len(self.postings)
        score = np.log(np.maximum(self.docs[:size], 1e-300))
        score -= len(known) * np.log(self.terms[:size] + vocabulary)
        for posting in known:
            score[posting.classes[: posting.size]] += posting.gains[: posting.size]
        return score

    def posterior(self, terms: Iterable[str], temperature: float = 1.0) -> NDArray[np.float64]:
        """P(class | terms) for every class, in ``labels`` order, optionally tempered."""
        score = self.log_scores(terms)
        if not len(score):
            return score
        prob = np.exp((score - score.max()) / temperature)
        return np.asarray(prob / prob.sum(), dtype=np.float64)

    def to_state(self) -> dict[str, Any]:
        size = len(self.labels)
        return {
            "labels": [list(label) for label in self.labels],
            "docs": self.docs[:size].tolist(),
            "terms": self.terms[:size].tolist(),
            "postings": {
                term: [posting.classes[: posting.size].tolist(), posting.counts]
                for term, posting in self.postings.items()
            },
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any], alpha: float) -> ClassNB:
        model = cls(alpha)
        model.labels = [tuple(label) for label in state["labels"]]
        model.index = {label: i for i, label in enumerate(model.labels)}
        model.docs = np.asarray(state["docs"], dtype=np.float64)
        model.terms = np.asarray(state["terms"], dtype=np.float64)
        for term, (classes, counts) in state["postings"].items():
            posting = model.postings[term] = _Posting()
            for c, n in zip(classes, counts, strict=True):
                posting.add(int(c), float(n), alpha)
        return model
