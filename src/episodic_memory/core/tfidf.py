"""A small in-memory TF-IDF index: the keyword baseline, and a keyword source without FTS.

Pure Python over an injected tokenizer (``core.text.tokenize`` everywhere in this project, so
the baseline sees the same terms as the learned parts).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

__all__ = ["TfidfIndex"]


class TfidfIndex:
    """Cosine similarity of sublinear-TF × IDF vectors over an injected tokenizer.

    The plain keyword baseline retrieval must beat, and a keyword source wherever no full-text
    index exists. Postings lists keep a query to the documents that share a term with it;
    document norms depend on IDF, so they are recomputed lazily after the corpus changes.
    """

    def __init__(self, tokenize: Callable[[str], Sequence[str]]) -> None:
        self._tokenize = tokenize
        self._docs: dict[str, dict[str, float]] = {}  # id → term → 1 + log(tf)
        self._postings: dict[str, set[str]] = {}
        self._norms: dict[str, float] | None = None

    def __len__(self) -> int:
        return len(self._docs)

    def add(self, doc_id: str, text: str) -> None:
        self.remove(doc_id)
        counts: dict[str, int] = {}
        for term in self._tokenize(text):
            counts[term] = counts.get(term, 0) + 1
        self._docs[doc_id] = {term: 1.0 + math.log(n) for term, n in counts.items()}
        for term in counts:
            self._postings.setdefault(term, set()).add(doc_id)
        self._norms = None

    def remove(self, doc_id: str) -> None:
        for term in self._docs.pop(doc_id, {}):
            postings = self._postings[term]
            postings.discard(doc_id)
            if not postings:
                del self._postings[term]
        self._norms = None

    def idf(self, term: str) -> float:
        return math.log((1 + len(self._docs)) / (1 + len(self._postings.get(term, ())))) + 1.0

    def search(
        self, text: str, k: int, where: Callable[[str], bool] | None = None
    ) -> list[tuple[str, float]]:
        """Top ``k`` ``(doc_id, cosine)`` with a positive score, optionally filtered."""
        if self._norms is None:
            self._norms = {
                doc: math.sqrt(sum((tf * self.idf(t)) ** 2 for t, tf in terms.items()))
                for doc, terms in self._docs.items()
            }
        counts: dict[str, int] = {}
        for term in self._tokenize(text):
            if term in self._postings:
                counts[term] = counts.get(term, 0) + 1
        query = {term: (1.0 + math.log(n)) * self.idf(term) for term, n in counts.items()}
        query_norm = math.sqrt(sum(w * w for w in query.values()))
        scores: dict[str, float] = {}
        for term, weight in query.items():
            idf = self.idf(term)
            for doc in self._postings[term]:
                if where is None or where(doc):
                    scores[doc] = scores.get(doc, 0.0) + weight * self._docs[doc][term] * idf
        hits = [
            (doc, score / (query_norm * self._norms[doc]))
            for doc, score in scores.items()
            if score > 0 and self._norms[doc] > 0
        ]
        hits.sort(key=lambda hit: (-hit[1], hit[0]))
        return hits[:k]
