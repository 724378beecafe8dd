"""``serve``, ``stop`` and ``status``: the memory as a long-lived service on a Ray cluster.

``serve`` creates the memory's actors as *detached* named actors, so they outlive the command
(and any driver) until ``stop``; a second ``serve`` finds them and changes nothing. The storage
actor is pinned to the node that has the ``episodic_memory_storage`` custom resource when the
cluster has one (``cluster.yaml`` gives it to the head), because its files live there.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from episodic_memory.cli.common import (
    Registry,
    attach,
    config_from,
    connect_ray,
    emit,
    served,
    stderr,
    stdout,
    table,
    with_options,
)
from episodic_memory.config import LearnerConfig, MemoryConfig, RayConfig
from episodic_memory.core.sanitize import redact
from episodic_memory.errors import ServiceError
from episodic_memory.memory import SelfLearningMemory

__all__ = ["STORAGE_RESOURCE", "register"]

STORAGE_RESOURCE = "episodic_memory_storage"
STORAGE_SHARE = 0.01  # of the node's one unit: up to 100 memories can pin to the same node
STOP_WAIT_S = 15.0


def register(add: Registry) -> None:
    serve = add(
        "serve",
        "start the memory's actors on a running Ray cluster (detached, idempotent)",
        "  episodic-memory serve --address auto --data-dir /data/episodic-memory\n"
        "  episodic-memory serve --address 10.0.0.10:6379 --memory-name team-a --hosts 4",
    )
    with_options(serve, backend=False)
    serve.add_argument("--placement", choices=["hosted", "dedicated"], help="episode placement")
    serve.add_argument("--hosts", type=int, help="episode host actors (default: cluster CPUs)")
    serve.add_argument("--learners", type=int, help="learner actors (default: 1)")
    serve.add_argument(
        "--storage-resource",
        default=STORAGE_RESOURCE,
        help="custom resource pinning the storage actor to its node, when the cluster has it "
        "('' never pins)",
    )
    serve.set_defaults(run=run_serve)
    stop = add(
        "stop",
        "flush buffered steps and learning, then stop the served memory's actors",
        "  episodic-memory stop --address auto\n  episodic-memory stop --memory-name team-a --json",
    )
    with_options(stop, backend=False)
    stop.set_defaults(run=run_stop)
    status = add(
        "status",
        "nodes, actors and counts of the served memory (cache hit rate, queue depths)",
        "  episodic-memory status --address auto\n  episodic-memory status --json | jq .counts",
    )
    with_options(status, backend=False)
    status.set_defaults(run=run_status)


def _service_config(args: argparse.Namespace) -> MemoryConfig:
    config = config_from(args, address="auto")
    ray: dict[str, Any] = {"detached": True}
    if args.placement:
        ray["placement"] = args.placement
    if args.hosts is not None:
        ray["num_hosts"] = args.hosts
    update: dict[str, Any] = {"data_dir": config.data_dir.resolve()}  # actors' cwd differs
    if args.learners is not None:
        update["learner"] = LearnerConfig(**{**dict(config.learner), "pool_size": args.learners})
    update["ray"] = RayConfig(**{**dict(config.ray), **ray})
    return MemoryConfig(**{**dict(config), **update})


def _where(config: MemoryConfig) -> dict[str, Any]:
    return {
        "memory": config.ray.memory_name,
        "namespace": config.ray.namespace,
        "data_dir": str(config.data_dir),
        "database": redact(config.database_url),
        "placement": config.ray.placement,
        "hosts": config.ray.num_hosts,
        "learners": config.learner.pool_size,
        "storage_resources": dict(config.ray.storage_resources),
    }


async def run_serve(args: argparse.Namespace) -> int:
    import ray

    config = _service_config(args)
    connect_ray(config)
    existed = served(config)
    resource = args.storage_resource
    if not existed and resource and resource in ray.cluster_resources():  # type: ignore[no-untyped-call]
        pinned = config.ray.model_copy(update={"storage_resources": {resource: STORAGE_SHARE}})
        config = config.model_copy(update={"ray": pinned})
    memory = await SelfLearningMemory.open(config)
    effective = memory.config
    await memory.close()  # detached: the actors stay
    info = {"status": "already running" if existed else "started", **_where(effective)}

    def human() -> None:
        stdout.print(
            f"memory [bold]{effective.ray.memory_name}[/bold] in namespace "
            f"[bold]{effective.ray.namespace}[/bold]: {info['status']}"
        )
        table(None, ["setting", "value"], [[k, v] for k, v in info.items() if k != "status"])

    emit(args, info, human)
    return 0


async def run_stop(args: argparse.Namespace) -> int:
    from episodic_memory.backends import open_backend

    config = config_from(args, address="auto")
    connect_ray(config)
    if not served(config):
        emit(args, {"stopped": False, "reason": "not running"}, lambda: stdout.print("not running"))
        return 0
    backend = await open_backend(config, "ray", create=False, owns_ray=False)
    memory = SelfLearningMemory(backend.config, "ray", backend)
    try:
        await memory.settle()
    except ServiceError as exc:  # stop anyway: what was not learned is re-learned on serve
        stderr.print(f"warning: could not settle before stopping: {exc}")
    counts = (await memory.stats())["storage"]["tables"]
    await memory.close(stop_service=True)
    deadline = time.monotonic() + STOP_WAIT_S
    while time.monotonic() < deadline:  # names are free once the actors are dead
        if not served(config):
            break
        await asyncio.sleep(0.1)
    info = {"stopped": True, "memory": config.ray.memory_name, "counts": counts}
    emit(args, info, lambda: stdout.print(f"stopped memory {config.ray.memory_name!r}: {counts}"))
    return 0


def _nodes() -> list[dict[str, Any]]:
    import ray

    rows = []
    for node in ray.nodes():  # type: ignore[no-untyped-call]
        resources = node.get("Resources", {})
        cpus = resources.get("CPU", 0)
        custom = {
            k: v
            for k, v in resources.items()
            if k not in ("CPU", "GPU", "memory", "object_store_memory")
            and not k.startswith("node:")
        }
        rows.append(
            {
                "node_id": node["NodeID"],
                "address": node.get("NodeManagerAddress"),
                "role": "head" if "node:__internal_head__" in resources else "worker",
                "alive": bool(node.get("Alive")),
                "cpus": int(cpus) if float(cpus).is_integer() else cpus,
                "resources": custom,
            }
        )
    return rows


def _actors(config: MemoryConfig) -> list[dict[str, Any]]:
    """The memory's named actors with state, node, pid and restarts (from the GCS tables)."""
    import ray
    from ray._private import state  # no public per-actor view without the dashboard

    prefix = f"{config.ray.memory_name}:"
    rows = []
    for entry in ray.util.list_named_actors(all_namespaces=True):
        name = entry["name"]
        if entry["namespace"] != config.ray.namespace or not name.startswith(prefix):
            continue
        try:
            actor_id = ray.get_actor(name, namespace=entry["namespace"])._actor_id.hex()
            info = state.actors(actor_id=actor_id)
        except Exception:  # gone between the listing and the lookup
            continue
        rows.append(
            {
                "actor": name[len(prefix) :],
                "state": info.get("State"),
                "node_id": info.get("Address", {}).get("NodeID"),
                "pid": info.get("Pid"),
                "restarts": info.get("NumRestarts"),
            }
        )
    return sorted(rows, key=lambda r: r["actor"])


