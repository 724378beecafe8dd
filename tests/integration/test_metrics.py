"""The memory's metrics reach Ray's Prometheus endpoint (what an operator's scraper reads).

Uses the session's Ray and the port it chose (``MetricsExportPort``), on loopback. Actors hand
their counts over every few seconds and Ray exports on its own interval, so the scrape is
polled (bounded) until every series of this memory is there.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import ray

from episodic_memory.demo import generate_episode

SCRAPE_TIMEOUT_S = 40.0
_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][\w:]*)(?:\{(?P<labels>.*)\})? (?P<value>\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def scrape(port: int, memory: str) -> dict[str, float]:
    """Sum of each ``episodic_memory`` series of one memory, by name (and ``le`` bucket)."""
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    found: dict[str, float] = defaultdict(float)
    for line in body.decode().splitlines():
        match = _SAMPLE.match(line)
        if match is None or "episodic_memory" not in match["name"]:
            continue
        labels = dict(_LABEL.findall(match["labels"] or ""))
        if labels.get("memory") == memory:
            key = match["name"] + (f"[le={labels['le']}]" if "le" in labels else "")
            found[key] += float(match["value"])
    return found


def listens_on_loopback_only(port: int) -> bool:
    sockets = subprocess.run(
        ["ss", "-tlnH"], capture_output=True, text=True, check=True, timeout=10
    ).stdout
    hosts = {
        line.split()[3].rsplit(":", 1)[0]
        for line in sockets.splitlines()
        if line.split()[3].endswith(f":{port}")
    }
    return bool(hosts) and hosts <= {"127.0.0.1", "[::ffff:127.0.0.1]", "[::1]"}


async def test_episode_step_flush_retrieval_learner_and_cache_metrics_are_exported(
    open_memory: Callable[..., Any],
) -> None:
    memory = await open_memory()
    name = memory.config.ray.memory_name
    (node,) = [n for n in ray.nodes() if n["Alive"]]
    port = int(node["MetricsExportPort"])
    assert listens_on_loopback_only(port)

    steps_logged = 0
    for seed in range(3):
        task, context, steps, outcome = generate_episode(seed)
        episode_id = await memory.start_episode(task, context)
        await memory.log_steps(episode_id, steps)
        await memory.complete_episode(episode_id, outcome)
        steps_logged += len(steps)
    await memory.settle()
    await memory.retrieve_relevant_context(task, context, limit=3)
    storage = ray.get_actor(f"{name}:storage", namespace=memory.config.ray.namespace)
    await storage.get_episodes.remote(["not-an-episode"])  # a cache miss
    learner = ray.get_actor(f"{name}:learner:0", namespace=memory.config.ray.namespace)
    await learner.learn.remote(None)  # a malformed batch: counted as a learner failure

    wanted = {
        "ray_episodic_memory_episodes_started_total": 3,
        "ray_episodic_memory_episodes_completed_total": 3,
        "ray_episodic_memory_steps_logged_total": steps_logged,
        "ray_episodic_memory_flush_batch_steps_count": 1,
        "ray_episodic_memory_retrieval_latency_ms_count": 1,
        "ray_episodic_memory_learner_failures_total": 1,
        "ray_episodic_memory_cache_hits_total": 1,
        "ray_episodic_memory_cache_misses_total": 1,
    }
    deadline = time.monotonic() + SCRAPE_TIMEOUT_S
    while True:
        series = await asyncio.to_thread(scrape, port, name)
        missing = {k: v for k, v in wanted.items() if series.get(k, 0) < v}
        if not missing and "ray_episodic_memory_learner_queue_depth" in series:
            break
        assert time.monotonic() < deadline, f"not exported in time: {missing}; got {series}"
        await asyncio.sleep(1.0)

    assert series["ray_episodic_memory_episodes_started_total"] == 3
    assert series["ray_episodic_memory_steps_logged_total"] == steps_logged
    # Ray approximates a histogram's _sum from bucket midpoints; the count is exact.
    assert 1 <= series["ray_episodic_memory_flush_batch_steps_count"] <= steps_logged
    assert series["ray_episodic_memory_retrieval_latency_ms_bucket[le=+Inf]"] >= 1
    assert series["ray_episodic_memory_learner_queue_depth"] == 0  # nothing waiting now
