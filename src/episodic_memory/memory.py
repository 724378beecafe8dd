"""SelfLearningMemory: the public async API, over the Ray service or an in-process backend.

::

    memory = await SelfLearningMemory.open()              # local default: ./.episodic-memory/
    episode_id = await memory.start_episode("fix the login test", TaskContext(domain="web"))
    await memory.log_steps(episode_id, [ExecutionStep(tool="pytest", success=False), ...])
    result = await memory.complete_episode(episode_id, TaskOutcome.success("green"))
    context = await memory.retrieve_relevant_context("fix the signup test", limit=5)
    report = await memory.bulk_ingest(past_episodes, checkpoint="ingest.checkpoint")

Inputs are validated here, at the edge, into our typed errors naming the field, before any
backend sees them; everything else is the backend's. ``SyncMemory`` (``memory_sync.py``) is the
same API for code that is not async, sharing all of this.

Which Ray (backend ``"ray"``, the default): ``config.ray.address`` when set (``"auto"`` or a
head's ``host:port``); else the Ray this process already initialised; else a new local Ray on
loopback only, shut down again by ``close()``. Attaching to a head started elsewhere with
``ray start`` needs that cluster's auth token (Ray 2.60 turns token auth on): run on a node
that has ``~/.ray/auth_token`` or set ``RAY_AUTH_TOKEN`` and ``RAY_AUTH_MODE=token`` before
opening, exactly as for any Ray driver. The memory is found by name: drivers and tasks that
open the same ``namespace`` and ``memory_name`` share it.

A memory handle pickles to its names, so it can be passed into Ray tasks and actors: there it
reconnects to the same named actors on first use (it never creates a service). The in-process
backend (``backend="in_process"``: plain classes, no Ray) cannot be shared that way.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterable, Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from episodic_memory.actors.episode_state import CompletionResult
from episodic_memory.backends import Backend, BackendKind, open_backend
from episodic_memory.config import MemoryConfig
from episodic_memory.core.context import RetrievedContext
from episodic_memory.core.models import Episode, ExecutionStep, TaskContext, TaskOutcome, Verdict
from episodic_memory.core.sanitize import redact, sanitize_episode
from episodic_memory.core.task_type import classify_task
from episodic_memory.errors import ServiceError, ValidationError
from episodic_memory.ingest import (
    DEFAULT_BATCH_SIZE,
    IngestCheckpoint,
    IngestItem,
    IngestReport,
    Progress,
    iterable_source,
    run_ingest,
)
from episodic_memory.ingest.files import default_checkpoint, ingest_file
from episodic_memory.rate_limit import ANONYMOUS, RateLimiter, ray_rejection_counter
from episodic_memory.storage.base import EpisodeQuery
from episodic_memory.storage.reconcile import RepairReport

if TYPE_CHECKING:
    from episodic_memory.memory_sync import SyncMemory

__all__ = ["CompletionResult", "SelfLearningMemory"]

StepInput = ExecutionStep | Mapping[str, Any]
Durability = Literal["buffered", "strict"]


def _as(model: Any, value: Any, field: str) -> Any:
    """Validate ``value`` into ``model``; errors are re-rooted at the argument's name."""
    if isinstance(value, model):
        return value
    if not isinstance(value, Mapping):
        raise ValidationError(field, f"is a {type(value).__name__}", f"pass a {model.__name__}")
    try:
        return model.model_validate(dict(value))
    except ValidationError as exc:
        inner = exc.field.split(".", 1)[1] if "." in exc.field else ""
        raise ValidationError(
            f"{field}.{inner}" if inner else field, exc.problem, exc.fix
        ) from None


def _episode_id(value: object) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 200:
        raise ValidationError(
            "episode_id", "is not an episode id", "pass the string start_episode() returned"
        )
    return value


