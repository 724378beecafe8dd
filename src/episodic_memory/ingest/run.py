"""Running an ingest: batches read, prepared and written several at a time, counted in order.

See the package docstring (``episodic_memory.ingest``) for the design. ``BatchWriter`` is the
write path of one batch, shared by both backends; ``run_ingest`` reads a ``Source`` a batch at a
time and hands each batch to an ``IngestSink`` (a backend), keeping at most its
``ingest_parallelism`` batches in flight, and records a batch in the checkpoint only once it and
every batch before it have landed.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

from episodic_memory.config import InputLimits
from episodic_memory.core.models import Episode
from episodic_memory.core.patterns import Heuristic, Pattern
from episodic_memory.errors import ValidationError
from episodic_memory.ingest.prepare import Prepared, prepare_batch
from episodic_memory.ingest.sources import MAX_BATCH_SIZE, IngestCheckpoint, Source
from episodic_memory.storage.base import StoredEmbedding
from episodic_memory.storage.bulk import BatchResult, IngestRows, embedding_rows

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "BatchWriter",
    "IngestReport",
    "IngestSink",
    "Progress",
    "run_ingest",
]

DEFAULT_BATCH_SIZE = 1_000
IN_FLIGHT = 3
"""Batches in flight in one process: one being prepared while others are written."""

Progress = Callable[[int, int | None], None]
"""Called with (episodes done, episodes in total when known) after every committed batch."""


@dataclass
class IngestReport:
    """What an ingest did. Counts include earlier runs it resumed; ``seconds`` is this run's."""

    episodes: int = 0  # written
    skipped: int = 0  # already stored (kept as stored), or repeated in the input
    steps: int = 0  # step rows written
    batches: int = 0
    resumed_from: int = 0  # input position this run started after (0: from the start)
    learning: Literal["background", "skipped"] = "background"
    patterns: int = 0  # added by a file import (patterns it held already are kept)
    heuristics: int = 0
    seconds: float = 0.0
    handled: int = 0  # episodes written or skipped by this run (the rate's numerator)

    @property
    def episodes_per_s(self) -> float:
        return self.handled / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"episodes_per_s": round(self.episodes_per_s, 1)}


# --- write ------------------------------------------------------------------------------------
class StorageSide(Protocol):
    """What ingest needs of storage: ``StorageService`` and the storage actor's proxy."""

    async def stored_episode_ids(self, episode_ids: Sequence[str]) -> list[str]: ...

    async def ingest_rows(self, batch: IngestRows) -> BatchResult: ...

    async def add_learned_records(
        self, patterns: list[Pattern], heuristics: list[Heuristic]
    ) -> dict[str, int]: ...


class IndexSide(Protocol):
    async def add_episodes(self, episodes: list[Episode]) -> list[StoredEmbedding]: ...

    async def observe(self, episodes: list[Episode]) -> None: ...


_HEADER_ONLY: dict[str, Any] = {
    "steps": [],
    "reward": None,
    "reflection": None,
    "metadata": {},
    "pattern_ids": [],
}


class BatchWriter:
    """One prepared batch into storage and the index (see the module docstring, step 2).

    ``headers_only``: send the index the header without steps, reward, reflection and
    metadata (vectors are made from the task description and context,
    ``index.service.embedding_text``): across a Ray boundary those nested models are most of
    the unpickling (measured ~0.1 ms per episode in the index actor, 12× the slim header).
    """

    def __init__(self, storage: StorageSide, index: IndexSide, *, headers_only: bool) -> None:
        self.storage = storage
        self.index = index
        self.headers_only = headers_only

    async def write(self, batch: Prepared) -> BatchResult:
        have = set(await self.storage.stored_episode_ids([e.episode_id for e in batch.episodes]))
        todo = [e for e in batch.episodes if e.episode_id not in have]
        completed = [e for e in todo if e.status == "completed"]
        vectors: list[StoredEmbedding] = []
        if completed:
            sent = completed
            if self.headers_only:
                sent = [e.model_copy(update=_HEADER_ONLY) for e in completed]
            vectors = await self.index.add_episodes(sent)
        rows = [r for r in batch.rows if r.episode_id not in have]
        skipped = [e.episode_id for e in batch.episodes if e.episode_id in have]
        if not rows:  # a rerun over stored episodes: nothing to write
            return BatchResult([], skipped, 0, batch.repeats)
        result = await self.storage.ingest_rows(IngestRows(rows, embedding_rows(vectors)))
        written = set(result.written)
        marked = {r.episode_id for r in rows if r.learned and r.episode_id in written}
        if marked:  # learning skips them, so the tool predictor learns them here
            await self.index.observe([e for e in completed if e.episode_id in marked])
        return BatchResult(result.written, skipped + result.skipped, result.steps, batch.repeats)

    async def prepare_and_write(
        self, items: Sequence[tuple[str, object]], *, learn: bool, limits: InputLimits
    ) -> BatchResult:
        """Prepare a batch (in a worker thread: it is CPU work), then write it."""
        batch = await asyncio.to_thread(prepare_batch, items, learn=learn, limits=limits)
        return await self.write(batch)


