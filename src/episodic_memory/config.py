"""Configuration models; the only module that reads environment variables.

Everything tunable lives here with its unit in its name (``flush_interval_s``), so an operator
finds every knob in one place. ``MemoryConfig.from_env()`` layers ``EPISODIC_MEMORY_*``,
``TURSO_DATABASE_URL`` and ``TURSO_AUTH_TOKEN`` over the defaults. Secrets are ``SecretStr``:
they never appear in a repr, a log line or an exported config.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import ConfigDict, Field, SecretStr

from episodic_memory.validation import ValidatedModel

__all__ = [
    "DEFAULT_LIMITS",
    "CacheConfig",
    "FlushPolicy",
    "IndexConfig",
    "InputLimits",
    "LearnerConfig",
    "MemoryConfig",
    "RateLimitConfig",
    "RayConfig",
    "StorageConfig",
]

ENV_PREFIX = "EPISODIC_MEMORY_"


class _Config(ValidatedModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class InputLimits(_Config):
    """Bounds on every input, in one place; the models validate against these."""

    max_description_chars: int = 20_000
    max_tool_chars: int = 200
    max_action_chars: int = 20_000
    max_observation_chars: int = 100_000
    max_error_chars: int = 20_000
    max_tags: int = 32
    max_tag_chars: int = 64
    max_label_chars: int = 200  # domain, language, framework, task_type, agent ids
    max_steps_per_episode: int = 10_000
    max_steps_per_call: int = 5_000
    max_json_depth: int = 16
    max_json_bytes: int = 256_000  # parameters / metadata, serialized
    max_outcome_items: int = 500
    max_retrieve_limit: int = 100
    max_latency_ms: float = 7 * 24 * 3600 * 1000.0  # a week
    max_tokens: int = 100_000_000


DEFAULT_LIMITS = InputLimits()


class StorageConfig(_Config):
    """Durable store (libSQL). ``database_url=None`` means ``file:<data_dir>/memory.db``."""

    database_url: str | None = None
    auth_token: SecretStr | None = None
    write_batch_size: int = Field(default=500, ge=1, le=10_000)
    max_retries: int = Field(default=6, ge=0)
    retry_base_delay_s: float = Field(default=0.05, gt=0)
    retry_max_delay_s: float = Field(default=2.0, gt=0)
    busy_timeout_ms: int = Field(default=5_000, ge=0)
    request_timeout_s: float = Field(default=30.0, gt=0)  # one remote round trip


class CacheConfig(_Config):
    """LMDB hot cache. Never the source of truth; ``sync_memories()`` repairs it."""

    enabled: bool = True
    max_episodes_cache: int = Field(default=1000, ge=0)
    map_size_bytes: int = Field(default=1 << 30, ge=1 << 16)  # grows on MapFullError


class FlushPolicy(_Config):
    """When an episode actor hands its buffered steps to the storage actor."""

    flush_max_steps: int = Field(default=256, ge=1)
    flush_interval_s: float = Field(default=0.2, gt=0)


class IndexConfig(_Config):
    """Embeddings and FAISS. ``embedder="none"`` turns semantic retrieval off."""

    embedder: Literal["hashing", "minilm", "none"] = "hashing"
    hashing_dim: int = Field(default=1024, ge=64, le=16_384)
    # Exact search up to this many vectors, then an approximate index built in the background
    # (benchmarks/index_bench.py and scale_bench.py; IVF deletes natively).
    approximate_threshold: int = Field(default=10_000, ge=1)
    approximate_kind: Literal["ivf", "hnsw"] = "ivf"
    # fp16 by default, measured at 1M realistic episodes (scale_bench, recall from exact scores):
    # recall@10 1.0 like float32 at ~half its memory (IndexActor 3.0 vs 4.9 GB); sq8 (a quarter)
    # rounds near-ties into the wrong order (recall .89 at any nprobe).
    approximate_encoding: Literal["sq8", "fp16", "float32"] = "fp16"
    ivf_nlist: int = Field(default=0, ge=0)  # 0: about sqrt(N) lists, re-chosen as N doubles
    ivf_nprobe: int = Field(default=16, ge=1)  # recall@10 1.0 at 1M (scale_bench), ~9 ms
    ivf_train_iterations: int = Field(default=10, ge=1)
    # OpenMP threads of a (background) build; 1 because on a busy 2-core host 2 was no faster.
    build_threads: int = Field(default=1, ge=1)
    hnsw_m: int = Field(default=32, ge=4)
    hnsw_ef_search: int = Field(default=128, ge=8)
    hnsw_ef_construction: int = Field(default=64, ge=8)


class LearnerConfig(_Config):
    """Pattern/heuristic extraction off the hot path."""

    pool_size: int = Field(default=1, ge=1)
    max_in_flight: int = Field(default=10, ge=1)
    merge_batch_size: int = Field(default=64, ge=1)


class RateLimitConfig(_Config):
    """Token buckets per agent/tenant key; off by default."""

    enabled: bool = False
    episodes_per_s: float = Field(default=50.0, gt=0)
    episodes_burst: int = Field(default=100, ge=1)
    steps_per_s: float = Field(default=5_000.0, gt=0)
    steps_burst: int = Field(default=20_000, ge=1)


class RayConfig(_Config):
    """Where the service actors live and how they are found."""

    address: str | None = None  # None: attach to a running Ray if any, else start a local one
    namespace: str = "episodic_memory"
    memory_name: str = "default"  # several memories may share one namespace
    placement: Literal["hosted", "dedicated"] = "hosted"
    num_hosts: int | None = Field(default=None, ge=1)  # None: number of CPUs
    num_cpus: int | None = Field(default=None, ge=1)  # for a local Ray this memory starts
    detached: bool = False  # True for `episodic-memory serve`
    object_store_memory_bytes: int | None = None
    storage_resources: dict[str, float] = Field(default_factory=dict)  # pin storage to a node


class MemoryConfig(_Config):
    """Everything needed to open a memory. The embedded default needs no arguments."""

    data_dir: Path = Path(".episodic-memory")
    storage: StorageConfig = StorageConfig()
    cache: CacheConfig = CacheConfig()
    flush: FlushPolicy = FlushPolicy()
    index: IndexConfig = IndexConfig()
    learner: LearnerConfig = LearnerConfig()
    rate_limit: RateLimitConfig = RateLimitConfig()
    ray: RayConfig = RayConfig()
    limits: InputLimits = DEFAULT_LIMITS

    @property
    def database_url(self) -> str:
        """The libSQL URL in force: the configured one, else a file under ``data_dir``."""
        if self.storage.database_url:
            return self.storage.database_url
        return f"file:{(self.data_dir / 'memory.db').resolve()}"

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache.lmdb"

    @property
    def index_dir(self) -> Path:
        return self.data_dir / "index"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> MemoryConfig:
        """Defaults, then environment variables, then explicit ``overrides``."""
        env = os.environ if env is None else env
        storage: dict[str, object] = {}
        if url := env.get("TURSO_DATABASE_URL") or env.get(ENV_PREFIX + "DATABASE_URL"):
            storage["database_url"] = url
        if token := env.get("TURSO_AUTH_TOKEN") or env.get(ENV_PREFIX + "AUTH_TOKEN"):
            storage["auth_token"] = SecretStr(token)
        data: dict[str, object] = {}
        if data_dir := env.get(ENV_PREFIX + "DATA_DIR"):
            data["data_dir"] = Path(data_dir)
        ray: dict[str, object] = {}
        if address := env.get(ENV_PREFIX + "RAY_ADDRESS"):
            ray["address"] = address
        if namespace := env.get(ENV_PREFIX + "NAMESPACE"):
            ray["namespace"] = namespace
        if placement := env.get(ENV_PREFIX + "PLACEMENT"):
            ray["placement"] = placement
        index: dict[str, object] = {}
        if embedder := env.get(ENV_PREFIX + "EMBEDDER"):
            index["embedder"] = embedder
        cache: dict[str, object] = {}
        if max_cache := env.get(ENV_PREFIX + "MAX_EPISODES_CACHE") or env.get("MAX_EPISODES_CACHE"):
            cache["max_episodes_cache"] = int(max_cache)
        if storage:
            data["storage"] = StorageConfig(**storage)
        if ray:
            data["ray"] = RayConfig(**ray)
        if index:
            data["index"] = IndexConfig(**index)
        if cache:
            data["cache"] = CacheConfig(**cache)
        data.update(overrides)
        return cls(**data)
