"""A two-node Ray cluster on loopback: the memory served on the head, agents on a second node
that dies mid-run. Run by ``test_multinode.py`` in its own process (a process can hold one Ray,
and the suite's own Ray lives in pytest's); prints one JSON line for the test to judge.

    python tests/cluster/multinode_run.py <data dir> <ray temp dir>

``ray.cluster_utils.Cluster`` (Ray's own multi-node harness) starts a head with the
``episodic_memory_storage`` resource and a worker with ``{"agent_node": 2}``, every process on
127.0.0.1 (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``) under a private temp dir. The memory is
served by the real ``episodic-memory serve`` in a separate process (its actors are detached,
so they outlive it). Agents are Ray tasks pinned to the worker; once enough episodes are
complete the worker is removed, and the driver checks the memory still serves and every
completed episode is whole.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ["RAY_TMPDIR"] = sys.argv[2]  # sockets, session logs and ray_current_cluster here

import ray
from ray.cluster_utils import Cluster

from episodic_memory import cli
from episodic_memory.config import MemoryConfig, RayConfig
from episodic_memory.demo import generate_episode
from episodic_memory.errors import ServiceError
from episodic_memory.memory import SelfLearningMemory
from episodic_memory.memory_sync import SyncMemory

NAMESPACE = "multinode"
AGENTS = 2
EPISODES_PER_AGENT = 40
COMPLETED_BEFORE_KILL = 8
WAIT_S = 60.0
_USERS = re.compile(r"pid=(\d+)")


def agent(memory: SyncMemory, first_seed: int) -> int:
    """One agent on the worker node: episodes one after another, a step at a time."""
    node = ray.get_runtime_context().get_node_id()[:8]
    for seed in range(first_seed, first_seed + EPISODES_PER_AGENT):
        task, context, steps, outcome = generate_episode(seed)
        episode_id = memory.start_episode(task, context, agent_id=f"{node}:seed-{seed}")
        for step in steps:
            memory.log_step(episode_id, step)
            time.sleep(0.01)
        memory.complete_episode(episode_id, outcome)
    return EPISODES_PER_AGENT


def cli_json(*argv: str) -> Any:
    """An ``episodic-memory`` command in this driver (already connected); its JSON output."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = cli.main([*argv, "--json"])
    return {"exit": status, **json.loads(out.getvalue())}


def cli_text(*argv: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        cli.main(list(argv))
    return out.getvalue()


def listening_hosts() -> dict[str, list[str]]:
    """Addresses that processes of this run (this process and its descendants) listen on."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    ours, grew = {os.getpid()}, True
    while grew:
        more = {pid for pid, parent in parents.items() if parent in ours} - ours
        ours |= more
        grew = bool(more)
    listing = subprocess.run(
        ["ss", "-tlnpH"], capture_output=True, text=True, check=True, timeout=10
    ).stdout
    found: dict[str, list[str]] = {}
    for line in listing.splitlines():
        pids = {int(p) for p in _USERS.findall(line)}
        if pids & ours:
            host, _, port = line.split()[3].rpartition(":")
            found.setdefault(host, []).append(port)
    return found


def completed(memory: SyncMemory) -> dict[str, Any]:
    return {e.episode_id: e for e in memory.list_episodes(limit=1000) if e.status == "completed"}


def intact(memory: SyncMemory, episode_ids: list[str]) -> list[str]:
    """Ids whose stored episode differs from what its agent generated (should be none)."""
    broken = []
    for episode_id in episode_ids:
        episode = memory.get_episode(episode_id)
        seed = int((episode.agent_id or "").rsplit("seed-", 1)[1])
        task, _, steps, outcome = generate_episode(seed)
        same = (
            episode.task_description == task
            and [s.tool for s in episode.steps] == [s.tool for s in steps]
            and [s.step_number for s in episode.steps] == list(range(1, len(steps) + 1))
            and episode.verdict == outcome.verdict
        )
        if not same:
            broken.append(episode_id)
    return broken


def run(data_dir: Path) -> dict[str, Any]:
    head_args = {
        "num_cpus": 1,
        "resources": {"episodic_memory_storage": 1},
        "include_dashboard": False,
    }
    cluster = Cluster(initialize_head=True, head_node_args=head_args)
    try:
        worker = cluster.add_node(num_cpus=2, resources={"agent_node": 2})
        where = ["--address", cluster.address, "--namespace", NAMESPACE]
        served = subprocess.run(
            [sys.executable, "-m", "episodic_memory.cli", "serve", *where,
             "--data-dir", str(data_dir), "--hosts", "2", "--json"],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        if served.returncode != 0:
            return {"error": f"serve failed: {served.stderr[-2000:]}"}
        ray.init(address=cluster.address, namespace=NAMESPACE, log_to_driver=False)
        config = MemoryConfig(ray=RayConfig(address=cluster.address, namespace=NAMESPACE))
        memory = SelfLearningMemory.open_sync(config)  # attaches to the served memory
        task = ray.remote(num_cpus=0, resources={"agent_node": 1}, max_retries=0)(agent)
        runs = [task.remote(memory, 1000 * (a + 1)) for a in range(AGENTS)]

        deadline = time.monotonic() + WAIT_S
        while len(completed(memory)) < COMPLETED_BEFORE_KILL and time.monotonic() < deadline:
            time.sleep(0.2)
        listeners = listening_hosts()
        before = completed(memory)
        cluster.remove_node(worker)  # the agents' node dies mid-run
        agent_errors = []
        for ref in runs:
            try:
                ray.get(ref, timeout=WAIT_S)
            except Exception as exc:
                agent_errors.append(type(exc).__name__)

        # The memory keeps serving: a new episode from the head, and retrieval. Actors that
        # lived on the dead node may still be restarting; like any agent, retry with a fresh
        # episode (log_steps is deliberately not retried inside the service).
        task_text, context, steps, outcome = generate_episode(1)
        deadline = time.monotonic() + WAIT_S
        while True:
            try:
                fresh = memory.start_episode(task_text, context, agent_id="head:seed-1")
                memory.log_steps(fresh, steps)
                memory.complete_episode(fresh, outcome)
                break
            except ServiceError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        found = memory.retrieve_relevant_context(task_text, context, limit=3)
        after = completed(memory)
        broken = intact(memory, sorted(after))
        status_json = cli_json("status", *where)
        status_text = cli_text("status", *where)
        memory.close()
        stopped = cli_json("stop", *where)
        return {
            "serve": json.loads(served.stdout),
            "completed_before_kill": sorted(before),
            "completed_after": sorted(after),
            "agent_nodes": sorted({e.agent_id.split(":")[0] for e in after.values()}),
            "worker_node": worker.node_id[:8],
            "head_node": cluster.head_node.node_id[:8],
            "broken": broken,
            "agent_errors": agent_errors,
            "fresh_episode": fresh,
            "retrieved": [e.episode_id for e in found.episodes],
            "listeners": listeners,
            "status": status_json,
            "status_text": status_text,
            "stopped": stopped,
        }
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    print(json.dumps(run(Path(sys.argv[1]))))