def _counts(stats: dict[str, Any]) -> dict[str, Any]:
    storage, cache = stats["storage"], stats["storage"].get("cache", {})
    lookups = cache.get("hits", 0) + cache.get("misses", 0)
    learners = stats.get("learners", [])
    return {
        **storage["tables"],
        "active_episodes": stats["episodes"].get("active_episodes", 0),
        "buffered_steps": stats["episodes"].get("buffered_steps", 0),
        "learner_queue": sum(lr.get("in_flight", 0) for lr in learners),
        "learned": sum(lr.get("learned", 0) for lr in learners),
        "learner_failures": sum(lr.get("failures", 0) for lr in learners),
        "cache_entries": cache.get("entries", 0),
        "cache_hits": cache.get("hits", 0),
        "cache_misses": cache.get("misses", 0),
        "cache_hit_rate": round(cache.get("hits", 0) / lookups, 3) if lookups else None,
        "index_vectors": stats["index"].get("vectors", 0),
    }


async def run_status(args: argparse.Namespace) -> int:
    config = config_from(args, address="auto")
    connect_ray(config)
    nodes = _nodes()
    data: dict[str, Any] = {"served": served(config), "nodes": nodes}
    if data["served"]:
        async with attach(config) as memory:
            stats = await memory.stats()
            config = memory.config
        data |= {**_where(config), "actors": _actors(config), "counts": _counts(stats)}

    def short(node_id: str | None) -> str:
        return (node_id or "?")[:8]

    def human() -> None:
        state = "served" if data["served"] else "[red]not running[/red]"
        stdout.print(
            f"memory [bold]{config.ray.memory_name}[/bold] in namespace "
            f"[bold]{config.ray.namespace}[/bold]: {state}"
        )
        table(
            "nodes",
            ["node", "address", "role", "alive", "CPUs", "resources"],
            [
                [
                    short(n["node_id"]),
                    n["address"],
                    n["role"],
                    "yes" if n["alive"] else "no",
                    n["cpus"],
                    ", ".join(f"{k}={v:g}" for k, v in sorted(n["resources"].items())),
                ]
                for n in nodes
            ],
        )
        if data["served"]:
            table(
                "actors",
                ["actor", "state", "node", "pid", "restarts"],
                [
                    [a["actor"], a["state"], short(a["node_id"]), a["pid"], a["restarts"]]
                    for a in data["actors"]
                ],
            )
            table("counts", ["what", "value"], [[k, v] for k, v in data["counts"].items()])
            stdout.print(f"data: {data['data_dir']}  database: {data['database']}")

    emit(args, data, human)
    return 0 if data["served"] else 1
