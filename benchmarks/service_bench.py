"""Service benchmark: the actors end to end, ``hosted`` and ``dedicated``, and the no-Ray reference.

    .venv/bin/python benchmarks/service_bench.py --json service.json [--quick]

One local Ray (2 CPUs, loopback) serves both placements; the in-process backend (plain
classes in this process) is the reference. Per backend: ``start_episode`` and ``log_step``
latency (sequential), sustained steps/s with ``log_step`` and with ``log_steps`` bursts of
``BURST`` from 1, 8 and 32 concurrent agents (coroutines in this driver, one episode each) for
``--seconds``, then how long until every step is durable in storage; ``complete_episode``
latency (20-step episodes); retrieval latency at ``--episodes`` stored episodes (ingested with
bursts, many agents at once; ``dedicated`` reuses the ``hosted`` folder, because creating 10k
episode processes is exactly what it is not for); memory per active episode (PSS of the whole
process tree, before/after opening that many episodes with 20 steps each). Dedicated runs use
fewer episodes where each one is a process (noted in the table).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # loopback only, before Ray starts

import ray

from episodic_memory.config import LearnerConfig, MemoryConfig, RayConfig
from episodic_memory.core.models import ExecutionStep, TaskOutcome
from episodic_memory.demo import generate_episode
from episodic_memory.memory import SelfLearningMemory

BURST = 32
STEPS = [
    ExecutionStep(tool=f"tool_{i % 7}", action=f"call {i}", latency_ms=12.0, tokens=90)
    for i in range(BURST)
]
TARGETS = {"start_p50_ms": 3.0, "burst_steps_per_s": 20_000, "retrieve_p99_ms": 50.0}


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def timed(n: int, call: Callable[[int], Awaitable[Any]]) -> dict[str, float]:
    samples = []
    for i in range(n):
        started = time.perf_counter()
        await call(i)
        samples.append((time.perf_counter() - started) * 1000)
    return {"p50": pct(samples, 0.5), "p99": pct(samples, 0.99), "n": n}


def tree_pss_mb() -> float:
    """PSS of this process and all its descendants (Ray's processes when Ray is local)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    total, stack, seen = 0, [os.getpid()], set()
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        stack += children.get(pid, [])
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


async def stored_steps(memory: SelfLearningMemory) -> int:
    return int((await memory.stats())["storage"]["tables"].get("steps", 0))


async def throughput(
    memory: SelfLearningMemory, agents: int, burst: int, seconds: float
) -> dict[str, float]:
    """Steps/s from ``agents`` concurrent agents, then the lag until all of them are durable."""
    before = await stored_steps(memory)
    limit = memory.config.limits.max_steps_per_episode
    # Episodes start before the clock does: the window measures steps, not placement.
    first = await asyncio.gather(*(memory.start_episode(f"agent {n}") for n in range(agents)))
    deadline = time.perf_counter() + seconds

    async def agent(n: int) -> int:
        sent, in_episode, episode_id = 0, 0, first[n]
        while time.perf_counter() < deadline:
            if in_episode + burst > limit:
                await memory.complete_episode(episode_id, TaskOutcome.success())
                episode_id, in_episode = await memory.start_episode(f"agent {n} again"), 0
            if burst == 1:
                await memory.log_step(episode_id, STEPS[sent % BURST])
            else:
                await memory.log_steps(episode_id, STEPS[:burst])
            sent, in_episode = sent + burst, in_episode + burst
        return sent

    started = time.perf_counter()
    sent = sum(await asyncio.gather(*(agent(n) for n in range(agents))))
    ended = time.perf_counter()
    while await stored_steps(memory) < before + sent:
        if time.perf_counter() - ended > 30:
            break
        await asyncio.sleep(0.01)
    return {
        "steps_per_s": sent / (ended - started),
        "durable_lag_s": time.perf_counter() - ended,
    }


async def ingest(memory: SelfLearningMemory, episodes: int, agents: int = 32) -> float:
    """Store ``episodes`` completed episodes (one burst each); return episodes/s."""
    existing = int((await memory.stats())["storage"]["tables"].get("episodes", 0))
    todo = list(range(existing, episodes))
    started = time.perf_counter()

    async def agent(share: list[int]) -> None:
        for seed in share:
            task, context, steps, outcome = generate_episode(seed)
            episode_id = await memory.start_episode(task, context)
            await memory.log_steps(episode_id, steps)
            await memory.complete_episode(episode_id, outcome)

    await asyncio.gather(*(agent(todo[i::agents]) for i in range(agents)))
    return len(todo) / max(time.perf_counter() - started, 1e-9)


async def bench(memory: SelfLearningMemory, name: str, args: argparse.Namespace) -> dict[str, Any]:
    dedicated = name == "dedicated"
    out: dict[str, Any] = {"backend": name}
    n_start = 8 if dedicated and args.quick else 30 if dedicated else 100 if args.quick else 500
    ids: list[str] = []

    async def start(i: int) -> None:
        ids.append(await memory.start_episode(f"latency probe {i}"))

    out["start_ms"] = await timed(n_start, start)
    probe = ids[0]
    out["log_step_ms"] = await timed(
        200 if args.quick else 1000, lambda i: memory.log_step(probe, STEPS[i % BURST])
    )
    for episode_id in ids[1:]:
        await memory.log_steps(episode_id, STEPS[:20])
    out["complete_ms"] = await timed(
        len(ids) - 1,
        lambda i: memory.complete_episode(ids[i + 1], TaskOutcome.success()),
    )
    await memory.complete_episode(probe, TaskOutcome.success())
    fleets = [1, 8] if dedicated and args.quick else [1, 8, 32]
    out["throughput"] = {}
    for agents in fleets:
        for burst in (1, BURST):
            key = f"{'log_step' if burst == 1 else f'log_steps({BURST})'} x{agents}"
            out["throughput"][key] = await throughput(memory, agents, burst, args.seconds)
    if not dedicated:
        out["ingest_s"] = await ingest(memory, args.episodes)
    await memory.settle()
    stored = int((await memory.stats())["storage"]["tables"]["episodes"])
    queries = [generate_episode(10_000_000 + i)[:2] for i in range(50 if args.quick else 300)]
    out["retrieve_ms"] = await timed(
        len(queries), lambda i: memory.retrieve_relevant_context(*queries[i], limit=5)
    )
    out["retrieve_ms"]["episodes"] = stored
    active = 8 if dedicated and args.quick else 24 if dedicated else 1000
    before = tree_pss_mb()
    for i in range(active):
        episode_id = await memory.start_episode(f"memory probe {i}")
        await memory.log_steps(episode_id, STEPS[:20])
    await asyncio.sleep(1.0)  # let new processes settle before measuring them
    out["memory_mb"] = {"per_episode": (tree_pss_mb() - before) / active, "episodes": active}
    return out


def config(data_dir: Path, name: str) -> MemoryConfig:
    placement = "dedicated" if name == "dedicated" else "hosted"
    return MemoryConfig(
        data_dir=data_dir,
        learner=LearnerConfig(pool_size=1),
        ray=RayConfig(namespace="service-bench", memory_name=f"bench-{name}", placement=placement),
    )


def _lat(result: dict[str, Any], key: str, digits: int = 2) -> str:
    value = result[key]
    return f"{value['p50']:.{digits}f} / {value['p99']:.{digits}f}"


def _rate(result: dict[str, Any], key: str) -> str:
    run = result["throughput"].get(key)
    return f"{run['steps_per_s']:,.0f} ({run['durable_lag_s']:.2f})" if run else "-"


def table(results: list[dict[str, Any]]) -> str:
    rows: list[tuple[str, ...]] = [("", *(r["backend"] for r in results))]

    def row(label: str, pick: Callable[[dict[str, Any]], str]) -> None:
        rows.append((label, *(pick(r) for r in results)))

    row("start_episode p50 / p99 ms", lambda r: _lat(r, "start_ms"))
    row("log_step p50 / p99 ms", lambda r: _lat(r, "log_step_ms"))
    row("complete p50 / p99 ms", lambda r: _lat(r, "complete_ms"))
    for key in results[0]["throughput"]:
        row(f"steps/s {key} (s to durable)", lambda r, k=key: _rate(r, k))
    row("retrieve p50 / p99 ms", lambda r: _lat(r, "retrieve_ms", 1))
    row("  at stored episodes", lambda r: f"{r['retrieve_ms']['episodes']:,}")
    row(
        "ingest episodes/s",
        lambda r: f"{r['ingest_s']:,.0f}" if "ingest_s" in r else "(hosted's data)",
    )
    row("memory per active episode MB", lambda r: f"{r['memory_mb']['per_episode']:.3f}")
    row("  measured over episodes", lambda r: str(r["memory_mb"]["episodes"]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)


async def run_backend(name: str, data_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    backend = "in_process" if name == "in_process" else "ray"
    memory = await SelfLearningMemory.open(config(data_dir, name), backend=backend)  # type: ignore[arg-type]
    try:
        return await bench(memory, name, args)
    finally:
        await memory.close(stop_service=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--quick", action="store_true", help="smaller runs, 1k episodes")
    parser.add_argument("--episodes", type=int, default=None, help="stored episodes for retrieval")
    parser.add_argument("--seconds", type=float, default=None, help="per throughput run")
    parser.add_argument("--backends", default="in_process,hosted,dedicated")
    args = parser.parse_args()
    args.episodes = args.episodes or (1_000 if args.quick else 10_000)
    args.seconds = args.seconds or (1.0 if args.quick else 3.0)
    names = args.backends.split(",")
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        namespace="service-bench",
        object_store_memory=300 * 1024**2,
        log_to_driver=False,
    )
    results = []
    with tempfile.TemporaryDirectory(prefix="service-bench-") as tmp:
        for name in names:
            folder = Path(tmp) / ("in_process" if name == "in_process" else "ray")
            results.append(asyncio.run(run_backend(name, folder, args)))
            print(f"{name}: done", flush=True)
    ray.shutdown()
    print(table(results))
    if args.json:
        meta = {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "quick": args.quick,
            "episodes": args.episodes,
            "seconds": args.seconds,
            "burst": BURST,
            "targets": TARGETS,
        }
        args.json.write_text(json.dumps({"meta": meta, "results": results}, indent=2))


if __name__ == "__main__":
    main()
