"""Vector index cost: exact Flat vs HNSW at 10k and 100k hashed task descriptions.

    .venv/bin/python benchmarks/index_bench.py --sizes 10000,100000 --json index.json

Texts are generated agent tasks (customer service, coding, data, ops templates with random
names, ids and details), embedded with the default ``HashingEmbedder`` (1024-d). For each size
and index kind we time: the bulk build (one ``VectorIndex.add`` call, as ``rebuild`` does), a
single new episode added to the built index, an upsert of an existing id, and single queries
(k=10, one OpenMP thread). Recall@10 is measured against exact inner-product search over the
same vectors, counting a hit as right when it scores at least the exact 10th best (templated
texts tie). Memory is ``VectorIndex.memory_bytes()`` (vectors + graph + id maps).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from episodic_memory.config import IndexConfig
from episodic_memory.index.embedders import HashingEmbedder
from episodic_memory.index.faiss_index import VectorIndex

SAMPLES = 200
FIRST = ["Yusuf", "Mia", "Chen", "Olga", "Raj", "Amara", "Lucas", "Sofia", "Ivan", "Noor"]
LAST = ["Rossi", "Garcia", "Kim", "Novak", "Patel", "Okafor", "Silva", "Berg", "Haddad"]
ITEMS = [
    "mechanical keyboard", "smart thermostat", "desk lamp", "running shoes", "water bottle",
    "office chair", "laptop sleeve", "wireless earbuds", "hiking backpack", "coffee grinder",
]  # fmt: skip
REASONS = [
    "it arrived damaged", "I ordered the wrong size", "I no longer need it", "it is too slow",
    "I found a better price", "the color is different", "it stopped working after a week",
]  # fmt: skip
LANGS = ["Python", "Go", "TypeScript", "Rust", "Java"]
THINGS = ["CSV parser", "login handler", "cache layer", "retry loop", "CLI", "HTTP client"]
TEMPLATES = [
    "You are {name} in zip code {zip}. Cancel your pending order #W{order} because {reason}.",
    "You received order #W{order} and want to return the {item} because {reason}.",
    "Exchange the {item} in delivered order #W{order} for a different {item2}; {reason}.",
    "Change the shipping address of pending order #W{order} to {num} Main Street, {city}.",
    "As {name}, book a one-way flight from {city} to {city2} on May {day} in economy.",
    "Cancel reservation {code} for {name}; the trip to {city2} is no longer needed.",
    "Fix the failing test in the {lang} {thing}: it raises on empty input ({reason}).",
    "Add retries with backoff to the {lang} {thing} and cover it with unit tests.",
    "Load the {day} sales CSV into the warehouse table and deduplicate customer {name}.",
    "Restart the {thing} service on host web-{num} and check its logs for errors.",
]
CITIES = ["Boston", "Denver", "Seattle", "Austin", "Miami", "Chicago", "Phoenix", "Atlanta"]


def task_text(rng: random.Random) -> str:
    return rng.choice(TEMPLATES).format(
        name=f"{rng.choice(FIRST)} {rng.choice(LAST)}",
        zip=rng.randint(10000, 99999),
        order=rng.randint(1_000_000, 9_999_999),
        reason=rng.choice(REASONS),
        item=rng.choice(ITEMS),
        item2=rng.choice(ITEMS),
        num=rng.randint(1, 999),
        city=rng.choice(CITIES),
        city2=rng.choice(CITIES),
        day=rng.randint(1, 28),
        code="".join(rng.choices("ABCDEFGHJKLMNPQRSTUVWXYZ23456789", k=6)),
        lang=rng.choice(LANGS),
        thing=rng.choice(THINGS),
    )


def progress(message: str) -> None:
    print(f"[index_bench] {message}", file=sys.stderr, flush=True)


def percentiles(samples_s: list[float]) -> dict[str, float]:
    ordered = sorted(samples_s)

    def pick(q: float) -> float:
        return round(ordered[min(int(q * len(ordered)), len(ordered) - 1)] * 1000, 3)

    return {"p50_ms": pick(0.50), "p99_ms": pick(0.99)}


def embed(embedder: HashingEmbedder, texts: list[str]) -> npt.NDArray[np.float32]:
    return np.concatenate([embedder.embed(texts[i : i + 2000]) for i in range(0, len(texts), 2000)])


def run_kind(
    kind: str,
    size: int,
    vectors: npt.NDArray[np.float32],
    extra: npt.NDArray[np.float32],
    queries: npt.NDArray[np.float32],
    kth: npt.NDArray[np.float32],
    config: IndexConfig,
) -> dict[str, Any]:
    threshold = size * 10 if kind == "flat" else 1
    index = VectorIndex(
        vectors.shape[1],
        approximate_threshold=threshold,
        hnsw_m=config.hnsw_m,
        ef_search=config.hnsw_ef_search,
        ef_construction=config.hnsw_ef_construction,
    )
    ids = [f"ep-{i}" for i in range(size)]
    started = time.perf_counter()
    index.add(ids, vectors)
    build_s = time.perf_counter() - started
    assert index.kind == kind, (index.kind, kind)
    progress(f"{size} {kind}: built in {build_s:.1f}s")
    found = 0
    search_times: list[float] = []
    for row, bar in zip(queries, kth, strict=True):
        started = time.perf_counter()
        hits = index.search(row, 10)
        search_times.append(time.perf_counter() - started)
        # Tie-aware: templated texts give equal scores, and any of the tied ids is a right one.
        rows = [int(episode_id.split("-")[1]) for episode_id, _ in hits]
        found += int(np.count_nonzero(vectors[rows] @ row >= bar - 1e-5))
    add_times: list[float] = []
    for n, row in enumerate(extra):
        started = time.perf_counter()
        index.add([f"new-{n}"], row[None, :])
        add_times.append(time.perf_counter() - started)
    upsert_times: list[float] = []
    rng = random.Random(size)
    for row in extra:
        target = f"ep-{rng.randrange(size)}"
        started = time.perf_counter()
        index.add([target], row[None, :])
        upsert_times.append(time.perf_counter() - started)
    return {
        "size": size,
        "index": kind,
        "build_s": round(build_s, 2),
        "add": percentiles(add_times),
        "upsert": percentiles(upsert_times),
        "search": percentiles(search_times),
        "recall_at_10": round(found / (10 * len(queries)), 4),
        "memory_mib": round(index.memory_bytes() / 2**20, 1),
        "dead_after_upserts": index.dead,
    }


def run_size(size: int, embedder: HashingEmbedder, config: IndexConfig) -> list[dict[str, Any]]:
    rng = random.Random(size)
    texts = [task_text(rng) for _ in range(size + 2 * SAMPLES)]
    started = time.perf_counter()
    matrix = embed(embedder, texts)
    progress(f"{size}: embedded {len(texts)} texts in {time.perf_counter() - started:.1f}s")
    vectors, extra, queries = matrix[:size], matrix[size : size + SAMPLES], matrix[size + SAMPLES :]
    kth = -np.partition(-(queries @ vectors.T), 9, axis=1)[:, 9]  # exact 10th-best score
    return [run_kind(kind, size, vectors, extra, queries, kth, config) for kind in ("flat", "hnsw")]


def table(rows: list[dict[str, Any]]) -> str:
    head = "| N | index | build s | add p50 / p99 ms | upsert p50 / p99 ms | search p50 / p99 ms | recall@10 | memory MiB |"  # noqa: E501
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    for r in rows:

        def pair(key: str, r: dict[str, Any] = r) -> str:
            return f"{r[key]['p50_ms']:.3f} / {r[key]['p99_ms']:.3f}"

        lines.append(
            f"| {r['size']:,} | {r['index']} | {r['build_s']} | {pair('add')} | {pair('upsert')}"
            f" | {pair('search')} | {r['recall_at_10']:.3f} | {r['memory_mib']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated vector counts")
    parser.add_argument("--json", type=Path, default=None, help="write results here")
    args = parser.parse_args(argv)
    config = IndexConfig()
    embedder = HashingEmbedder(dim=config.hashing_dim)
    rows: list[dict[str, Any]] = []
    for size in (int(s) for s in args.sizes.split(",")):
        rows.extend(run_size(size, embedder, config))
    print(table(rows))
    if args.json:
        meta = {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "embedder": embedder.name,
            "hnsw": {
                "m": config.hnsw_m,
                "ef_search": config.hnsw_ef_search,
                "ef_construction": config.hnsw_ef_construction,
            },
            "samples": SAMPLES,
        }
        args.json.write_text(json.dumps({"meta": meta, "results": rows}, indent=2))


if __name__ == "__main__":
    main()
