"""Bulk ingest throughput: ``bulk_ingest`` in-process and through Ray, against raw sqlite3.

    .venv/bin/python benchmarks/ingest_bench.py [--episodes 20000] [--batch-size 1000]
        [--backends raw,prepare,in_process,ray] [--no-learn] [--json ingest.json]

Input: ``--episodes`` completed episodes from ``demo.generate_episode(seed)`` (about six steps
each: the demo's workflows), as plain JSON dicts with fixed ids and times — what a file import
hands to ``bulk_ingest`` — generated before any timer starts. Rows counted for every rate are
step rows plus episode rows.

- ``raw executemany (steps+headers)``: the physical reference — the same step and episode rows
  (same columns, same JSON, built by ``storage.sql`` from the prepared episodes outside the
  timer) inserted with stdlib ``sqlite3.executemany``, one transaction per batch, into a fresh
  database with our schema (migrations applied: indexes, FTS table), WAL + synchronous=NORMAL.
- ``raw executemany (all)``: the same plus what ingest also writes per episode — the full-text
  row (FTS delete + insert) and the vector — i.e. everything ``bulk_ingest`` writes, minus all
  of its CPU work.
- ``prepare (1 thread)``: ingest's CPU work alone — validation, redaction, reward, reflection,
  task type, building the rows — on one thread, no I/O.
- ``bulk_ingest in_process`` / ``bulk_ingest ray (hosted)``: the public call, fresh memory each
  (libSQL file, LMDB, FAISS, hashing embedder); Ray is local, 2 CPUs, loopback only, and runs
  one task per batch (``actors/ingest_task.py``).

``CPU ms/episode`` is this process's CPU time (every thread) per episode where that is the whole
cost — prepare and in-process ingest: it does not depend on what else the machine runs.

The machine has 2 cores and is shared: other benchmarks may run at the same time, so rates vary
by tens of percent between runs; the ratios to the raw reference measured in the same run are
the steadier number.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # loopback only, before Ray starts

from episodic_memory.config import LearnerConfig, MemoryConfig, RayConfig
from episodic_memory.demo import generate_episode
from episodic_memory.index.service import IndexService
from episodic_memory.ingest import prepare_batch
from episodic_memory.memory import SelfLearningMemory
from episodic_memory.storage import sql
from episodic_memory.storage.executors import SqliteExecutor
from episodic_memory.storage.migrate import apply_migrations

T0 = datetime(2025, 1, 1, tzinfo=UTC)
BACKENDS = ("raw", "prepare", "in_process", "ray")


def records(count: int) -> list[dict[str, Any]]:
    """Deterministic completed episodes as JSON dicts (ids and times fixed by the seed)."""
    out = []
    for seed in range(count):
        task, context, steps, outcome = generate_episode(seed)
        started = T0 + timedelta(seconds=seed)
        out.append(
            {
                "episode_id": str(uuid.UUID(int=seed + 1)),
                "task_description": task,
                "context": context.model_dump(mode="json"),
                "status": "completed",
                "started_at": started.isoformat(),
                "steps": [
                    s.model_dump(mode="json") | {"timestamp": started.isoformat()} for s in steps
                ],
                "outcome": outcome.model_dump(mode="json"),
            }
        )
    return out


def batches(items: list[dict[str, Any]], size: int) -> Iterator[list[tuple[str, object]]]:
    for start in range(0, len(items), size):
        yield [
            (f"episodes[{start + i}]", item) for i, item in enumerate(items[start : start + size])
        ]


def config(folder: Path, batch_size: int, name: str = "ingest-bench") -> MemoryConfig:
    return MemoryConfig(
        data_dir=folder,
        learner=LearnerConfig(pool_size=1),
        ray=RayConfig(memory_name=name, namespace="ingest-bench", num_cpus=2, num_hosts=1),
    )


def rate(
    name: str, episodes: int, rows: int, seconds: float, cpu_s: float | None = None
) -> dict[str, Any]:
    """``cpu_s``: CPU time of this process (all its threads), when that is the whole cost."""
    return {
        "name": name,
        "episodes": episodes,
        "rows": rows,
        "seconds": round(seconds, 3),
        "episodes_per_s": round(episodes / seconds),
        "rows_per_s": round(rows / seconds),
        "cpu_ms_per_episode": None if cpu_s is None else round(cpu_s * 1000 / episodes, 3),
    }


# --- the references ---------------------------------------------------------------------------
async def fresh_database(path: Path) -> None:
    executor = SqliteExecutor(str(path))
    try:
        await apply_migrations(executor)
    finally:
        await executor.close()


async def raw(items: list[dict[str, Any]], size: int, folder: Path) -> list[dict[str, Any]]:
    """Both raw references; the rows are built outside the timer, batch by batch."""
    limits = MemoryConfig().limits
    index = IndexService(MemoryConfig().index)
    paths = {"headers": folder / "raw-headers.db", "all": folder / "raw-all.db"}
    for path in paths.values():
        await fresh_database(path)
    conns = {k: sqlite3.connect(p, isolation_level=None) for k, p in paths.items()}
    for conn in conns.values():
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
    spent = dict.fromkeys(conns, 0.0)
    rows = 0
    for batch in batches(items, size):
        prepared = prepare_batch(batch, learn=True, limits=limits)
        vectors = {v.episode_id: v for v in index.add_episodes(prepared.episodes)}
        steps = [sql.insert_step(e.episode_id, s) for e in prepared.episodes for s in e.steps]
        headers = [sql.upsert_episode(e) for e in prepared.episodes]
        embeddings = [sql.upsert_embedding(vectors[e.episode_id]) for e in prepared.episodes]
        rows += len(steps) + len(headers)
        for kind, conn in conns.items():
            began = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(steps[0][0], [params for _, params in steps])
            conn.executemany(headers[0][0][0], [h[0][1] for h in headers])
            if kind == "all":
                conn.executemany(embeddings[0][0], [params for _, params in embeddings])
                for part in (1, 2):  # FTS: delete the old row, insert the new (reads the steps)
                    conn.executemany(headers[0][part][0], [h[part][1] for h in headers])
            conn.execute("COMMIT")
            spent[kind] += time.perf_counter() - began
    for conn in conns.values():
        conn.close()
    return [
        rate("raw executemany (steps+headers)", len(items), rows, spent["headers"]),
        rate("raw executemany (all)", len(items), rows, spent["all"]),
    ]


def prepare_only(items: list[dict[str, Any]], size: int) -> dict[str, Any]:
    limits = MemoryConfig().limits
    spent, cpu, rows = 0.0, 0.0, 0
    for batch in batches(items, size):
        began, began_cpu = time.perf_counter(), time.process_time()
        prepared = prepare_batch(batch, learn=True, limits=limits)
        spent += time.perf_counter() - began
        cpu += time.process_time() - began_cpu
        rows += sum(len(r.steps) + 1 for r in prepared.rows)
    return rate("prepare (1 thread, no I/O)", len(items), rows, spent, cpu)


# --- the public call --------------------------------------------------------------------------
async def ingest(
    backend: str, items: list[dict[str, Any]], size: int, folder: Path, learn: bool
) -> dict[str, Any]:
    name = f"ingest-bench-{uuid.uuid4().hex[:8]}"
    memory = await SelfLearningMemory.open(config(folder, size, name), backend=backend)  # type: ignore[arg-type]
    try:
        began, began_cpu = time.perf_counter(), time.process_time()
        report = await memory.bulk_ingest(items, batch_size=size, learn=learn)
        spent, cpu = time.perf_counter() - began, time.process_time() - began_cpu
    finally:
        await memory.close(stop_service=True)
    assert report.episodes == len(items), report
    if backend == "in_process":
        label, whole = "bulk_ingest in_process", cpu
    else:  # the work is in Ray workers and actors, not in this process
        label, whole = "bulk_ingest ray (hosted)", None
    return rate(label, report.episodes, report.steps + report.episodes, spent, whole)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    items = records(args.episodes)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="ingest-bench-") as tmp:
        root = Path(tmp)
        if "raw" in args.backends:
            results += await raw(items, args.batch_size, root)
        if "prepare" in args.backends:
            results.append(prepare_only(items, args.batch_size))
        for backend in ("in_process", "ray"):
            if backend in args.backends:
                results.append(
                    await ingest(backend, items, args.batch_size, root / backend, args.learn)
                )
    reference = {r["name"]: r["rows_per_s"] for r in results}
    for r in results:
        for key, name in (
            ("vs_raw_all", "raw executemany (all)"),
            ("vs_raw_rows", "raw executemany (steps+headers)"),
        ):
            if name in reference:
                r[key] = round(r["rows_per_s"] / reference[name], 3)
    return {
        "episodes": args.episodes,
        "batch_size": args.batch_size,
        "learn": "background" if args.learn else "skipped",
        "steps_per_episode": round(sum(len(i["steps"]) for i in items) / len(items), 2),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "sqlite": sqlite3.sqlite_version,
        },
        "results": results,
    }


def table(report: dict[str, Any]) -> str:
    head = (
        f"{report['episodes']} episodes x {report['steps_per_episode']} steps, batches of "
        f"{report['batch_size']}, learning {report['learn']}; rows = steps + episodes\n"
    )
    lines = [
        f"| {'what':34} | {'seconds':>8} | {'episodes/s':>10} | {'rows/s':>8} "
        f"| {'vs raw (all)':>12} | {'vs raw (steps+headers)':>22} | {'CPU ms/episode':>14} |",
        f"|{'-' * 36}|{'-' * 10}|{'-' * 12}|{'-' * 10}|{'-' * 14}|{'-' * 24}|{'-' * 16}|",
    ]
    for r in report["results"]:
        cpu = r["cpu_ms_per_episode"]
        lines.append(
            f"| {r['name']:34} | {r['seconds']:>8.2f} | {r['episodes_per_s']:>10,} | "
            f"{r['rows_per_s']:>8,} | {r.get('vs_raw_all', ''):>12} | "
            f"{r.get('vs_raw_rows', ''):>22} | {'' if cpu is None else cpu:>14} |"
        )
    return head + "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--episodes", type=int, default=20_000, help="episodes to ingest")
    parser.add_argument("--batch-size", type=int, default=1_000, help="episodes per batch")
    parser.add_argument(
        "--backends", default=",".join(BACKENDS), help=f"comma-separated: {', '.join(BACKENDS)}"
    )
    parser.add_argument("--no-learn", dest="learn", action="store_false", help="learn=False")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    args.backends = {b.strip() for b in args.backends.split(",") if b.strip()}
    report = asyncio.run(run(args))
    print(table(report))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
