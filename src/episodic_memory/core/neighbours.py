"""Nearest past tasks over the words that, in this memory, say which tools a task needs.

Plain text similarity weighs every shared word by rarity, so two tasks of one customer that
share names, products and cities look alike even when one cancels an order and the other
returns an item. What an agent needs from a past task is its solution, so here each word is
weighted by how much it told us about the tools used, learned from the stored episodes of
the domain. For word t and tool j (N episodes),

    G(t, j) = 2N · IG(t; j)

is the G-test statistic of "the description contains t" against "the episode used j" (IG the
information gain in nats, counts smoothed towards the tool's base rate); under independence it
follows chi²(1). A word weighs its strongest evidence for any one tool, beyond what chance
would give the best of T informative tools (Bonferroni):

    w(t) = max over j of max(G(t, j) − q, 0) / 2N,    q = chi²(1) quantile at 1 − α/T.

The maximum, not the sum, because tools come in blocks: the look-ups that open every full
trace co-occur, and a word marking that block (often just a writing style) would otherwise
count once per tool and outweigh the word that names the task's one decisive tool. The
threshold makes it safe on small memories, where chance associations abound, and lets it
sharpen as evidence grows. A word that every episode or none shares carries nothing.

Similarity is the cosine of binary term vectors under these weights. The index keeps, per
domain, each successful episode's terms and tools, the term × tool co-occurrence counts (exact
under add and remove), and recomputes weights and norms lazily: one vectorized pass,
O(vocabulary × tools + stored terms), once the corpus has changed by ``REFRESH``.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Mapping, Sequence
from statistics import NormalDist
from typing import Any

import numpy as np
from numpy.typing import NDArray

from episodic_memory.core.naive_bayes import grown

__all__ = [
    "MAX_POSTINGS",
    "MIN_POSTINGS",
    "REFRESH",
    "SEARCH_BUDGET",
    "SIGNIFICANCE",
    "SMOOTHING",
    "TaskNeighbours",
    "chi2_1_quantile",
    "term_weights",
]

SIGNIFICANCE = 0.05
"""Family-wise chance, over a domain's tools, that a word unrelated to all of them gets weight."""
SMOOTHING = 1.0
"""Pseudo-episodes pulling P(tool | word) towards the tool's base rate."""
MAX_POSTINGS = 10_000
"""Episodes a query word scores: its latest ``MAX_POSTINGS`` (each word's list is oldest
first). Bounds a query at any memory size (a million episodes: ~3 ms instead of ~800);
an older episode still counts through its rarer words, so recency breaks the ties among
the many near-duplicates that common words bring."""
SEARCH_BUDGET = 60_000
"""Postings one query reads in all. Words are read from the most informative down, each its
latest ``MAX_POSTINGS``, while ``MIN_POSTINGS`` stay reserved for every word still to come:
past the budget the least informative words are read shallower. A query of 85 common words
at a million episodes touched ~800k entries (~15 ms, mostly cache misses) without it."""
MIN_POSTINGS = 500
"""Latest postings every query word reads, whatever the budget has left."""
REFRESH = 0.01
"""Weights are corpus statistics, recomputed once the domain's episodes have changed by this
fraction (any change below a hundred episodes): a busy memory does not pay a full pass per
learned episode, and words new since the last pass weigh nothing until the next."""

Floats = NDArray[np.float64]


def chi2_1_quantile(p: float) -> float:
    """The ``p`` quantile of chi² with one degree of freedom (a squared standard normal)."""
    return float(NormalDist().inv_cdf(0.5 + p / 2.0) ** 2)


def _entropy(p: Floats) -> Floats:
    q = np.clip(p, 1e-12, 1.0 - 1e-12)
    h = -(q * np.log(q) + (1.0 - q) * np.log(1.0 - q))
    return np.where((p <= 0.0) | (p >= 1.0), 0.0, h)


def term_weights(co: Floats, df: Floats, tool_docs: Floats, episodes: float) -> Floats:
    """Significance weight of every term (rows of ``co``, the term × tool co-occurrences).

    ``df``: episodes containing each term; ``tool_docs``: episodes using each tool.
    """
    n = float(episodes)
    informative = (tool_docs > 1e-9) & (tool_docs < n - 1e-9)
    tools = int(informative.sum())
    if n <= 0 or not tools or not len(df):
        return np.zeros(len(df))
    base = tool_docs[informative] / n
    with_term = df[:, None]
    joint = co[:, informative]
    p_with = (joint + SMOOTHING * base) / (with_term + SMOOTHING)
    p_without = (tool_docs[informative] - joint + SMOOTHING * base) / (n - with_term + SMOOTHING)
    gain = _entropy(base) - (
        with_term / n * _entropy(p_with) + (n - with_term) / n * _entropy(p_without)
    )
    strongest = 2.0 * n * np.maximum(gain, 0.0).max(axis=1)
    threshold = chi2_1_quantile(1.0 - SIGNIFICANCE / tools)
    return np.asarray(np.maximum(strongest - threshold, 0.0) / (2.0 * n))


