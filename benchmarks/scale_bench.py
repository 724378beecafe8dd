"""Scale benchmark: one memory grown to 100k and 1M episodes on this node, through Ray.

    .venv/bin/python benchmarks/scale_bench.py --sizes 100000,1000000 --json scale.json

Episodes come from ``scale_data`` (the 624 real evaldata tasks with every detail re-drawn:
deterministic, mostly unique texts, real tool sets). One local Ray (2 CPUs, loopback), the
embedded default (libSQL ``file:``, LMDB, FAISS, hashing embedder 1024-d). The memory grows
in steps; at each size:

- **ingest**: ``bulk_ingest`` of the new episodes (``learn=False``: patterns and heuristics
  are not learned from them; the index and the tool predictor are), episodes/s and steps/s,
  against raw sqlite3 ``executemany`` of the same header and step rows into an empty table
  set of the same schema (the physical reference) measured on the first ``--reference`` of
  them;
- **index**: seconds from the end of ingest until the background approximate build has
  swapped in (``index_building`` false), and the index actor's own memory estimate;
- **memory**: resident set (RSS) of every Ray actor process of the memory, by class;
- **retrieve**: ``retrieve_relevant_context(limit=5)`` latency p50/p95/p99 for ``--queries``
  new tasks after ``--warmup`` others (the first queries fill caches), sequentially. After the
  warm-up the driver freezes its heap (``gc.freeze``; ``--no-freeze-driver`` measures
  without): a full collection of the ~130k objects Ray and pydantic leave in any Python
  caller takes 50–70 ms and would otherwise land on a query every few hundred;
- **retrieve while learning** (``--live-rate N``, 0 turns it off): the same latency, for
  ``--live-seconds``, while agents in another process complete N new episodes a second through
  the public API (start, log_step, complete: stored, embedded, learned, the index saved as it
  changes), the way a fleet keeps writing while it reads;
- **recall@10** of the served vector index against exact inner-product search over every
  stored vector (read from libSQL), on ``--recall-queries`` tasks; a hit counts when it
  scores at least the exact 10th best (re-drawn details make near-ties common).

Not in CI: a 1M run takes tens of minutes. Numbers are noisy on a shared 2-core machine.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # loopback only, before Ray starts

import numpy as np
import ray

sys.path.insert(0, str(Path(__file__).resolve().parent))
import scale_data
from episodic_memory.actors.service import ServiceNames
from episodic_memory.config import IndexConfig, LearnerConfig, MemoryConfig, RayConfig
from episodic_memory.index.embedders import HashingEmbedder
from episodic_memory.index.service import embedding_text
from episodic_memory.memory import SelfLearningMemory
from episodic_memory.storage import sql
from episodic_memory.storage.migrate import load_migrations, split_statements

BENCHMARKS = str(Path(__file__).resolve().parent)
ACTOR_CLASSES = ("StorageActor", "IndexActor", "EpisodeHost", "LearnerActor")


def say(message: str) -> None:
    print(f"[scale_bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


def actor_rss_mb() -> dict[str, float]:
    """RSS of each Ray actor process of the memory, by actor class (summed per class)."""
    found: dict[str, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            status = (entry / "status").read_text()
        except OSError:
            continue
        name = next((c for c in ACTOR_CLASSES if title.startswith(f"ray::{c}")), None)
        if name is None:
            continue
        rss = next(
            (int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0
        )
        found[name] = round(found.get(name, 0.0) + rss / 1024, 1)
    return found


def reference_rows_per_s(count: int) -> dict[str, float]:
    """Raw sqlite3 ``executemany`` of the rows ingest writes (steps, headers, full-text rows),
    2,000 episodes a transaction, into a fresh database of the same schema."""
    episodes = [scale_data.episode(n) for n in range(count)]
    statements = [sql.upsert_episode(e) for e in episodes]
    steps = [[sql.insert_step(e.episode_id, s) for s in e.steps] for e in episodes]
    with tempfile.TemporaryDirectory() as folder:
        db = sqlite3.connect(Path(folder) / "ref.db", isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        for migration in load_migrations():
            for statement in split_statements(migration.sql):
                db.execute(statement)
        started = time.perf_counter()
        for at in range(0, count, 2000):
            chunk = range(at, min(at + 2000, count))
            db.execute("BEGIN")
            db.executemany(steps[at][0][0], [s[1] for n in chunk for s in steps[n]])
            for part in (0, 2):  # the header upsert, then its full-text row
                db.executemany(statements[at][part][0], [statements[n][part][1] for n in chunk])
            db.execute("COMMIT")
        elapsed = time.perf_counter() - started
        db.close()
    rows = count + sum(len(s) for s in steps)
    return {"episodes_per_s": round(count / elapsed), "rows_per_s": round(rows / elapsed)}


async def wait_for_index(
    memory: SelfLearningMemory, timeout_s: float
) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    while True:
        index = (await memory.stats())["index"]
        if not index.get("index_building") or time.perf_counter() - started > timeout_s:
            return time.perf_counter() - started, index
        await asyncio.sleep(1.0)


def exact_top10_scores(folder: Path, queries: np.ndarray) -> np.ndarray:
    """The exact 10th-best inner product per query, over every stored vector."""
    db = sqlite3.connect(f"file:{folder / 'memory.db'}?mode=ro", uri=True)
    kth = np.full(len(queries), -np.inf, dtype=np.float32)
    best = np.full((len(queries), 10), -np.inf, dtype=np.float32)
    cursor = db.execute("SELECT vector FROM embeddings")
    while rows := cursor.fetchmany(50_000):
        block = np.frombuffer(b"".join(r[0] for r in rows), dtype="<f4").reshape(len(rows), -1)
        scores = queries @ block.T
        best = -np.sort(-np.concatenate([best, scores], axis=1), axis=1)[:, :10]
    db.close()
    kth[:] = best[:, 9]
    return kth


def exact_scores(folder: Path, query: np.ndarray, ids: list[str]) -> list[float]:
    """Exact inner products of ``query`` with the stored vectors of ``ids``."""
    if not ids:
        return []
    db = sqlite3.connect(f"file:{folder / 'memory.db'}?mode=ro", uri=True)
    marks = ", ".join("?" for _ in ids)
    rows = dict(
        db.execute(f"SELECT episode_id, vector FROM embeddings WHERE episode_id IN ({marks})", ids)
    )
    db.close()
    return [float(np.frombuffer(rows[i], dtype="<f4") @ query) for i in ids if i in rows]


async def recall_at_10(memory: SelfLearningMemory, folder: Path, count: int) -> float:
    """Share of the served top 10 whose exact score reaches the exact 10th best.

    Exact scores, not the index's: a compressed index (SQ8) reports approximate ones.
    """
    embedder = HashingEmbedder(memory.config.index.hashing_dim)
    tasks = [scale_data.query(5_000_000 + i) for i in range(count)]
    queries = embedder.embed([embedding_text(d, c) for d, c in tasks])
    kth = await asyncio.to_thread(exact_top10_scores, folder, queries)
    names = ServiceNames.of(memory.config)
    index = ray.get_actor(names.index, namespace=names.namespace)
    hits = 0
    for (description, context), query, floor in zip(tasks, queries, kth, strict=True):
        found = await index.search.remote(description, context, 10)
        scores = exact_scores(folder, query, [episode_id for episode_id, _ in found[:10]])
        hits += sum(1 for score in scores if score >= floor - 1e-5)
    return round(hits / (10 * count), 4)


async def grow(
    memory: SelfLearningMemory, have: int, size: int, args: argparse.Namespace
) -> dict[str, Any]:
    out: dict[str, Any] = {"episodes": size}
    last = [time.perf_counter()]

    def progress(done: int, total: int | None) -> None:
        if time.perf_counter() - last[0] > 10:
            last[0] = time.perf_counter()
            say(f"ingested {have + done:,} / {size:,}")

    out["ingest"] = None  # already that large (a re-measure): nothing to ingest
    if have < size:
        steps_before = int((await memory.stats())["storage"]["tables"].get("steps", 0))
        started = time.perf_counter()
        report = await memory.bulk_ingest(
            scale_data.episodes(size, start=have),
            batch_size=args.batch,
            progress=progress,
            learn=False,
        )
        elapsed = time.perf_counter() - started
        tables = (await memory.stats())["storage"]["tables"]
        steps = int(tables.get("steps", 0)) - steps_before
        out["ingest"] = {
            "episodes": report.episodes,
            "seconds": round(elapsed, 1),
            "episodes_per_s": round(report.episodes / elapsed),
            "rows_per_s": round((report.episodes + steps) / elapsed),
        }
        say(f"ingest done: {out['ingest']}")
    build_s, index = await wait_for_index(memory, args.index_timeout)
    out["index"] = {
        "kind": index.get("index_kind"),
        "vectors": index.get("vectors"),
        "build_wait_s": round(build_s, 1),
        "memory_mb": round(float(index.get("memory_bytes") or 0) / 2**20, 1),
    }
    say(f"index: {out['index']}")
    out["rss_mb"] = actor_rss_mb()
    tasks = [scale_data.query(i) for i in range(args.warmup + args.queries)]
    for description, context in tasks[: args.warmup]:
        await memory.retrieve_relevant_context(description, context, limit=5)
    if args.freeze_driver:  # what a latency-sensitive caller does once it has started
        gc.collect()
        gc.freeze()
    samples = []
    for description, context in tasks[args.warmup :]:
        begun = time.perf_counter()
        await memory.retrieve_relevant_context(description, context, limit=5)
        samples.append((time.perf_counter() - begun) * 1000)
    out["retrieve_ms"] = {
        "p50": pct(samples, 0.5),
        "p95": pct(samples, 0.95),
        "p99": pct(samples, 0.99),
    }
    out["driver_heap_frozen"] = args.freeze_driver
    say(f"retrieve: {out['retrieve_ms']}")
    if args.live_rate > 0:
        first = args.warmup + args.queries
        out["while_learning"] = await retrieve_while_learning(memory, first, max(have, size), args)
        say(f"while learning: {out['while_learning']}")
    out["recall_at_10"] = await recall_at_10(memory, args.data_dir, args.recall_queries)
    say(f"recall@10: {out['recall_at_10']}")
    return out


async def _live_agents(
    memory: SelfLearningMemory, data: Any, first: int, rate: float, seconds: float
) -> tuple[int, list[float]]:
    """Complete ``rate`` new episodes a second through the agent API for ``seconds``."""
    done, completes = 0, []
    started = time.perf_counter()
    try:
        while time.perf_counter() - started < seconds:
            source = data.episode(first + done)
            episode_id = await memory.start_episode(source.task_description, source.context)
            for step in source.steps:
                await memory.log_step(episode_id, step)
            begun = time.perf_counter()
            assert source.outcome is not None
            await memory.complete_episode(episode_id, source.outcome)
            completes.append((time.perf_counter() - begun) * 1000)
            done += 1
            await asyncio.sleep(max(0.0, started + done / rate - time.perf_counter()))
    finally:
        await memory.close()  # this handle only; the service keeps running
    return done, completes


@ray.remote(num_cpus=0)
def live_agents(
    memory: SelfLearningMemory, first: int, rate: float, seconds: float
) -> tuple[int, list[float]]:
    """The writing agents, in a process of their own as in a fleet (not the querying one)."""
    sys.path.insert(0, BENCHMARKS)  # a Ray worker: scale_data is not on its path
    import scale_data as data

    return asyncio.run(_live_agents(memory, data, first, rate, seconds))


async def retrieve_while_learning(
    memory: SelfLearningMemory, first_task: int, stored: int, args: argparse.Namespace
) -> dict[str, Any]:
    writer = live_agents.remote(memory, stored + 10_000_000, args.live_rate, args.live_seconds)
    samples = []
    begun_all = time.perf_counter()
    task = first_task
    while time.perf_counter() - begun_all < args.live_seconds:
        description, context = scale_data.query(task)
        task += 1
        begun = time.perf_counter()
        await memory.retrieve_relevant_context(description, context, limit=5)
        samples.append((time.perf_counter() - begun) * 1000)
    written, completes = await writer
    return {
        "seconds": round(time.perf_counter() - begun_all, 1),
        "queries": len(samples),
        "episodes_completed": written,
        "retrieve_ms": {
            "p50": pct(samples, 0.5),
            "p95": pct(samples, 0.95),
            "p99": pct(samples, 0.99),
        },
        "complete_ms": {"p50": pct(completes, 0.5), "p99": pct(completes, 0.99)},
    }


def table(results: list[dict[str, Any]], reference: dict[str, float]) -> str:
    rows = [["", *[f"{r['episodes']:,} episodes" for r in results]]]

    def row(label: str, pick: Any) -> None:
        rows.append([label, *[pick(r) for r in results]])

    row(
        "ingest episodes/s (rows/s)",
        lambda r: (
            f"{r['ingest']['episodes_per_s']:,} ({r['ingest']['rows_per_s']:,})"
            if r["ingest"]
            else "(stored earlier)"
        ),
    )
    row(
        "  raw sqlite3 executemany",
        lambda r: f"{reference['episodes_per_s']:,} ({reference['rows_per_s']:,})",
    )
    row("index kind / vectors", lambda r: f"{r['index']['kind']} / {r['index']['vectors']:,}")
    row("index build after ingest s", lambda r: f"{r['index']['build_wait_s']}")
    row("index memory (estimate) MB", lambda r: f"{r['index']['memory_mb']:,}")
    for name in ACTOR_CLASSES:
        row(f"RSS {name} MB", lambda r, n=name: f"{r['rss_mb'].get(n, 0):,}")
    row("retrieve p50 / p95 / p99 ms", lambda r: "{p50} / {p95} / {p99}".format(**r["retrieve_ms"]))
    if any("while_learning" in r for r in results):
        row(
            "  while learning: p50 / p95 / p99 ms",
            lambda r: (
                "{p50} / {p95} / {p99}".format(**r["while_learning"]["retrieve_ms"])
                if "while_learning" in r
                else "-"
            ),
        )
        row(
            "  episodes completed meanwhile (s)",
            lambda r: (
                f"{r['while_learning']['episodes_completed']} ({r['while_learning']['seconds']})"
                if "while_learning" in r
                else "-"
            ),
        )
    row("recall@10 approximate vs exact", lambda r: f"{r['recall_at_10']}")
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    config = MemoryConfig(
        data_dir=args.data_dir,
        index=IndexConfig(ivf_nprobe=args.nprobe, approximate_encoding=args.encoding),
        learner=LearnerConfig(pool_size=1),
        ray=RayConfig(namespace="scale-bench", memory_name="scale"),
    )
    memory = await SelfLearningMemory.open(config)
    results = []
    try:
        have = int((await memory.stats())["storage"]["tables"].get("episodes", 0))
        for size in args.sizes:
            if size <= have and size != args.sizes[-1]:
                continue  # not larger than what is stored; the largest size is re-measured
            results.append(await grow(memory, have, size, args))
            have = max(have, size)
    finally:
        await memory.close(stop_service=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--data-dir", type=Path, default=None, help="kept; default a temp dir")
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--recall-queries", type=int, default=100)
    parser.add_argument("--live-rate", type=float, default=0.0, help="episodes/s while measuring")
    parser.add_argument("--live-seconds", type=float, default=90.0)
    parser.add_argument("--reference", type=int, default=20_000, help="episodes for raw sqlite3")
    parser.add_argument("--index-timeout", type=float, default=1800.0)
    parser.add_argument("--nprobe", type=int, default=IndexConfig().ivf_nprobe)
    parser.add_argument(
        "--encoding",
        choices=("float32", "fp16", "sq8"),
        default=IndexConfig().approximate_encoding,
        help="IVF vector encoding (a change rebuilds from the stored embeddings)",
    )
    parser.add_argument(
        "--no-freeze-driver",
        dest="freeze_driver",
        action="store_false",
        help="leave the driver's garbage collector as it is (see the docstring)",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    args.sizes = sorted(int(s) for s in args.sizes.split(","))
    with tempfile.TemporaryDirectory(prefix="scale-bench-") as scratch:
        args.data_dir = args.data_dir or Path(scratch) / "memory"
        say(f"raw sqlite3 reference on {args.reference:,} episodes")
        reference = reference_rows_per_s(args.reference)
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            results = asyncio.run(run(args))
        finally:
            ray.shutdown()
    print(table(results, reference))
    if args.json:
        machine = {"cpus": os.cpu_count(), "python": platform.python_version()}
        args.json.write_text(
            json.dumps({"machine": machine, "reference": reference, "results": results}, indent=2)
        )


if __name__ == "__main__":
    main()