class IngestSink(Protocol):
    """What ``run_ingest`` writes through: a backend of the memory.

    ``ingest`` prepares and writes one batch of raw records (where the preparing happens is
    the backend's choice: a thread here, Ray tasks across the cluster for the Ray backend);
    ``ingest_parallelism`` is how many batches may be in flight at once.
    """

    ingest_parallelism: int

    async def ingest(
        self, items: Sequence[tuple[str, object]], *, learn: bool, limits: InputLimits
    ) -> BatchResult: ...

    async def add_learned_records(
        self, patterns: list[Pattern], heuristics: list[Heuristic]
    ) -> dict[str, int]: ...

    def learn_in_background(self) -> None: ...


# --- the run ----------------------------------------------------------------------------------
def _batch_size(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_BATCH_SIZE:
        raise ValidationError(
            "batch_size", f"is {value!r}", f"use a whole number from 1 to {MAX_BATCH_SIZE}"
        )
    return value


_COUNTS = ("episodes", "skipped", "steps", "batches", "patterns", "heuristics")


@dataclass
class _Run:
    """One ingest's moving parts: batches in flight, in input order, and what they record."""

    sink: IngestSink
    source: Source
    report: IngestReport
    target: str
    checkpoint: IngestCheckpoint | None
    progress: Progress | None
    label: str | None
    pending: deque[tuple[asyncio.Future[BatchResult], int, str]] = field(default_factory=deque)
    broken: bool = False  # a write failed: later batches must not move the checkpoint

    def tell(self) -> None:
        if self.progress is not None:
            self.progress(self.report.episodes + self.report.skipped, self.source.total)

    async def resume(self) -> None:
        if self.checkpoint is None:
            return
        state = await asyncio.to_thread(self.checkpoint.read)
        if state is None:
            return
        self.checkpoint.check(state, target=self.target, kind=self.source.kind)
        if not await self.source.skip(state["position"], state["digest"]):
            raise ValidationError(
                "checkpoint",
                f"the first {state['position']} {self.source.kind} of the input differ from "
                f"those {self.checkpoint.path} recorded",
                f"pass the same input, or delete {self.checkpoint.path} to start over",
            )
        found = state.get("report")
        counts: dict[str, Any] = found if isinstance(found, dict) else {}
        for name in _COUNTS:
            if isinstance(counts.get(name), int):
                setattr(self.report, name, counts[name])
        self.report.resumed_from = state["position"]

    def send(self, items: list[tuple[str, object]], learn: bool, limits: InputLimits) -> None:
        position, digest = self.source.mark()
        task = asyncio.ensure_future(self.sink.ingest(items, learn=learn, limits=limits))
        self.pending.append((task, position, digest))

    async def land_oldest(self) -> None:
        """Wait for the oldest batch in flight; count it and move the checkpoint past it."""
        task, position, digest = self.pending.popleft()
        try:
            result = await task
        except BaseException:
            self.broken = True
            raise
        report = self.report
        report.episodes += len(result.written)
        report.skipped += len(result.skipped) + result.repeats
        report.steps += result.steps
        report.batches += 1
        report.handled += len(result.written) + len(result.skipped) + result.repeats
        if self.checkpoint is not None and not self.broken:
            state = {
                "target": self.target,
                "kind": self.source.kind,
                "source": self.label,
                "position": position,
                "digest": digest,
                "report": {name: getattr(report, name) for name in _COUNTS},
            }
            await asyncio.to_thread(self.checkpoint.write, state)
        self.tell()

    async def drain_after_failure(self) -> None:
        """Batches already sent are valid: let them land (and be recorded) before raising."""
        while self.pending:
            try:
                await self.land_oldest()
            except BaseException:
                tasks = [task for task, *_ in self.pending]
                self.pending.clear()
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                return


async def run_ingest(
    sink: IngestSink,
    source: Source,
    *,
    target: str,
    limits: InputLimits,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Progress | None = None,
    checkpoint: IngestCheckpoint | None = None,
    learn: bool = True,
    label: str | None = None,
    report: IngestReport | None = None,
) -> IngestReport:
    """Ingest ``source`` through ``sink``; see the module docstring.

    ``target`` names the memory written to (checked against a checkpoint's); ``label`` is the
    input's name recorded in the checkpoint (a file's path).
    """
    size = _batch_size(batch_size)
    report = report if report is not None else IngestReport()
    report.learning = "background" if learn else "skipped"
    run = _Run(sink, source, report, target, checkpoint, progress, label)
    started = time.perf_counter()
    try:
        await run.resume()
        run.tell()
        while items := await source.take(size):
            run.send(items, learn, limits)
            while len(run.pending) >= max(1, sink.ingest_parallelism):
                await run.land_oldest()
        while run.pending:
            await run.land_oldest()
    except BaseException:
        await run.drain_after_failure()
        raise
    finally:
        report.seconds = time.perf_counter() - started
    if checkpoint is not None:
        await asyncio.to_thread(checkpoint.remove)
    if learn:
        sink.learn_in_background()
    return report
