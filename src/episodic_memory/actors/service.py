"""Names, Ray options and get-or-create of one memory's actors: the only place options live.

Every actor of a memory lives in ``config.ray.namespace`` under a name prefixed by
``config.ray.memory_name`` (``default:storage``, ``default:host:0`` ...), so any driver, task
or actor on the cluster reaches the same memory by name. The first client creates the actors
(``get_if_exists=True`` makes the race with a second client harmless); later clients adopt
the *service's* configuration (flush policy, limits, placement, pool sizes), read back from
the storage actor, so every client numbers, routes and bounds the same way.

Fault-tolerance policy. ``max_restarts`` reruns ``__init__``, so in-memory state is lost;
each actor rebuilds lazily, on its first call after a (re)start:

- **storage** — ``max_restarts=-1``. Reopens libSQL and LMDB from ``data_dir``: all of its
  state is on disk. Retried by Ray (idempotent): header, step, seal and embedding writes
  (upserts; steps keyed by number) and every read. Not retried: ``merge_learning``.
- **index** — ``max_restarts=-1``. Loads the saved FAISS index and predictor, then levels them
  with storage (stored embeddings, stored successes). Retried: reads, ``add_episodes``
  (an upsert by id). Not retried: ``observe`` (it counts).
- **learner** (pool) — ``max_restarts=-1``. Nothing to rebuild; its recovery pass re-learns
  ``unlearned_episode_ids()`` at start and periodically. ``learn`` is never retried (at most
  once); recovery covers a lost batch.
- **episode host** (pool) — ``max_restarts=-1``. Episodes are adopted from storage on first
  touch: header and flushed steps; at most the last ``flush_interval_s`` (or
  ``flush_max_steps``) of buffered steps is lost. Retried: ``start``, ``complete`` (same
  outcome → same result), ``get``, ``flush``.
- **dedicated episode** — ``max_restarts=0``. A dead one is replaced by its pool host, which
  adopts the episode from storage the same way.

``log_steps`` is not retried by Ray: the client sends a ``call_id`` so *its own* retry of a
call is deduplicated, but a retry into a restarted host (which lost the ids) could duplicate.

Lifetime: ``config.ray.detached`` (``episodic-memory serve``) makes the service actors
detached, so they outlive the driver that created them; otherwise they are owned by the first
client and vanish with it. Dedicated episode actors are owned by their pool host, which kills
them once the episode completes.
"""

from __future__ import annotations

import importlib
import zlib
from dataclasses import dataclass
from typing import Any, Literal

import ray

from episodic_memory.config import MemoryConfig
from episodic_memory.errors import ServiceError

__all__ = ["ActorKind", "Service", "ServiceNames", "actor_class", "actor_options", "connect"]

ActorKind = Literal["storage", "index", "learner", "host", "episode"]
IDEMPOTENT_RETRIES = 3

_CLASSES: dict[ActorKind, Any] = {}


@dataclass(frozen=True)
class ServiceNames:
    """Actor names of one memory in one namespace."""

    namespace: str
    memory: str

    @classmethod
    def of(cls, config: MemoryConfig) -> ServiceNames:
        return cls(config.ray.namespace, config.ray.memory_name)

    @property
    def storage(self) -> str:
        return f"{self.memory}:storage"

    @property
    def index(self) -> str:
        return f"{self.memory}:index"

    def learner(self, i: int) -> str:
        return f"{self.memory}:learner:{i}"

    def host(self, i: int) -> str:
        return f"{self.memory}:host:{i}"

    def episode(self, episode_id: str) -> str:
        return f"{self.memory}:episode:{episode_id}"


def shard(key: str, buckets: int) -> int:
    """Stable bucket of a key, the same in every process (unlike ``hash``)."""
    return zlib.crc32(key.encode("utf-8")) % buckets


_SHELLS: dict[ActorKind, tuple[str, str]] = {
    "storage": ("episodic_memory.actors.storage", "StorageActor"),
    "index": ("episodic_memory.actors.index", "IndexActor"),
    "learner": ("episodic_memory.actors.learner", "LearnerActor"),
    "host": ("episodic_memory.actors.episode", "EpisodeHostActor"),
    "episode": ("episodic_memory.actors.episode", "EpisodeHostActor"),
}


