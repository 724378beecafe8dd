"""Retrieval and learning quality on real agent tasks, measured through the public API.

Data: ``../shared/evaldata/tau_dev.jsonl`` (see its README, which fixes the protocol). Grouped
k-fold cross-validation over the ``train`` split, grouped by ``group.customer`` (seeded shuffle
of the groups), so no query's near-duplicate sits in memory. With distractors, the 520
synthetic+dev tasks join the memory, except those of a held-out customer.

For each fold a fresh memory is opened (``SelfLearningMemory.open``, in-process by default,
``--backend ray`` for the Ray service) and the memory set is stored the way an agent would:
``start_episode(task_description, context)`` → ``log_steps`` (tool, action, parameters=arguments,
success) → ``complete_episode(outcome)``; then ``settle()``. Only description, context, steps and
outcome reach the memory; ``family`` / ``family_seq`` / ``group`` are scoring-only. Each held-out
task is then asked with ``retrieve_relevant_context(description, context, limit=5)`` (and once
with ``limit=10`` for MRR@10).

Retrieval: relevance of a returned episode is 2 if its ``family_seq`` equals the query's, 1 if
only its ``family`` does. Hit@5, Recall@5 (relevant in top 5 / min(5, #relevant)), MRR@10 and
nDCG@5 (gain 2^rel − 1), macro-averaged over queries with at least one relevant episode in
memory. Baseline: TF-IDF cosine over descriptions (``core.text`` tokens), same domain first.

Learning, before execution: the first three tools (consecutive repeats collapsed; a missing
position means "no tool") are the first three of ``RetrievedContext.suggested_tools``; exact
prefix and per-position accuracy. The family is predicted from the returned episodes: each
episode's tool set is mapped to a family (domain + its state-changing tools; the state-changing
tool names are read from the ``family`` labels — a scoring rule, never an input), and the family
with the most retrieval score behind it wins (a score-weighted kNN vote over the top 5).
Accuracy and macro-F1 over all queries. Baselines: the majority answer per domain, and copying
the nearest TF-IDF neighbour (same domain first).

Settings: the hashing embedder (default) and MiniLM (``IndexConfig(embedder="minilm")``, the
[semantic] extra), each without and with distractors. Spread: ``±`` is the standard deviation
of the per-fold values over folds × repeats (``--repeats`` reshuffles the groups with seeds
0, 1, ...); the "memory − baseline" rows are per-fold paired differences (same folds, same
queries) against TF-IDF for retrieval and against the nearest neighbour for the first tools.
Deterministic: seeded folds and a fixed ingestion order, so repeated runs write the same JSON.

    .venv/bin/python benchmarks/quality.py [--quick] [--folds 5] [--repeats 1]
        [--embedders hashing,minilm] [--backend in_process|ray] [--json out.json]

``--quick`` runs the hashing embedder only (about half a minute per repeat on 2 cores); MiniLM
adds a few minutes per repeat, mostly embedding the distractors once per fold.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from episodic_memory.config import IndexConfig, MemoryConfig, RayConfig
from episodic_memory.core.context import RetrievedContext
from episodic_memory.core.extract import collapse
from episodic_memory.core.models import ExecutionStep, TaskContext, TaskOutcome
from episodic_memory.core.text import tokenize
from episodic_memory.core.tfidf import TfidfIndex
from episodic_memory.memory import SelfLearningMemory

DATA = Path(__file__).resolve().parents[2] / "shared" / "evaldata" / "tau_dev.jsonl"
Row = dict[str, Any]
RETRIEVAL = ("ndcg5", "mrr10", "hit5", "recall5")
OPENING = ("first3", "pos1", "pos2", "pos3")
INGEST_CHUNK = 32  # episodes in flight at once while storing a memory set


# --- data and folds -------------------------------------------------------------------------
def load(path: Path) -> list[Row]:
    with path.open() as handle:
        return [json.loads(line) for line in handle]


def group_of(row: Row) -> str:
    return str(row["group"]["customer"] or row["id"])


def tools_of(row: Row) -> list[str]:
    return list(collapse([step["tool"] for step in row["steps"]]))


def context_of(row: Row) -> TaskContext:
    ctx = row["context"]
    return TaskContext(domain=ctx["domain"], language=ctx.get("language"), tags=ctx.get("tags", []))


def folds(
    train: Sequence[Row], extra: Sequence[Row], k: int, seed: int, distractors: bool
) -> list[tuple[list[Row], list[Row]]]:
    """(memory, queries) per fold; distractors of a held-out customer stay out of memory."""
    groups = sorted({group_of(row) for row in train})
    random.Random(seed).shuffle(groups)
    fold_of = {group: i % k for i, group in enumerate(groups)}
    out = []
    for f in range(k):
        queries = [r for r in train if fold_of[group_of(r)] == f]
        memory = [r for r in train if fold_of[group_of(r)] != f]
        if distractors:
            held = {group_of(q) for q in queries}
            memory += [r for r in extra if group_of(r) not in held]
        out.append((memory, queries))
    return out


def write_tools(rows: Sequence[Row]) -> set[str]:
    """State-changing tool names, read from the ``family`` labels (scoring rule only)."""
    found: set[str] = set()
    for row in rows:
        kind = row["family"].split(":", 1)[1]
        if kind != "no_write":
            found.update(kind.split("+"))
    return found


def family_of(domain: str, tools: Sequence[str], writes: set[str]) -> str:
    chosen = sorted(set(tools) & writes)
    return f"{domain}:{'+'.join(chosen) if chosen else 'no_write'}"


# --- metrics --------------------------------------------------------------------------------
def relevance(query: Row, item: Row) -> int:
    if item["family_seq"] == query["family_seq"]:
        return 2
    return 1 if item["family"] == query["family"] else 0


def retrieval_metrics(top5: Sequence[int], top10: Sequence[int], all_rels: Sequence[int]) -> Row:
    """Metrics of one query from the relevance of its returned lists and of the whole memory."""
    relevant = sum(1 for r in all_rels if r > 0)
    ideal = sorted(all_rels, reverse=True)[:5]
    idcg = sum((2**r - 1) / math.log2(i + 2) for i, r in enumerate(ideal))
    dcg = sum((2**r - 1) / math.log2(i + 2) for i, r in enumerate(top5[:5]))
    first = next((i for i, r in enumerate(top10[:10]) if r > 0), None)
    found = sum(1 for r in top5[:5] if r > 0)
    return {
        "ndcg5": dcg / idcg if idcg else 0.0,
        "mrr10": 1.0 / (first + 1) if first is not None else 0.0,
        "hit5": float(found > 0),
        "recall5": found / min(5, relevant) if relevant else 0.0,
    }


def opening_metrics(predicted: Sequence[str], gold: Sequence[str]) -> Row:
    out: Row = {"first3": float(list(predicted[:3]) == list(gold[:3]))}
    for pos in range(3):
        want = gold[pos] if pos < len(gold) else None
        got = predicted[pos] if pos < len(predicted) else None
        out[f"pos{pos + 1}"] = float(want == got)
    return out


def macro_f1(gold: Sequence[str], predicted: Sequence[str]) -> float:
    scores = []
    for label in set(gold):
        tp = sum(g == p == label for g, p in zip(gold, predicted, strict=True))
        fp = sum(p == label != g for g, p in zip(gold, predicted, strict=True))
        fn = sum(g == label != p for g, p in zip(gold, predicted, strict=True))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return statistics.fmean(scores) if scores else 0.0


def vote_family(episodes: Sequence[tuple[str, Sequence[str], float]], writes: set[str]) -> str:
    """The family with the most retrieval score behind it among (domain, tools, score)."""
    tally: dict[str, float] = defaultdict(float)
    for domain, tools, score in episodes:
        tally[family_of(domain, tools, writes)] += max(score, 1e-9)
    return max(tally.items(), key=lambda item: (item[1], item[0]))[0] if tally else ""


# --- one method's answer to one query -------------------------------------------------------
class Answer:
    """What a method returned for one query: ranked memory rows, first tools, family."""

    def __init__(self, top5: list[str], top10: list[str], opening: list[str], family: str) -> None:
        self.top5, self.top10, self.opening, self.family = top5, top10, opening, family


def tfidf_baselines(memory: Sequence[Row], writes: set[str]) -> dict[str, Callable[[Row], Answer]]:
    """TF-IDF retrieval (same domain first), its nearest neighbour, and the per-domain majority."""
    index = TfidfIndex(tokenize)
    by_id = {row["id"]: row for row in memory}
    for row in memory:
        index.add(row["id"], row["task_description"])
    majority: dict[str, tuple[list[str], str]] = {}
    for domain in {row["context"]["domain"] for row in memory}:
        rows = [r for r in memory if r["context"]["domain"] == domain]
        opening = Counter(tuple(tools_of(r)[:3]) for r in rows).most_common(1)[0][0]
        fams = Counter(family_of(domain, tools_of(r), writes) for r in rows)
        majority[domain] = (list(opening), fams.most_common(1)[0][0])

    def tfidf(query: Row) -> Answer:
        domain = query["context"]["domain"]
        hits = index.search(query["task_description"], len(by_id))
        hits.sort(key=lambda hit: by_id[hit[0]]["context"]["domain"] != domain)  # stable
        ranked = [i for i, _ in hits[:10]]
        best = by_id[ranked[0]] if ranked else None
        opening = tools_of(best)[:3] if best else []
        family = family_of(domain, tools_of(best), writes) if best else ""
        return Answer(ranked[:5], ranked, opening, family)

    def majority_answer(query: Row) -> Answer:
        opening, family = majority.get(query["context"]["domain"], ([], ""))
        return Answer([], [], opening, family)

    return {"TF-IDF": tfidf, "nearest TF-IDF": tfidf, "majority": majority_answer}


async def memory_answers(
    memory: Sequence[Row],
    queries: Sequence[Row],
    config: MemoryConfig,
    backend: str,
    writes: set[str],
) -> dict[str, Answer]:
    """Store ``memory`` through the public API, settle, then ask every query."""
    mem = await SelfLearningMemory.open(config, backend=backend)  # type: ignore[arg-type]
    try:
        row_of: dict[str, str] = {}

        async def store(row: Row) -> None:
            eid = await mem.start_episode(row["task_description"], context_of(row))
            row_of[eid] = row["id"]
            steps = [
                ExecutionStep(
                    tool=s["tool"],
                    action=s.get("action", ""),
                    parameters=s.get("arguments") or {},
                    success=bool(s.get("success", True)),
                )
                for s in row["steps"]
            ]
            await mem.log_steps(eid, steps)
            await mem.complete_episode(eid, _outcome(row["outcome"]))

        for start in range(0, len(memory), INGEST_CHUNK):
            await asyncio.gather(*(store(r) for r in memory[start : start + INGEST_CHUNK]))
        await mem.settle()
        answers: dict[str, Answer] = {}
        for query in queries:
            ctx = context_of(query)
            five = await mem.retrieve_relevant_context(query["task_description"], ctx, limit=5)
            ten = await mem.retrieve_relevant_context(query["task_description"], ctx, limit=10)
            answers[query["id"]] = _answer(five, ten, row_of, writes)
        return answers
    finally:
        await mem.close(stop_service=True)


def _outcome(value: Any) -> TaskOutcome:
    verdict = value if isinstance(value, str) else value.get("verdict", "success")
    if verdict == "success":
        return TaskOutcome.success()
    if verdict == "failure":
        return TaskOutcome.failure("recorded as failed")
    return TaskOutcome(verdict=verdict)


def _answer(
    five: RetrievedContext, ten: RetrievedContext, row_of: dict[str, str], writes: set[str]
) -> Answer:
    family = vote_family([(e.domain, e.tools, e.score) for e in five.episodes], writes)
    return Answer(
        [row_of[e.episode_id] for e in five.episodes],
        [row_of[e.episode_id] for e in ten.episodes],
        [s.tool for s in five.suggested_tools[:3]],
        family,
    )


# --- scoring a fold and summarising ---------------------------------------------------------
def score_fold(
    memory: Sequence[Row], queries: Sequence[Row], answers: Callable[[Row], Answer]
) -> tuple[list[Row], list[Row], list[tuple[str, str]]]:
    by_id = {row["id"]: row for row in memory}
    retrieval, learning, families = [], [], []
    for query in queries:
        answer = answers(query)
        rels = [relevance(query, row) for row in memory]
        if any(rels):
            top5 = [relevance(query, by_id[i]) for i in answer.top5]
            top10 = [relevance(query, by_id[i]) for i in answer.top10]
            retrieval.append(retrieval_metrics(top5, top10, rels))
        learning.append(opening_metrics(answer.opening, tools_of(query)[:3]))
        families.append((query["family"], answer.family))
    return retrieval, learning, families


class Tally:
    """Per-query results pooled over folds, plus per-fold means for the spread."""

    def __init__(self) -> None:
        self.queries: dict[str, list[float]] = defaultdict(list)
        self.folds: dict[str, list[float]] = defaultdict(list)
        self.families: list[tuple[str, str]] = []

    def add(
        self, retrieval: list[Row], learning: list[Row], families: list[tuple[str, str]]
    ) -> None:
        for rows, keys in ((retrieval, RETRIEVAL), (learning, OPENING)):
            for key in keys:
                values = [row[key] for row in rows]
                if values:
                    self.queries[key].extend(values)
                    self.folds[key].append(statistics.fmean(values))
        gold, pred = [g for g, _ in families], [p for _, p in families]
        self.families.extend(families)
        self.folds["family_acc"].append(statistics.fmean(g == p for g, p in families))
        self.folds["family_f1"].append(macro_f1(gold, pred))

    def summary(self) -> Row:
        out: Row = {}
        gold, pred = [g for g, _ in self.families], [p for _, p in self.families]
        pooled = {key: statistics.fmean(v) for key, v in self.queries.items() if v}
        pooled["family_acc"] = statistics.fmean(g == p for g, p in self.families)
        pooled["family_f1"] = macro_f1(gold, pred)
        for key, value in pooled.items():
            spread = self.folds[key]
            out[key] = {
                "mean": round(value, 4),
                "sd": round(statistics.stdev(spread), 4) if len(spread) > 1 else 0.0,
            }
        out["queries"] = len(self.families)
        out["retrieval_queries"] = len(self.queries.get("ndcg5", []))
        return out


def run(args: argparse.Namespace) -> list[Row]:
    rows = load(args.data)
    train = [r for r in rows if r["split"] == "train"]
    extra = [r for r in rows if r["split"] != "train"]
    writes = write_tools(rows)
    results: list[Row] = []
    for embedder in args.embedders:
        for distractors in (False, True):
            setting = f"{embedder}{' +distractors' if distractors else ''}"
            tallies: dict[str, Tally] = defaultdict(Tally)
            started = time.perf_counter()
            for seed in range(args.repeats):
                for number, (memory, queries) in enumerate(
                    folds(train, extra, args.folds, seed, distractors), start=1
                ):
                    config = _config(args, embedder, f"q{seed}f{number}")
                    with tempfile.TemporaryDirectory(prefix="quality-") as tmp:
                        config = config.model_copy(update={"data_dir": Path(tmp)})
                        answers = asyncio.run(
                            memory_answers(memory, queries, config, args.backend, writes)
                        )
                    methods: dict[str, Callable[[Row], Answer]] = {
                        "memory": lambda q, a=answers: a[q["id"]],  # type: ignore[misc]
                        **tfidf_baselines(memory, writes),
                    }
                    for name, answer in methods.items():
                        tallies[name].add(*score_fold(memory, queries, answer))
                    _progress(
                        f"{setting}: repeat {seed + 1}/{args.repeats} fold {number}/{args.folds} "
                        f"({len(memory)} episodes, {len(queries)} queries, "
                        f"{time.perf_counter() - started:.0f}s)"
                    )
            for name, tally in tallies.items():
                results.append({"setting": setting, "method": name, **tally.summary()})
            results.append(
                {
                    "setting": setting,
                    "method": "memory − baseline",
                    **paired(tallies["memory"], tallies["TF-IDF"], RETRIEVAL),
                    **paired(tallies["memory"], tallies["nearest TF-IDF"], OPENING),
                }
            )
    return results


def paired(ours: Tally, baseline: Tally, keys: Sequence[str]) -> Row:
    """Per-fold differences (the same folds and queries for both), mean and sd."""
    out: Row = {}
    for key in keys:
        deltas = [a - b for a, b in zip(ours.folds[key], baseline.folds[key], strict=True)]
        if deltas:
            sd = statistics.stdev(deltas) if len(deltas) > 1 else 0.0
            out[key] = {"mean": round(statistics.fmean(deltas), 4), "sd": round(sd, 4)}
    return out


def _config(args: argparse.Namespace, embedder: str, name: str) -> MemoryConfig:
    return MemoryConfig(
        index=IndexConfig(embedder=embedder),  # type: ignore[arg-type]
        ray=RayConfig(memory_name=f"quality-{name}", num_cpus=2),
    )


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _cell(row: Row, key: str) -> str:
    value = row.get(key)
    return f"{value['mean']:.3f} ± {value['sd']:.3f}" if isinstance(value, dict) else "—"


def print_tables(results: Sequence[Row]) -> None:
    delta = "memory − baseline"
    retrieval = [r for r in results if r["method"] in ("memory", "TF-IDF", delta)]
    learning = [
        r for r in results if r["method"] in ("memory", "nearest TF-IDF", "majority", delta)
    ]
    for title, rows, keys in (
        ("Retrieval", retrieval, RETRIEVAL),
        ("Learning", learning, (*OPENING, "family_acc", "family_f1")),
    ):
        print(f"\n{title}")
        header = ["setting", "method", *keys]
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for row in rows:
            cells = [row["setting"], row["method"], *(_cell(row, key) for key in keys)]
            print("| " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=1, help="seeded group shuffles")
    parser.add_argument("--embedders", default="hashing,minilm")
    parser.add_argument("--backend", choices=("in_process", "ray"), default="in_process")
    parser.add_argument("--quick", action="store_true", help="hashing embedder only")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    args.embedders = ["hashing"] if args.quick else args.embedders.split(",")
    started = time.perf_counter()
    if args.backend == "ray":
        from episodic_memory.actors.client import ensure_ray

        ensure_ray(_config(args, "hashing", "probe"))
    try:
        results = run(args)
    finally:
        if args.backend == "ray":
            import ray

            ray.shutdown()
    print(
        f"grouped {args.folds}-fold x {args.repeats} over tau_dev train "
        f"({time.perf_counter() - started:.0f}s, backend {args.backend}); ± = sd over folds"
    )
    print_tables(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
