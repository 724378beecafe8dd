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

    def host_for(self, episode_id: str) -> Any:
        return self.hosts[shard(episode_id, len(self.hosts))]

    def learner_for(self, episode_id: str) -> Any:
        return self.learners[shard(episode_id, len(self.learners))]

    def kill(self) -> None:
        """Stop every actor of this memory (dedicated episode actors die with their hosts)."""
        for handle in [*self.hosts, *self.learners, self.index, self.storage]:
            ray.kill(handle, no_restart=True)


def _lookup(name: str, namespace: str) -> Any:
    try:
        return ray.get_actor(name, namespace=namespace)
    except ValueError:
        raise ServiceError(
            f"no actor {name!r} in namespace {namespace!r}: open the memory with "
            "SelfLearningMemory.open() on a driver first, or check memory_name/namespace"
        ) from None


def _make(kind: ActorKind, config: MemoryConfig, name: str, *args: Any) -> Any:
    return actor_class(kind).options(**actor_options(kind, config, name)).remote(*args)


async def connect(config: MemoryConfig, *, create: bool) -> Service:
    """Find this memory's actors by name, creating the missing ones when ``create``.

    The storage actor is found or created first: it holds the service's configuration, which
    decides how many hosts and learners there are.
    """
    names = ServiceNames.of(config)
    if create:
        storage = _make("storage", resolve(config), names.storage, resolve(config))
    else:
        storage = _lookup(names.storage, names.namespace)
    from episodic_memory.actors.proxies import call

    effective: MemoryConfig = await call(storage.config.remote(), "storage.config")
    hosts_n = effective.ray.num_hosts or 1
    learners_n = effective.learner.pool_size
    if create:
        index = _make("index", effective, names.index, effective)
        learners = [
            _make("learner", effective, names.learner(i), effective, i) for i in range(learners_n)
        ]
        hosts = [_make("host", effective, names.host(i), effective) for i in range(hosts_n)]
        ready = [index.ready.remote()]
        ready += [actor.ready.remote() for actor in [*learners, *hosts]]
        for ref in ready:
            await call(ref, "service.ready")
    else:
        index = _lookup(names.index, names.namespace)
        learners = [_lookup(names.learner(i), names.namespace) for i in range(learners_n)]
        hosts = [_lookup(names.host(i), names.namespace) for i in range(hosts_n)]
    return Service(effective, names, storage, index, learners, hosts)
