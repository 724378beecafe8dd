"""One error tree for the whole package.

Callers catch ``EpisodicMemoryError`` for everything we raise; library errors (sqlite3,
libsql-client, LMDB, FAISS, pydantic, Ray) are translated where they enter our code, so no
foreign exception type leaks through the public API::

    EpisodicMemoryError
    ├── ValidationError            bad input; names the field and the fix (also a ValueError)
    ├── EpisodeNotFound            unknown episode id (also a KeyError)
    ├── EpisodeAlreadyCompleted    steps or a different outcome after completion
    ├── ConfigurationError         unusable configuration (bad URL, missing optional extra)
    ├── StorageError               the durable store or the cache failed
    │   ├── SchemaVersionError     database newer than this code, or a broken migration
    │   ├── DataFolderLocked       another process (or service) owns this data folder
    │   ├── QuotaExceeded          the remote store refused for quota (retries ran out)
    │   └── StoreUnavailable       the remote store could not be reached (retries ran out)
    ├── RateLimitExceeded          too many calls for a key; carries ``retry_after_s``
    └── ServiceError               the Ray service is missing, dead or misconfigured
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ConfigurationError",
    "DataFolderLocked",
    "EpisodeAlreadyCompleted",
    "EpisodeNotFound",
    "EpisodicMemoryError",
    "QuotaExceeded",
    "RateLimitExceeded",
    "SchemaVersionError",
    "ServiceError",
    "StorageError",
    "StoreUnavailable",
    "ValidationError",
]


class EpisodicMemoryError(Exception):
    """Root of every error this package raises on purpose."""


class ValidationError(EpisodicMemoryError, ValueError):
    """Input was rejected before anything was written.

    ``field`` is the dotted path of the offending value (``steps.3.latency_ms``) and ``fix``
    says what an acceptable value looks like.
    """

    def __init__(self, field: str, problem: str, fix: str = "") -> None:
        self.field = field
        self.problem = problem
        self.fix = fix
        message = f"{field}: {problem}"
        if fix:
            message += f" (fix: {fix})"
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        # Keeps the typed error intact across Ray's pickling of actor exceptions.
        return (type(self), (self.field, self.problem, self.fix))


class EpisodeNotFound(EpisodicMemoryError, KeyError):
    """No episode with this id exists (never started, or started in another memory)."""

    def __init__(self, episode_id: str) -> None:
        self.episode_id = episode_id
        super().__init__(
            f"episode {episode_id!r} not found: start it with start_episode() first, "
            "or check that you opened the same memory (data folder / namespace)"
        )

    def __str__(self) -> str:  # KeyError would otherwise quote the whole message
        return str(self.args[0])

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.episode_id,))


class EpisodeAlreadyCompleted(EpisodicMemoryError):
    """The episode is sealed: no more steps, and no different outcome."""

    def __init__(self, episode_id: str, detail: str = "") -> None:
        self.episode_id = episode_id
        self.detail = detail
        message = f"episode {episode_id!r} is already completed"
        if detail:
            message += f": {detail}"
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.episode_id, self.detail))


class ConfigurationError(EpisodicMemoryError):
    """The configuration cannot work (bad URL, missing extra, conflicting options)."""


class StorageError(EpisodicMemoryError):
    """The durable store or the cache failed; nothing was acknowledged for the failed call."""


class SchemaVersionError(StorageError):
    """The database schema is newer than this code, or a migration failed."""


class DataFolderLocked(StorageError):
    """The data folder is owned by another open memory; ``holder_pid`` names its process."""

    def __init__(
        self, data_dir: object, holder_pid: int | None, own_pid: int | None = None
    ) -> None:
        self.data_dir = str(data_dir)
        self.holder_pid = holder_pid
        self.own_pid = own_pid
        if holder_pid is not None and holder_pid == own_pid:
            who = f"already open in this process (pid {holder_pid})"
        else:
            who = f"held by process {holder_pid if holder_pid is not None else '(unknown)'}"
        super().__init__(
            f"data folder {self.data_dir} is {who}: one memory owns a folder at a time; "
            "close that memory (or connect to its service) instead of opening the folder again"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.data_dir, self.holder_pid, self.own_pid))


class QuotaExceeded(StorageError):
    """The remote store refused a write for quota and retries ran out."""


class StoreUnavailable(StorageError):
    """The remote store could not be reached and retries ran out."""


class RateLimitExceeded(EpisodicMemoryError):
    """Too many calls for one agent/tenant key; retry after ``retry_after_s`` seconds."""

    def __init__(self, key: str, retry_after_s: float, what: str = "calls") -> None:
        self.key = key
        self.retry_after_s = retry_after_s
        self.what = what
        super().__init__(
            f"rate limit for {what} exceeded for key {key!r}: retry after {retry_after_s:.3f}s"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.key, self.retry_after_s, self.what))


class ServiceError(EpisodicMemoryError):
    """The Ray service is missing, dead, or could not be started."""
