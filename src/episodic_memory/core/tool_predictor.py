"""Which tools a task will need, learned from the tools successful episodes actually used.

Retrieval that re-ranks past episodes by predicted tool overlap, and agents that want a
starting plan, both need P(tool | task description, context) before anything has run. The model
is multinomial naive Bayes over binarized word features (``core.text.tokenize`` plus context
tokens), with Laplace smoothing, kept per domain (tools are domain-specific) and once over all
domains as the fallback for a domain never seen. Why naive Bayes: its state is a set of counts,
so ``observe`` is an exact, order-independent update in O(terms) and the state serializes
as-is; a query costs O(query terms) vectorized look-ups, well under a millisecond at thousands
of episodes; and with tens of episodes per domain it beats discriminative models that need more
data. Unigrams only: bigrams repeat the evidence of their words, which naive Bayes would count
twice.

Two class structures share the features, because tools co-occur and an independent model per
tool loses that:

- **tool sets** (the distinct tools of an episode): ``predict`` returns each tool's marginal
  P(tool used | task) = sum of the posteriors of the sets that contain it;
- **prefixes** (the first ``PREFIX_LEN`` tools, consecutive repeats collapsed):
  ``predict_sequence`` returns the most probable opening, possibly shorter (the task ends or
  needs no tools). Past the prefix it extends greedily with learned transitions
  P(next | previous tool), each weighted by the tool's marginal, until "end" wins.

Only successful episodes teach (``core.extract.episode_succeeded``): a failed episode's tools
are not evidence of what the task needed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from itertools import pairwise
from typing import Any

import numpy as np
from numpy.typing import NDArray

from episodic_memory.core.extract import collapse, episode_succeeded
from episodic_memory.core.models import Episode, TaskContext
from episodic_memory.core.text import tokenize
from episodic_memory.errors import ValidationError

__all__ = ["ALPHA", "PREFIX_LEN", "STATE_VERSION", "ToolPredictor", "features"]

ALPHA = 1.0
"""Laplace smoothing: the textbook default; unseen words neither veto nor favour a class."""
PREFIX_LEN = 3
STATE_VERSION = 1
_ALL = "*"
_END = ""  # transition target meaning "the episode ends"


def features(description: str, context: TaskContext | None) -> set[str]:
    """Binarized features: description words plus context facts as ``kind=value`` tokens."""
    found = set(tokenize(description))
    if context is not None:
        if context.language:
            found.add(f"language={context.language.lower()}")
        if context.framework:
            found.add(f"framework={context.framework.lower()}")
        if context.task_type:
            found.add(f"type={context.task_type.lower()}")
        found.update(f"tag={tag.lower()}" for tag in context.tags)
    return found


def _by_score(item: tuple[str, float]) -> tuple[float, str]:
    return (-item[1], item[0])


def _grown(array: NDArray[Any], size: int) -> NDArray[Any]:
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
            self.classes = _grown(self.classes, len(self.counts))
            self.gains = _grown(self.gains, len(self.counts))
            self.classes[pos] = cls
        self.counts[pos] += weight
        self.gains[pos] = math.log1p(self.counts[pos] / alpha)


class _ClassNB:
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
            self.docs = _grown(self.docs, len(self.labels))
            self.terms = _grown(self.terms, len(self.labels))
        self.docs[cls] += weight
        for term in terms:
            posting = self.postings.get(term)
            if posting is None:
                posting = self.postings[term] = _Posting()
            posting.add(cls, weight, self.alpha)
            self.terms[cls] += weight

    def posterior(self, terms: Iterable[str]) -> NDArray[np.float64]:
        """P(class | terms) for every class, in ``labels`` order (empty if nothing learned)."""
        size = len(self.labels)
        if not size:
            return np.zeros(0)
        known = [self.postings[term] for term in terms if term in self.postings]
        vocabulary = self.alpha * len(self.postings)
        score = np.log(np.maximum(self.docs[:size], 1e-300))
        score -= len(known) * np.log(self.terms[:size] + vocabulary)
        for posting in known:
            score[posting.classes[: posting.size]] += posting.gains[: posting.size]
        prob = np.exp(score - score.max())
        return np.asarray(prob / prob.sum(), dtype=np.float64)

    def to_state(self) -> dict[str, Any]:
        size = len(self.labels)
        return {
            "labels": [list(label) for label in self.labels],
            "docs": self.docs[:size].tolist(),
            "terms": self.terms[:size].tolist(),
            "postings": {
                term: [
                    posting.classes[: posting.size].tolist(),
                    posting.counts,
                ]
                for term, posting in self.postings.items()
            },
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any], alpha: float) -> _ClassNB:
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


class _DomainModel:
    """Tool-set and prefix classifiers plus tool transitions, for one domain."""

    def __init__(self, alpha: float) -> None:
        self.sets = _ClassNB(alpha)
        self.prefixes = _ClassNB(alpha)
        self.transitions: dict[str, dict[str, float]] = {}
        self.episodes = 0.0
        self._tools: dict[str, int] = {}  # tool -> column of the set/tool incidence
        self._pairs: tuple[list[int], list[int]] = ([], [])  # (set class, tool) per membership
        self._arrays: tuple[NDArray[np.intp], NDArray[np.intp]] | None = None

    def add(self, terms: set[str], tools: list[str], weight: float, prefix_len: int) -> None:
        self.episodes += weight
        label = tuple(sorted(set(tools)))
        if label not in self.sets.index:
            for tool in label:
                self._pairs[0].append(len(self.sets.labels))
                self._pairs[1].append(self._tools.setdefault(tool, len(self._tools)))
            self._arrays = None
        self.sets.add(label, terms, weight)
        self.prefixes.add(tuple(tools[:prefix_len]), terms, weight)
        for before, after in pairwise([*tools, _END]):
            row = self.transitions.setdefault(before, {})
            row[after] = row.get(after, 0.0) + weight

    def marginals(self, terms: Iterable[str]) -> list[tuple[str, float]]:
        """P(tool used | terms) for every tool: posterior mass of the tool sets containing it."""
        post = self.sets.posterior(terms)
        if not len(post):
            return []
        if self._arrays is None:
            self._arrays = (
                np.asarray(self._pairs[0], np.intp),
                np.asarray(self._pairs[1], np.intp),
            )
        cls, tool = self._arrays
        mass = np.minimum(np.bincount(tool, weights=post[cls], minlength=len(self._tools)), 1.0)
        return sorted(zip(self._tools, mass.tolist(), strict=True), key=_by_score)

    def to_state(self) -> dict[str, Any]:
        return {
            "episodes": self.episodes,
            "sets": self.sets.to_state(),
            "prefixes": self.prefixes.to_state(),
            "transitions": self.transitions,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any], alpha: float) -> _DomainModel:
        model = cls(alpha)
        model.episodes = float(state["episodes"])
        model.sets = _ClassNB.from_state(state["sets"], alpha)
        model.prefixes = _ClassNB.from_state(state["prefixes"], alpha)
        for number, label in enumerate(model.sets.labels):
            for tool in label:
                model._pairs[0].append(number)
                model._pairs[1].append(model._tools.setdefault(tool, len(model._tools)))
        model.transitions = {
            tool: {nxt: float(n) for nxt, n in row.items()}
            for tool, row in state["transitions"].items()
        }
        return model


class ToolPredictor:
    """Incremental tool predictor: ``observe`` episodes, then ``predict`` for a new task."""

    def __init__(self, alpha: float = ALPHA, prefix_len: int = PREFIX_LEN) -> None:
        if alpha <= 0 or not math.isfinite(alpha):
            raise ValidationError("alpha", f"is {alpha}", "use a positive, finite smoothing")
        if prefix_len < 1:
            raise ValidationError("prefix_len", f"is {prefix_len}", "use 1 or more")
        self.alpha = alpha
        self.prefix_len = prefix_len
        self._models: dict[str, _DomainModel] = {}

    @property
    def episodes_observed(self) -> float:
        """Total weight of the episodes learned from (failed ones are not counted)."""
        everything = self._models.get(_ALL)
        return everything.episodes if everything else 0.0

    def observe(
        self,
        description: str,
        context: TaskContext | None,
        tools: Sequence[str],
        success: bool = True,
        weight: float = 1.0,
    ) -> None:
        """Learn that this task was solved with ``tools`` (in order); failures teach nothing."""
        if not success or weight <= 0:
            return
        domain = context.domain if context is not None else "general"
        sequence = collapse(tools)
        terms = features(description, context)
        self._models.setdefault(domain, _DomainModel(self.alpha)).add(
            terms, sequence, weight, self.prefix_len
        )
        terms.add(f"domain={domain}")
        self._models.setdefault(_ALL, _DomainModel(self.alpha)).add(
            terms, sequence, weight, self.prefix_len
        )

    def observe_episode(self, episode: Episode) -> None:
        """``observe`` a completed episode, under the shared success rule."""
        if episode.outcome is not None:
            self.observe(
                episode.task_description, episode.context, episode.tools, episode_succeeded(episode)
            )

    def _model(self, context: TaskContext | None) -> tuple[_DomainModel | None, set[str]]:
        domain = context.domain if context is not None else "general"
        if domain in self._models:
            return self._models[domain], set()
        return self._models.get(_ALL), {f"domain={domain}"}

    def predict(self, description: str, context: TaskContext | None) -> list[tuple[str, float]]:
        """Each known tool with P(used | task), most likely first (ties by name)."""
        model, extra = self._model(context)
        if model is None:
            return []
        return model.marginals(features(description, context) | extra)

    def predict_sequence(
        self, description: str, context: TaskContext | None, n: int = 3
    ) -> list[str]:
        """The most likely first ``n`` tools in order (fewer if the task likely ends sooner)."""
        model, extra = self._model(context)
        if model is None or n <= 0:
            return []
        terms = features(description, context) | extra
        post = model.prefixes.posterior(terms)
        labels = model.prefixes.labels
        if n >= self.prefix_len:
            best = labels[int(np.argmax(post))]
        else:  # sum the posteriors of the prefixes that share the shorter opening
            openings: dict[tuple[str, ...], float] = {}
            for label, prob in zip(labels, post.tolist(), strict=True):
                openings[label[:n]] = openings.get(label[:n], 0.0) + prob
            best = max(openings.items(), key=lambda item: (item[1], item[0]))[0]
        sequence = list(best)
        if len(sequence) < min(n, self.prefix_len):
            return sequence  # the most likely opening ends here
        marginal = dict(self.predict(description, context))
        while len(sequence) < n:
            nxt = self._next_tool(model, sequence[-1], marginal)
            if nxt is None:
                break
            sequence.append(nxt)
        return sequence

    @staticmethod
    def _next_tool(model: _DomainModel, previous: str, marginal: Mapping[str, float]) -> str | None:
        """argmax of P(next | previous) x P(next used | task); None when "end" scores higher.

        "End" is weighed by 1 - the best candidate's marginal: the episode stops when no tool
        that usually follows is one this task is likely to need.
        """
        row = model.transitions.get(previous, {})
        total = sum(row.values())
        scores = {tool: n / total * marginal.get(tool, 0.0) for tool, n in row.items() if tool}
        if not scores:
            return None
        tool, score = max(scores.items(), key=lambda item: (item[1], item[0]))
        best_marginal = max(marginal.get(candidate, 0.0) for candidate in scores)
        end = row.get(_END, 0.0) / total * (1.0 - best_marginal)
        return tool if score > end else None

    def to_state(self) -> dict[str, Any]:
        """A JSON-serializable snapshot; ``from_state`` restores an equal predictor."""
        return {
            "version": STATE_VERSION,
            "alpha": self.alpha,
            "prefix_len": self.prefix_len,
            "domains": {domain: model.to_state() for domain, model in self._models.items()},
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> ToolPredictor:
        if state.get("version") != STATE_VERSION:
            raise ValidationError(
                "ToolPredictor.state.version",
                f"is {state.get('version')!r}, this code reads {STATE_VERSION}",
                "rebuild the predictor from stored episodes",
            )
        predictor = cls(alpha=float(state["alpha"]), prefix_len=int(state["prefix_len"]))
        predictor._models = {
            domain: _DomainModel.from_state(model, predictor.alpha)
            for domain, model in state["domains"].items()
        }
        return predictor