class _Domain:
    """One domain's episodes as term sets, with term × tool counts and a term → episode map.

    Everything per episode lives in flat typed arrays (``array``: 4–8 bytes an entry), not in
    Python lists of ints (~36 bytes an entry): at a million episodes of ~15 words that is the
    difference between ~0.2 and ~1.2 GB.
    """

    def __init__(self) -> None:
        self.row: dict[str, int] = {}
        self.col: dict[str, int] = {}
        self.co = np.zeros((8, 4))
        self.df = np.zeros(8)
        self.tool_docs = np.zeros(4)
        self.episodes = 0.0
        self.ids: list[str] = []
        self.slot: dict[str, int] = {}  # live episodes only
        self.postings: dict[int, array[int]] = {}  # row → slots, ascending (oldest first)
        # Per slot: its terms are _rows[_start[s]:_start[s+1]], its tools likewise in _cols.
        self._rows = array("i")
        self._start = array("q", [0])
        self._cols = array("i")
        self._col_start = array("q", [0])
        self._weight = array("d")
        self._weights: Floats | None = None
        self._basis = 0.0  # episodes when the weights were computed
        self._changed = 0.0  # episodes added or removed since
        self._norms: Floats | None = None

    def _grow_rows(self, terms: Iterable[str]) -> list[int]:
        rows = [self.row.setdefault(term, len(self.row)) for term in terms]
        if len(self.row) > len(self.df):
            size = max(len(self.row), 2 * len(self.df))
            self.df = grown(self.df, size)
            co = np.zeros((size, self.co.shape[1]))
            co[: self.co.shape[0]] = self.co
            self.co = co
        return rows

    def _grow_cols(self, tools: Iterable[str]) -> list[int]:
        cols = [self.col.setdefault(tool, len(self.col)) for tool in tools]
        if len(self.col) > len(self.tool_docs):
            size = max(len(self.col), 2 * len(self.tool_docs))
            self.tool_docs = grown(self.tool_docs, size)
            co = np.zeros((self.co.shape[0], size))
            co[:, : self.co.shape[1]] = self.co
            self.co = co
        return cols

    def _count(self, rows: Sequence[int], cols: Sequence[int], weight: float) -> None:
        self.episodes += weight
        self.df[rows] += weight
        self.tool_docs[cols] += weight
        if rows and cols:
            self.co[np.ix_(rows, cols)] += weight
        self._changed += abs(weight)

    def member(self, slot: int) -> tuple[list[int], list[int], float]:
        """The term rows, tool columns and weight stored for ``slot``."""
        rows = self._rows[self._start[slot] : self._start[slot + 1]].tolist()
        cols = self._cols[self._col_start[slot] : self._col_start[slot + 1]].tolist()
        return rows, cols, self._weight[slot]

    def add(self, episode_id: str, terms: set[str], tools: set[str], weight: float) -> None:
        if episode_id in self.slot:
            self.remove(episode_id)
        rows, cols = self._grow_rows(sorted(terms)), self._grow_cols(sorted(tools))
        self._count(rows, cols, weight)
        slot = len(self.ids)
        self.slot[episode_id] = slot
        self.ids.append(episode_id)
        self._rows.extend(rows)
        self._start.append(len(self._rows))
        self._cols.extend(cols)
        self._col_start.append(len(self._cols))
        self._weight.append(weight)
        for row in rows:
            posting = self.postings.get(row)
            if posting is None:
                self.postings[row] = array("i", (slot,))
            else:
                posting.append(slot)

    def remove(self, episode_id: str) -> bool:
        """Forget an episode: rare (deletes), so O(its words' postings) is fine."""
        slot = self.slot.pop(episode_id, None)
        if slot is None:
            return False
        rows, cols, weight = self.member(slot)
        self._count(rows, cols, -weight)
        self._weight[slot] = 0.0
        for row in rows:
            self.postings[row].remove(slot)
        self._weights = self._norms = None  # removal is exact at once
        return True

    def weights(self) -> Floats:
        """One weight per known term (see ``REFRESH`` for when they are recomputed)."""
        stale = self._changed > 0 and self._changed >= REFRESH * self._basis
        if self._weights is None or stale:
            size = len(self.row)
            self._weights = term_weights(
                self.co[:size, : len(self.col)],
                self.df[:size],
                self.tool_docs[: len(self.col)],
                self.episodes,
            )
            self._basis, self._changed, self._norms = self.episodes, 0.0, None
        elif len(self._weights) < len(self.row):  # words first seen since: no weight yet
            self._weights = np.concatenate(
                [self._weights, np.zeros(len(self.row) - len(self._weights))]
            )
        return self._weights

    def norms(self) -> Floats:
        """Each stored episode's vector norm; extended for episodes added since."""
        squared = self.weights() ** 2
        known = 0 if self._norms is None else len(self._norms)
        if known == len(self.ids):
            assert self._norms is not None
            return self._norms
        begin = self._start[known]
        rows = np.frombuffer(self._rows, dtype=np.int32)[begin:]
        counts = np.diff(np.frombuffer(self._start, dtype=np.int64)[known:])
        member = np.repeat(np.arange(len(counts)), counts)
        added = np.sqrt(np.bincount(member, weights=squared[rows], minlength=len(counts)))
        self._norms = added if self._norms is None else np.concatenate([self._norms, added])
        return self._norms

    def search(self, terms: Iterable[str], k: int) -> list[tuple[str, float]]:
        weights = self.weights()
        rows = sorted({self.row[t] for t in terms if t in self.row and weights[self.row[t]] > 0})
        if not rows or k <= 0:
            return []
        norms = self.norms()
        scores = np.zeros(len(self.ids))
        parts = []
        remaining = SEARCH_BUDGET
        by_information = sorted(rows, key=lambda r: (-weights[r], r))
        for position, row in enumerate(by_information):
            posting = self.postings.get(row)
            if posting:  # the word's latest episodes, as deep as the budget allows
                still_to_come = len(by_information) - position - 1
                allowed = max(MIN_POSTINGS, remaining - MIN_POSTINGS * still_to_come)
                latest = np.frombuffer(posting, dtype=np.int32)[-min(MAX_POSTINGS, allowed) :]
                remaining -= len(latest)
                scores[latest] += weights[row] ** 2
                parts.append(latest)
        if not parts:
            return []
        query_norm = math.sqrt(float((weights[rows] ** 2).sum()))
        # Only the episodes the postings touched, not every slot: an episode appears once per
        # shared word, so the best k·words entries hold the best k episodes (ties included).
        touched = np.concatenate(parts)
        sims = scores[touched] / (query_norm * np.maximum(norms[touched], 1e-12))
        depth = k * len(parts)
        if len(touched) > depth:
            keep = sims >= np.partition(sims, len(sims) - depth)[len(sims) - depth]
            touched, sims = touched[keep], sims[keep]
        slots, first = np.unique(touched, return_index=True)
        sims = sims[first]
        order = np.lexsort((slots, -sims))[:k]  # best first; ties: the older episode
        return [(self.ids[slots[i]], float(sims[i])) for i in order if sims[i] > 0]