def actor_class(kind: ActorKind) -> Any:
    """The shell class of ``kind`` as a Ray actor class (built once per process).

    Imported lazily: the shells import this module for names and options.
    """
    if kind not in _CLASSES:
        module, name = _SHELLS[kind]
        _CLASSES[kind] = ray.remote(getattr(importlib.import_module(module), name))
    return _CLASSES[kind]


def actor_options(kind: ActorKind, config: MemoryConfig, name: str) -> dict[str, Any]:
    """Ray options per actor kind (see the policy table above)."""
    options: dict[str, Any] = {
        "name": name,
        "namespace": config.ray.namespace,
        "get_if_exists": True,
        "num_cpus": 0,  # I/O-bound shells; agents' tasks get the CPUs
        "max_restarts": -1,
        "max_concurrency": 1000,
    }
    if kind == "episode":
        options["max_restarts"] = 0  # its pool host adopts the episode instead
    elif config.ray.detached:
        options["lifetime"] = "detached"
    if kind == "storage" and config.ray.storage_resources:
        options["resources"] = dict(config.ray.storage_resources)
    return options


def resolve(config: MemoryConfig) -> MemoryConfig:
    """Fix the pool sizes a new service will use, so every client routes the same way."""
    if config.ray.num_hosts is not None:
        return config
    resources: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
    cpus = int(resources.get("CPU", 1))
    ray_config = config.ray.model_copy(update={"num_hosts": max(1, cpus)})
    return config.model_copy(update={"ray": ray_config})


@dataclass
class Service:
    """Handles to one memory's actors, with routing by episode id."""

    config: MemoryConfig
    names: ServiceNames
    storage: Any
    index: Any
    learners: list[Any]
    hosts: list[Any]
    created: bool = False  # this client started the actors (so, unless detached, owns them)

    def host_for(self, episode_id: str) -> Any:
        return self.hosts[shard(episode_id, len(self.hosts))]

    def learner_for(self, episode_id: str) -> Any:
        return self.learners[shard(episode_id, len(self.learners))]

    def kill(self) -> None:
        """Stop every actor of this memory (dedicated episode actors die with their hosts)."""
        for handle in [*self.hosts, *self.learners, self.index, self.storage]:
            ray.kill(handle, no_restart=True)


def _find(name: str, namespace: str) -> Any | None:
    try:
        return ray.get_actor(name, namespace=namespace)
    except ValueError:
        return None


def _lookup(name: str, namespace: str) -> Any:
    handle = _find(name, namespace)
    if handle is None:
        raise ServiceError(
            f"no actor {name!r} in namespace {namespace!r}: open the memory with "
            "SelfLearningMemory.open() on a driver first, or check memory_name/namespace"
        )
    return handle


def _make(kind: ActorKind, config: MemoryConfig, name: str, *args: Any) -> Any:
    return actor_class(kind).options(**actor_options(kind, config, name)).remote(*args)


async def connect(config: MemoryConfig, *, create: bool) -> Service:
    """Find this memory's actors by name, creating all of them when none exist and ``create``.

    A new service's actors start together (each is a process start, ~0.5 s, so this halves
    ``open``). An existing service is attached to: its storage actor hands back the service's
    configuration, which decides how many hosts and learners there are.
    """
    from episodic_memory.actors.proxies import call

    names = ServiceNames.of(config)
    if create and _find(names.storage, names.namespace) is None:
        ours = resolve(config)
        storage = _make("storage", ours, names.storage, ours)
        index = _make("index", ours, names.index, ours)
        pool = range(ours.learner.pool_size)
        learners = [_make("learner", ours, names.learner(i), ours, i) for i in pool]
        hosts = [_make("host", ours, names.host(i), ours) for i in range(ours.ray.num_hosts or 1)]
        effective: MemoryConfig = await call(storage.config.remote(), "storage.config")
        if effective == ours:  # not raced by another creator with another configuration
            for actor in [index, *learners, *hosts]:
                await call(actor.ready.remote(), "service.ready")
            return Service(ours, names, storage, index, learners, hosts, created=True)
    storage = _lookup(names.storage, names.namespace)
    effective = await call(storage.config.remote(), "storage.config")
    return Service(
        effective,
        names,
        storage,
        _lookup(names.index, names.namespace),
        [_lookup(names.learner(i), names.namespace) for i in range(effective.learner.pool_size)],
        [_lookup(names.host(i), names.namespace) for i in range(effective.ray.num_hosts or 1)],
    )
