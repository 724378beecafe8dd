"""Which tools a task will need, learned from the tools successful episodes actually used.

Retrieval ranks past episodes by how likely their solution fits the new task, and agents want
a starting plan; both need, before anything has run, a distribution over what the task calls
for. Per domain (tools are domain-specific, with one model over all domains as the fallback
for a domain never seen), from binarized description words plus context tokens:

- **tool sets** (an episode's distinct tools, as one class: tools co-occur, and predicting the
  set as a whole keeps that): naive Bayes (``core.naive_bayes``) posterior ``predict_sets``,
  and each tool's marginal P(used | task) = the mass of the sets containing it (``predict``);
- **openings** (the first ``PREFIX_LEN`` tools, repeats collapsed): ``predict_sequence``
  returns the most probable one, extended greedily with learned transitions P(next | tool)
  weighted by the tool's marginal until "end" wins;
- **neighbours** (``core.neighbours``): the most similar successful episodes over the words
  that, in this memory, predict tool use.

Naive Bayes posteriors are famously overconfident (it counts correlated words as independent
evidence), which matters once they are mixed with other evidence. So each domain calibrates
itself prequentially: before an episode is learned, its set is predicted, and the log-loss of
that prediction under each temperature in ``TEMPERATURES`` is accumulated (decayed, so the
choice follows the model as it grows). Set posteriors and marginals use the temperature with
the least loss; no held-out data is needed, and a memory whose descriptions predict little
gets flat, honest posteriors.

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
from episodic_memory.core.naive_bayes import ClassNB
from episodic_memory.core.neighbours import TaskNeighbours
from episodic_memory.core.text import tokenize
from episodic_memory.errors import ValidationError

__all__ = [
    "ALPHA",
    "CALIBRATION_DECAY",
    "CALIBRATION_WINDOW",
    "PREFIX_LEN",
    "STATE_VERSION",
    "TEMPERATURES",
    "ToolPredictor",
    "features",
]

ALPHA = 1.0
"""Laplace smoothing: the textbook default; unseen words neither veto nor favour a class."""
PREFIX_LEN = 3
STATE_VERSION = 2
TEMPERATURES = (1.0, 2.0, 4.0, 8.0, 16.0)
"""Candidate softenings of the set posterior; the prequential log-loss picks one per domain."""
CALIBRATION_DECAY = 0.99
"""Per learned episode: the calibration remembers roughly the last hundred predictions."""
CALIBRATION_WINDOW = 500
"""Episodes at the end of a bulk batch whose predictions are scored: an earlier one would
weigh under 0.99^500 < 1% in the decayed averages, so scoring it changes nothing."""
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


class _DomainModel:
    """Tool-set and prefix classifiers, tool transitions and calibration, for one domain."""

    def __init__(self, alpha: float) -> None:
        self.sets = ClassNB(alpha)
        self.prefixes = ClassNB(alpha)
        self.transitions: dict[str, dict[str, float]] = {}
        self.episodes = 0.0
        self.losses = [0.0] * len(TEMPERATURES)  # decayed prequential log-loss per temperature
        self.calibrated = 0.0  # decayed count of predictions scored for the temperature
        self.hits = 0.0  # decayed sum of the probability given to the set that was used
        self.trials = 0.0  # decayed count of all predictions, sets never seen before included
        self._tools: dict[str, int] = {}  # tool -> column of the set/tool incidence
        self._pairs: tuple[list[int], list[int]] = ([], [])  # (set class, tool) per membership
        self._arrays: tuple[NDArray[np.intp], NDArray[np.intp]] | None = None

    def _calibrate(self, terms: set[str], label: tuple[str, ...]) -> None:
        """Score the prediction of an episode about to be learned, under every temperature."""
        if len(self.sets.labels) < 2:
            return  # nothing to choose between yet
        cls = self.sets.index.get(label)
        hit = 0.0  # a set never seen gets no probability at any temperature
        if cls is not None:
            score = self.sets.log_scores(terms)
            current = self.temperature
            for i, temperature in enumerate(TEMPERATURES):
                scaled = (score - score.max()) / temperature
                log_p = float(scaled[cls]) - math.log(float(np.exp(scaled).sum()))
                self.losses[i] = CALIBRATION_DECAY * self.losses[i] - log_p
                hit = math.exp(log_p) if temperature == current else hit
            self.calibrated = CALIBRATION_DECAY * self.calibrated + 1.0
        self.hits = CALIBRATION_DECAY * self.hits + hit
        self.trials = CALIBRATION_DECAY * self.trials + 1.0

    @property
    def reliability(self) -> float:
        """How much probability, lately, the set posterior gave the set an episode then used."""
        return self.hits / self.trials if self.trials else 0.0

    @property
    def temperature(self) -> float:
        """The calibrated temperature; the softest one until there is evidence."""
        if not self.calibrated:
            return TEMPERATURES[-1]
        return TEMPERATURES[int(np.argmin(self.losses))]

    def add(
        self, terms: set[str], tools: list[str], weight: float, prefix_len: int, calibrate: bool
    ) -> None:
        label = tuple(sorted(set(tools)))
        if calibrate:
            self._calibrate(terms, label)
        self.episodes += weight
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

    def set_posterior(self, terms: Iterable[str]) -> NDArray[np.float64]:
        return self.sets.posterior(terms, self.temperature)

    def marginals(self, post: NDArray[np.float64]) -> list[tuple[str, float]]:
        """P(tool used | terms) for every tool: posterior mass of the tool sets containing it."""
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
            "calibration": {
                "losses": self.losses,
                "count": self.calibrated,
                "hits": self.hits,
                "trials": self.trials,
            },
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any], alpha: float) -> _DomainModel:
        model = cls(alpha)
        model.episodes = float(state["episodes"])
        model.sets = ClassNB.from_state(state["sets"], alpha)
        model.prefixes = ClassNB.from_state(state["prefixes"], alpha)
        for number, label in enumerate(model.sets.labels):
            for tool in label:
                model._pairs[0].append(number)
                model._pairs[1].append(model._tools.setdefault(tool, len(model._tools)))
        model.transitions = {
            tool: {nxt: float(n) for nxt, n in row.items()}
            for tool, row in state["transitions"].items()
        }
        calibration = state["calibration"]
        model.losses = [float(x) for x in calibration["losses"]]
        model.calibrated = float(calibration["count"])
        model.hits = float(calibration["hits"])
        model.trials = float(calibration["trials"])
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
        self.neighbours = TaskNeighbours()

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
        episode_id: str | None = None,
        calibrate: bool = True,
    ) -> None:
        """Learn that this task was solved with ``tools`` (in order); failures teach nothing.

        With an ``episode_id`` the episode also becomes findable by ``neighbours``.
        ``calibrate=False`` skips scoring the prediction this episode would have got (a third
        of the cost); bulk learning scores only the last ``CALIBRATION_WINDOW`` episodes.
        """
        if not success or weight <= 0:
            return
        domain = context.domain if context is not None else "general"
        sequence = collapse(tools)
        terms = features(description, context)
        self._models.setdefault(domain, _DomainModel(self.alpha)).add(
            terms, sequence, weight, self.prefix_len, calibrate
        )
        if episode_id is not None:
            self.neighbours.add(episode_id, domain, terms, sequence, weight)
        terms.add(f"domain={domain}")
        self._models.setdefault(_ALL, _DomainModel(self.alpha)).add(
            terms, sequence, weight, self.prefix_len, calibrate
        )

    def observe_episode(self, episode: Episode, *, calibrate: bool = True) -> None:
        """``observe`` a completed episode, under the shared success rule."""
        if episode.outcome is not None:
            self.observe(
                episode.task_description,
                episode.context,
                episode.tools,
                episode_succeeded(episode),
                episode_id=episode.episode_id,
                calibrate=calibrate,
            )

    def forget(self, episode_ids: Sequence[str]) -> int:
        """Stop returning these episodes as neighbours (what they taught the classifiers stays)."""
        return self.neighbours.remove(episode_ids)

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
        return model.marginals(model.set_posterior(features(description, context) | extra))

    def predict_sets(
        self, description: str, context: TaskContext | None, k: int = 10
    ) -> list[tuple[tuple[str, ...], float]]:
        """The ``k`` most probable tool sets (sorted tool names) with calibrated probabilities."""
        model, extra = self._model(context)
        if model is None or k <= 0:
            return []
        post = model.set_posterior(features(description, context) | extra)
        order = np.argsort(-post, kind="stable")[:k]
        return [(model.sets.labels[i], float(post[i])) for i in order]

    def reliability(self, context: TaskContext | None) -> float:
        """The recent mean probability ``predict_sets`` gave the set a new episode then used.

        Measured before each episode was learned (prequentially), so it is an honest estimate
        of how far the set posterior can be trusted for this domain; 0 until measured.
        """
        model, _ = self._model(context)
        return model.reliability if model is not None else 0.0

    def find_neighbours(
        self, description: str, context: TaskContext | None, k: int
    ) -> list[tuple[str, float]]:
        """Successful episodes of the same domain most alike in the words that predict tools."""
        domain = context.domain if context is not None else "general"
        return self.neighbours.search(domain, features(description, context), k)

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
        marginal = dict(model.marginals(model.set_posterior(terms)))
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

    def to_state(self, *, neighbours: bool = True) -> dict[str, Any]:
        """A JSON-serializable snapshot; ``from_state`` restores an equal predictor.

        ``neighbours=False`` leaves the learned neighbours out (large: they are saved as arrays
        by ``core.neighbours_state`` and put back with ``from_state(..., neighbours=...)``).
        """
        state: dict[str, Any] = {
            "version": STATE_VERSION,
            "alpha": self.alpha,
            "prefix_len": self.prefix_len,
            "domains": {domain: model.to_state() for domain, model in self._models.items()},
        }
        if neighbours:
            state["neighbours"] = self.neighbours.to_state()
        return state

    @classmethod
    def from_state(
        cls, state: Mapping[str, Any], neighbours: TaskNeighbours | None = None
    ) -> ToolPredictor:
        """The predictor ``to_state`` saved; ``neighbours`` when they were saved apart."""
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
        if neighbours is not None:
            predictor.neighbours = neighbours
        else:
            predictor.neighbours = TaskNeighbours.from_state(state["neighbours"])
        return predictor