class TaskNeighbours:
    """Per-domain nearest successful episodes under learned term weights (see module doc)."""

    def __init__(self) -> None:
        self._domains: dict[str, _Domain] = {}

    def __len__(self) -> int:
        return sum(len(d.slot) for d in self._domains.values())

    def add(
        self,
        episode_id: str,
        domain: str,
        terms: Iterable[str],
        tools: Iterable[str],
        weight: float = 1.0,
    ) -> None:
        """Index (or re-index) an episode solved with ``tools``."""
        self._domains.setdefault(domain, _Domain()).add(episode_id, set(terms), set(tools), weight)

    def remove(self, episode_ids: Sequence[str]) -> int:
        return sum(d.remove(i) for i in episode_ids for d in self._domains.values())

    def weights(self, domain: str, terms: Iterable[str]) -> dict[str, float]:
        """The learned weight of each of ``terms`` in ``domain`` (0 when unknown)."""
        model = self._domains.get(domain)
        if model is None:
            return {term: 0.0 for term in terms}
        w = model.weights()
        return {t: float(w[model.row[t]]) if t in model.row else 0.0 for t in terms}

    def search(self, domain: str, terms: Iterable[str], k: int) -> list[tuple[str, float]]:
        """Up to ``k`` ``(episode_id, cosine)`` with a positive similarity, best first."""
        model = self._domains.get(domain)
        return model.search(terms, k) if model is not None else []

    def to_state(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, model in self._domains.items():
            terms = list(model.row)
            tools = list(model.col)
            out[name] = [
                [i, [terms[r] for r in rows], [tools[c] for c in cols], weight]
                for i, slot in model.slot.items()
                for rows, cols, weight in (model.member(slot),)
            ]
        return out

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> TaskNeighbours:
        index = cls()
        for domain, rows in state.items():
            for episode_id, terms, tools, weight in rows:
                index.add(str(episode_id), domain, terms, tools, float(weight))
        return index