def _steps(values: Sequence[StepInput], limit: int) -> list[ExecutionStep]:
    if isinstance(values, str | bytes | Mapping) or not isinstance(values, Sequence):
        raise ValidationError("steps", "is not a list", "pass a list of ExecutionStep")
    if len(values) > limit:
        raise ValidationError("steps", f"has {len(values)} steps", f"send at most {limit} per call")
    return [_as(ExecutionStep, value, f"steps.{i}") for i, value in enumerate(values)]


def _durability(value: object) -> Durability:
    if value not in ("buffered", "strict"):
        raise ValidationError("durability", f"is {value!r}", "use 'buffered' or 'strict'")
    return "strict" if value == "strict" else "buffered"


def _flag(value: object, field: str) -> bool:
    if not isinstance(value, bool):
        raise ValidationError(field, f"is {value!r}", "use True or False")
    return value


def _checkpoint(value: object) -> IngestCheckpoint | None:
    if value is None or isinstance(value, IngestCheckpoint):
        return value
    if isinstance(value, str | os.PathLike) and str(value):
        return IngestCheckpoint(value)
    raise ValidationError("checkpoint", f"is {value!r}", "pass a file path, or None")


def _bounded(value: object, field: str, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
        raise ValidationError(field, f"is {value!r}", f"use a whole number from 1 to {high}")
    return value


class SelfLearningMemory:
    """The async memory API. Open with ``await SelfLearningMemory.open(config)``."""

    def __init__(
        self, config: MemoryConfig, kind: BackendKind, backend: Backend | None = None
    ) -> None:
        self._config = config
        self._kind = kind
        self._backend = backend
        self._closed = False
        self._limiter: RateLimiter | None = None
        if config.rate_limit.enabled:  # per handle, keyed by agent (docs/durability.md)
            hook = ray_rejection_counter(config.ray.memory_name) if kind == "ray" else None
            self._limiter = RateLimiter(config.rate_limit, on_reject=hook)

    @classmethod
    async def open(
        cls, config: MemoryConfig | None = None, *, backend: BackendKind = "ray"
    ) -> SelfLearningMemory:
        """Open (creating if needed) the memory ``config`` names; defaults from the env."""
        config = config if config is not None else MemoryConfig.from_env()
        return await cls._open(config, backend, owns_ray=None)

    @classmethod
    async def _open(
        cls, config: MemoryConfig, backend: BackendKind, *, owns_ray: bool | None
    ) -> SelfLearningMemory:
        opened = await open_backend(config, backend, owns_ray=owns_ray)
        return cls(opened.config, backend, opened)

    @classmethod
    def open_sync(
        cls, config: MemoryConfig | None = None, *, backend: BackendKind = "ray"
    ) -> SyncMemory:
        """The same memory behind blocking methods (see ``SyncMemory``)."""
        from episodic_memory.memory_sync import SyncMemory

        return SyncMemory.open(config, backend=backend)

    @property
    def config(self) -> MemoryConfig:
        """The service's configuration (a client attaching to a running memory adopts it)."""
        return self._config

    async def _b(self) -> Backend:
        if self._closed:
            raise ServiceError("this memory handle is closed; open the memory again")
        if self._backend is None:
            # Unpickled in a Ray worker: find the service by name, never create one.
            self._backend = await open_backend(self._config, "ray", create=False)
        return self._backend

    async def start_episode(
        self,
        description: str,
        context: TaskContext | Mapping[str, Any] | None = None,
        *,
        agent_id: str | None = None,
    ) -> str:
        """Begin an episode; its header is durable before the id is returned.

        With ``config.rate_limit.enabled`` a call over the agent's budget raises
        ``RateLimitExceeded`` (``retry_after_s``) and writes nothing.
        """
        ctx = TaskContext() if context is None else _as(TaskContext, context, "context")
        if not isinstance(description, str):
            raise ValidationError("description", "is not a string", "describe the task in text")
        try:
            header = Episode(task_description=description, context=ctx, agent_id=agent_id)
        except ValidationError as exc:  # name the argument, not the model's field
            field = exc.field.replace("Episode.task_description", "description")
            raise ValidationError(field.replace("Episode.", ""), exc.problem, exc.fix) from None
        header = sanitize_episode(
            header.model_copy(update={"task_type": classify_task(description, ctx)})
        )
        backend = await self._b()
        key = agent_id or ANONYMOUS
        if self._limiter is not None:
            self._limiter.admit(key, "episodes")
        await backend.start(header)
        if self._limiter is not None:
            self._limiter.remember(header.episode_id, key)
        return header.episode_id

    async def log_step(
        self, episode_id: str, step: StepInput, *, durability: Durability = "buffered"
    ) -> int:
        """Append one step; returns its step number. Prefer ``log_steps`` for bursts."""
        return (await self.log_steps(episode_id, [step], durability=durability))[0]

    async def log_steps(
        self,
        episode_id: str,
        steps: Sequence[StepInput],
        *,
        durability: Durability = "buffered",
    ) -> list[int]:
        """Append a burst of steps in one call; returns their step numbers, in order.

        ``"buffered"`` (default): the steps are in the episode's actor when this returns and
        durable in libSQL after its next flush (at most ``flush_interval_s`` later, at once
        when the buffer reaches ``flush_max_steps``). ``"strict"``: they are durable in
        libSQL when this returns (one extra flush round trip). See docs/durability.md.
        """
        eid = _episode_id(episode_id)
        mode = _durability(durability)
        checked = _steps(steps, self._config.limits.max_steps_per_call)
        if not checked:
            return []
        backend = await self._b()
        if self._limiter is not None:
            self._limiter.admit(self._limiter.key_for(eid), "steps", len(checked))
        numbers = await backend.log_steps(eid, checked, uuid.uuid4().hex)
        if mode == "strict":
            await backend.flush(eid)
        return numbers

    async def complete_episode(
        self, episode_id: str, outcome: TaskOutcome | Mapping[str, Any]
    ) -> CompletionResult:
        """Seal the episode; it is stored and indexed (retrievable) when this returns.

        Learning from it continues in the background. Completing again with the same outcome
        returns the first result with ``already_completed=True``.
        """
        eid = _episode_id(episode_id)
        result = await (await self._b()).complete(eid, _as(TaskOutcome, outcome, "outcome"))
        if self._limiter is not None:
            self._limiter.forget(eid)
        return result

    async def retrieve_relevant_context(
        self,
        description: str,
        context: TaskContext | Mapping[str, Any] | None = None,
        limit: int = 5,
    ) -> RetrievedContext:
        """The most useful past episodes for a task, with patterns, heuristics and tools."""
        if not isinstance(description, str) or not description.strip():
            raise ValidationError("description", "is empty", "describe the task in text")
        max_chars = self._config.limits.max_description_chars
        if len(description) > max_chars:
            raise ValidationError("description", "is too long", f"keep it under {max_chars} chars")
        ctx = None if context is None else _as(TaskContext, context, "context")
        k = _bounded(limit, "limit", self._config.limits.max_retrieve_limit)
        return await (await self._b()).retrieve(description, ctx, k)

    async def get_episode(self, episode_id: str) -> Episode:
        """The episode with its steps: live from its episode actor while active."""
        return await (await self._b()).get_episode(_episode_id(episode_id))

    async def list_episodes(
        self,
        *,
        domain: str | None = None,
        task_type: str | None = None,
        verdict: Verdict | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 50,
    ) -> list[Episode]:
        """Episode headers (no steps), newest first."""
        query = _as(
            EpisodeQuery,
            {
                "domain": domain,
                "task_type": task_type,
                "verdict": verdict,
                "started_after": since,
                "started_before": until,
                "limit": _bounded(limit, "limit", 10_000),
            },
            "filters",
        )
        return await (await self._b()).list_episodes(query)

    async def bulk_ingest(
        self,
        episodes: Iterable[IngestItem] | AsyncIterable[IngestItem],
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        progress: Progress | None = None,
        checkpoint: IngestCheckpoint | str | os.PathLike[str] | None = None,
        learn: bool = True,
    ) -> IngestReport:
        """Store many episodes in large batches, each batch in one storage transaction.

        ``episodes``: ``Episode`` objects or dicts of their JSON (older shapes load; export
        lines too), completed or active, from any sync or async iterable — read as it goes.
        They are validated, redacted and, when completed without them, given reward and
        reflection; each batch then costs a few service calls, none per episode. An episode
        id already stored is kept as stored (``report.skipped``), so re-running is safe.

        A bad record raises ``ValidationError`` naming its position and field
        (``episodes[17].steps.3.tool``); nothing of its batch is written, earlier batches are
        (fix it and rerun: what is stored is skipped).
        ``progress(done, total)`` is called after every committed batch. ``checkpoint``: a file
        recording how far the input is committed; a rerun with it resumes after the last
        committed batch (deleted when done). ``learn=True``: patterns and heuristics are
        learned in the background (``settle()`` waits); ``False``: never learned from these.
        Details: ``episodic_memory.ingest``.
        """
        source = iterable_source(episodes)
        backend = await self._b()
        return await run_ingest(
            backend,
            source,
            target=redact(backend.config.database_url),
            limits=self._config.limits,
            batch_size=batch_size,
            progress=progress,
            checkpoint=_checkpoint(checkpoint),
            learn=_flag(learn, "learn"),
        )

    async def import_file(
        self,
        path: str | os.PathLike[str],
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        progress: Progress | None = None,
        checkpoint: bool | str | os.PathLike[str] = True,
        learn: bool = True,
    ) -> IngestReport:
        """``bulk_ingest`` a JSONL file: an export (``transfer.py``), or one episode per line.

        Works on a running memory (unlike ``transfer.import_memory``, which writes below a
        stopped one). ``checkpoint=True`` keeps it beside the file (``<file>.checkpoint``), so
        running the same import again after a crash resumes; a path puts it there; ``False``
        keeps none. An export's patterns and heuristics the memory lacks are added.
        """
        source = Path(path)
        if checkpoint is True:
            chosen: IngestCheckpoint | None = IngestCheckpoint(default_checkpoint(source))
        else:
            chosen = None if checkpoint is False else _checkpoint(checkpoint)
        backend = await self._b()
        return await ingest_file(
            backend,
            source,
            target=redact(backend.config.database_url),
            limits=self._config.limits,
            batch_size=batch_size,
            progress=progress,
            checkpoint=chosen,
            learn=_flag(learn, "learn"),
        )

    async def sync_memories(self) -> RepairReport:
        """Flush buffered steps, then repair the LMDB cache from libSQL (the truth)."""
        return await (await self._b()).sync_memories()

    async def settle(self) -> None:
        """Flush every buffered step and wait for in-flight learning (demos, tests, backups)."""
        await (await self._b()).settle()

    async def stats(self) -> dict[str, Any]:
        """Counts per component: storage tables and cache, index, hosts, learners, and the
        rate limit's refusals (``rate_limit``) when it is on."""
        stats = await (await self._b()).stats()
        if self._limiter is not None:
            stats["rate_limit"] = self._limiter.stats()
        return stats

    async def close(self, *, stop_service: bool = False) -> None:
        """Flush buffered steps and let go of the service.

        The handle that created a (non-detached) service owns it: closing that one stops the
        service for every client. ``stop_service=True`` stops it from any handle, detached or
        not. A local Ray this memory started is shut down either way.
        """
        backend, self._backend = self._backend, None
        self._closed = True
        if backend is not None:
            await backend.close(stop_service=stop_service)

    async def __aenter__(self) -> SelfLearningMemory:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    def __reduce__(self) -> tuple[Any, ...]:
        if self._kind != "ray":
            raise ServiceError(
                "an in-process memory cannot be sent to another process; open it with "
                "backend='ray' to share it with Ray tasks and actors"
            )
        return (SelfLearningMemory, (self._config, "ray"))
