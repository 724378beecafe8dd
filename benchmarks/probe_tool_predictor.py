"""Quick, honest probe of ``ToolPredictor`` on real agent tasks (not the final benchmark).

Grouped k-fold over the ``train`` split of ``../shared/evaldata/tau_dev.jsonl`` (groups =
``group.customer``, so no near-duplicate of a query sits in memory), repeated over a few group
shuffles. Memory sees only ``task_description``, ``context``, ``steps`` and ``outcome``;
``family`` / ``family_seq`` are used for scoring only. With ``+extra``, the 520 synthetic+dev
tasks are added to memory, except those of a held-out customer (they would leak the answer).

Metrics per query, before execution:
- first three tools (consecutive repeats collapsed, as in ``family_seq``): exact prefix, and
  accuracy at positions 1..3 where a missing position is the answer "no tool";
- family = domain + the set of state-changing tools (the dataset's own definition; the
  state-changing tool names are read from the ``family`` labels, a scoring rule, not an input),
  accuracy and macro-F1.

Baselines: the majority answer per domain; the nearest TF-IDF neighbour's (same domain first).
The predictor's family is the family of its most probable tool set (tools with P >= 0.5).
Finally it times ``observe`` / ``predict`` / ``predict_sequence`` at thousands of episodes.

    .venv/bin/python benchmarks/probe_tool_predictor.py [--folds 5] [--repeats 3] [--json out]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from episodic_memory.core.models import TaskContext
from episodic_memory.core.text import tokenize
from episodic_memory.core.tool_predictor import ToolPredictor
from quality import context_of, group_of, load, tools_of, write_tools  # same data helpers

DATA = Path(__file__).resolve().parents[2] / "shared" / "evaldata" / "tau_dev.jsonl"
Row = dict[str, Any]
Predictor = Callable[[Row], tuple[list[str], set[str]]]  # query -> (first tools, tool set)


def family(domain: str, tools: set[str], writes: set[str]) -> str:
    chosen = sorted(tools & writes)
    return f"{domain}:{'+'.join(chosen) if chosen else 'no_write'}"


def majority(memory: Sequence[Row], writes: set[str]) -> Predictor:
    by_domain: dict[str, list[Row]] = defaultdict(list)
    for row in memory:
        by_domain[row["context"]["domain"]].append(row)
    answer: dict[str, tuple[list[str], set[str]]] = {}
    for domain, rows in by_domain.items():
        opening = Counter(tuple(tools_of(r)[:3]) for r in rows).most_common(1)[0][0]
        writes_set = Counter(frozenset(set(tools_of(r)) & writes) for r in rows).most_common(1)[0][
            0
        ]
        answer[domain] = (list(opening), set(writes_set))
    return lambda query: answer.get(query["context"]["domain"], ([], set()))


class Tfidf:
    """Plain TF-IDF (log tf, smoothed idf, cosine) over ``core.text`` tokens."""

    def __init__(self, docs: Sequence[str]) -> None:
        self.df: Counter[str] = Counter()
        for doc in docs:
            self.df.update(set(tokenize(doc)))
        self.n = len(docs)
        self.vectors = [self.vector(doc) for doc in docs]

    def vector(self, text: str) -> dict[str, float]:
        tf = Counter(tokenize(text))
        vec = {
            t: (1 + math.log(c)) * (math.log((1 + self.n) / (1 + self.df.get(t, 0))) + 1)
            for t, c in tf.items()
        }
        norm = math.sqrt(sum(x * x for x in vec.values())) or 1.0
        return {t: x / norm for t, x in vec.items()}

    def similarities(self, text: str) -> list[float]:
        query = self.vector(text)
        return [sum(query.get(t, 0.0) * x for t, x in vec.items()) for vec in self.vectors]


def nearest(memory: Sequence[Row], writes: set[str]) -> Predictor:
    index = Tfidf([row["task_description"] for row in memory])

    def predict(query: Row) -> tuple[list[str], set[str]]:
        sims = index.similarities(query["task_description"])
        domain = query["context"]["domain"]
        best = max(
            range(len(memory)), key=lambda i: (memory[i]["context"]["domain"] == domain, sims[i])
        )
        return tools_of(memory[best])[:3], set(tools_of(memory[best]))

    return predict


def tool_predictor(memory: Sequence[Row], writes: set[str]) -> Predictor:
    model = ToolPredictor()
    for row in memory:
        model.observe(
            row["task_description"],
            context_of(row),
            [s["tool"] for s in row["steps"]],
            row["outcome"] == "success",
        )

    def predict(query: Row) -> tuple[list[str], set[str]]:
        ctx = context_of(query)
        likely = {tool for tool, p in model.predict(query["task_description"], ctx) if p >= 0.5}
        return model.predict_sequence(query["task_description"], ctx, n=3), likely

    return predict


METHODS: dict[str, Callable[[Sequence[Row], set[str]], Predictor]] = {
    "majority per domain": majority,
    "nearest TF-IDF neighbour": nearest,
    "ToolPredictor": tool_predictor,
}


def folds(train: Sequence[Row], k: int, seed: int) -> list[tuple[list[Row], list[Row]]]:
    groups = sorted({group_of(row) for row in train})
    random.Random(seed).shuffle(groups)
    fold_of = {group: i % k for i, group in enumerate(groups)}
    return [
        (
            [r for r in train if fold_of[group_of(r)] != f],
            [r for r in train if fold_of[group_of(r)] == f],
        )
        for f in range(k)
    ]


def macro_f1(gold: Sequence[str], predicted: Sequence[str]) -> float:
    scores = []
    for label in set(gold):
        tp = sum(g == p == label for g, p in zip(gold, predicted, strict=True))
        fp = sum(p == label != g for g, p in zip(gold, predicted, strict=True))
        fn = sum(g == label != p for g, p in zip(gold, predicted, strict=True))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return statistics.fmean(scores)


def evaluate(rows: Sequence[Row], k: int, repeats: int) -> list[dict[str, Any]]:
    train = [r for r in rows if r["split"] == "train"]
    extra = [r for r in rows if r["split"] != "train"]
    writes = write_tools(rows)
    results = []
    for with_extra in (False, True):
        for name, build in METHODS.items():
            hits: dict[str, list[float]] = defaultdict(list)
            gold_fam: list[str] = []
            pred_fam: list[str] = []
            for seed in range(repeats):
                for memory, queries in folds(train, k, seed):
                    if with_extra:
                        held = {group_of(q) for q in queries}
                        memory = memory + [r for r in extra if group_of(r) not in held]
                    predict = build(memory, writes)
                    for query in queries:
                        opening, tools = predict(query)
                        gold = tools_of(query)[:3]
                        hits["exact"].append(opening[:3] == gold)
                        for pos in range(3):
                            want = gold[pos] if pos < len(gold) else None
                            got = opening[pos] if pos < len(opening) else None
                            hits[f"pos{pos + 1}"].append(want == got)
                        gold_fam.append(query["family"])
                        pred_fam.append(family(query["context"]["domain"], tools, writes))
            row = {key: statistics.fmean(values) for key, values in hits.items()}
            row["family_acc"] = statistics.fmean(
                g == p for g, p in zip(gold_fam, pred_fam, strict=True)
            )
            row["family_f1"] = macro_f1(gold_fam, pred_fam)
            results.append(
                {"memory": "train+extra" if with_extra else "train", "method": name, **row}
            )
    return results


def _percentiles(samples_s: Sequence[float]) -> tuple[float, float]:
    ordered = sorted(samples_s)
    return ordered[len(ordered) // 2] * 1e6, ordered[int(len(ordered) * 0.99)] * 1e6


def timing(rows: Sequence[Row], episodes: int, seed: int = 0) -> dict[str, Any]:
    """Costs at ``episodes`` stored episodes, pessimistic: one domain, growing vocabulary and
    tool-set classes (real descriptions plus 5 random words; tools randomly renamed).

    CPU time of the calling thread, so other processes on a shared machine do not inflate it.
    """
    rng = random.Random(seed)
    letters = "bcdfghjklmnpqrstvwxz"  # no vowels at the end: words the stemmer leaves alone
    lexicon = ["".join(rng.choices(letters, k=8)) for _ in range(20_000)]
    model = ToolPredictor()
    observe_s = []
    for i in range(episodes):
        row = rows[i % len(rows)]
        text = row["task_description"] + " " + " ".join(rng.sample(lexicon, 5))
        tools = [f"{s['tool']}{rng.randrange(8) if i >= len(rows) else ''}" for s in row["steps"]]
        start = time.thread_time()
        model.observe(text, TaskContext(domain="retail"), tools)
        observe_s.append(time.thread_time() - start)
    ctx = TaskContext(domain="retail")
    queries = [r["task_description"] for r in rows[:300]]
    for text in queries[:20]:  # warm the per-term caches once, as a long-lived service would
        model.predict(text, ctx)
        model.predict_sequence(text, ctx)
    predict_s, sequence_s = [], []
    for text in queries:
        start = time.thread_time()
        model.predict(text, ctx)
        predict_s.append(time.thread_time() - start)
        start = time.thread_time()
        model.predict_sequence(text, ctx)
        sequence_s.append(time.thread_time() - start)
    state = json.dumps(model.to_state())
    domain = model._models["retail"]  # probe only: report model size
    return {
        "episodes": episodes,
        "tool_set_classes": len(domain.sets.labels),
        "prefix_classes": len(domain.prefixes.labels),
        "vocabulary": len(domain.sets.postings),
        "state_mb": round(len(state) / 1e6, 1),
        "observe_us_p50_p99": _percentiles(observe_s),
        "predict_us_p50_p99": _percentiles(predict_s),
        "predict_sequence_us_p50_p99": _percentiles(sequence_s),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--episodes", type=int, default=5000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = load(args.data)
    results = evaluate(rows, args.folds, args.repeats)
    train = sum(row["split"] == "train" for row in rows)
    print(f"grouped {args.folds}-fold x {args.repeats} shuffles over {train} train tasks")
    header = (
        "| memory | method | first-3 exact | pos1 | pos2 | pos3 | family acc | family macro-F1 |"
    )
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    for r in results:
        print(
            f"| {r['memory']} | {r['method']} | {r['exact']:.3f} | {r['pos1']:.3f} | "
            f"{r['pos2']:.3f} | {r['pos3']:.3f} | {r['family_acc']:.3f} | {r['family_f1']:.3f} |"
        )
    cost = timing(rows, args.episodes)
    print()
    print(
        f"cost at {cost['episodes']} episodes in one domain ({cost['tool_set_classes']} tool-set "
        f"classes, {cost['prefix_classes']} prefix classes, {cost['vocabulary']} terms, "
        f"state {cost['state_mb']} MB JSON): p50 / p99 CPU µs"
    )
    for key in ("observe", "predict", "predict_sequence"):
        p50, p99 = cost[f"{key}_us_p50_p99"]
        print(f"  {key:17s} {p50:8.0f} / {p99:8.0f}")
    if args.json:
        args.json.write_text(json.dumps({"quality": results, "cost": cost}, indent=2))


if __name__ == "__main__":
    main()
