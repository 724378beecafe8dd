"""Export a whole memory to JSON Lines and import it back, streamed both ways.

One record per line, each with a ``type``; ``.gz`` paths are gzip-compressed::

    {"type": "header", "format": "episodic-memory", "format_version": 1, "schema_version": 1, ...}
    {"type": "pattern", "record": {...}}            every learned pattern, then
    {"type": "heuristic", "record": {...}}          every heuristic, then
    {"type": "episode", "learned": true, "record": {... "steps": [...]}}   oldest first
    {"type": "end", "counts": {"pattern": 3, "heuristic": 2, "episode": 120}}

Transfer works on a ``StorageService`` opened in this process on the memory's data folder or
database URL, not through the running Ray service: paging 100k episodes through ~1 ms actor
calls buys nothing when libSQL can be read directly, and an import must write *below* the
service (raw upserts, learned marks, index files), which a running service would not see — it
holds patterns and its index in memory. So: exporting a served memory is safe (it reads
committed rows; steps still buffered in episode actors, at most ``flush_interval_s`` old, are
not there yet — ``episodic-memory export --address`` flushes them first), while
``import_memory`` refuses a memory that is being served (its folder is locked) and, without
``merge``, one that holds anything. Into a *served* memory, import through the service instead:
``SelfLearningMemory.import_file`` (``episodic-memory import --address ...``) reads the same
file with bulk ingest (``episodic_memory.ingest``) — batches through the storage actor,
resumable, merging into what the memory holds.

Exports come from storage, which holds only sanitized records; import sanitizes episodes again
(a fixpoint for exported data), so a hand-edited file cannot bring a secret in. Embeddings are
not exported (derived, large, embedder-specific): import re-embeds completed episodes with the
target's embedder and saves the target's index, so the memory opens ready to retrieve.

Every import write is an idempotent upsert, so an interrupted import is finished by running it
again with ``merge=True``: records already present are kept, the rest are added.
"""

from __future__ import annotations

import asyncio
import gzip
import itertools
import os
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from episodic_memory.actors.index_thread import ThreadedIndex, restore_index
from episodic_memory.config import MemoryConfig
from episodic_memory.core.base import SCHEMA_VERSION, utc_now
from episodic_memory.core.models import Episode
from episodic_memory.core.patterns import (
    ContextPattern,
    DecisionPoint,
    ErrorRecovery,
    Heuristic,
    Pattern,
    ToolSequence,
)
from episodic_memory.core.sanitize import sanitize_episode
from episodic_memory.errors import ValidationError
from episodic_memory.index.service import IndexService
from episodic_memory.storage.base import EpisodeStore
from episodic_memory.storage.libsql_store import open_store
from episodic_memory.storage.service import StorageService

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "TransferReport",
    "check_framing",
    "export_memory",
    "import_memory",
    "is_export",
    "open_jsonl",
    "parse_line",
]

FORMAT = "episodic-memory"
FORMAT_VERSION = 1
BATCH = 500
"""Episodes per read page and per write transaction."""

_KINDS = ("pattern", "heuristic", "episode")
Progress = Callable[[int, int | None], None]
"""Called with (episodes done, episodes in total when known)."""

_PatternClass = (
    type[ToolSequence] | type[DecisionPoint] | type[ErrorRecovery] | type[ContextPattern]
)
_PATTERNS: dict[str, _PatternClass] = {
    cls.model_fields["kind"].default: cls
    for cls in (ToolSequence, DecisionPoint, ErrorRecovery, ContextPattern)
}


@dataclass
class TransferReport:
    """What an export wrote or an import added (``skipped``: kept as they were, merge)."""

    path: str
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_KINDS, 0))
    skipped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_KINDS, 0))


@contextmanager
def open_jsonl(path: Path, mode: str, *, gz: bool | None = None) -> Iterator[IO[bytes]]:
    """``path`` as bytes; gzip when its name ends in ``.gz`` (or ``gz`` says so)."""
    gz = path.suffix == ".gz" if gz is None else gz
    with gzip.open(path, mode + "b") if gz else path.open(mode + "b") as f:
        yield f  # type: ignore[misc]


def _line(record: dict[str, Any]) -> bytes:
    return orjson.dumps(record) + b"\n"


# --- export -----------------------------------------------------------------------------------
async def export_memory(
    source: MemoryConfig | StorageService | EpisodeStore,
    path: str | os.PathLike[str],
    *,
    progress: Progress | None = None,
) -> TransferReport:
    """Write every pattern, heuristic and episode (with steps) of ``source`` to ``path``.

    ``source`` is a configuration, an open ``StorageService`` or an ``EpisodeStore``. A
    configuration's database is opened as a plain store: a reader, so it takes neither the
    cache nor the data folder's lock, and can read a folder a running service owns (WAL
    readers see every committed write). The file appears whole or not at all: it is written
    beside ``path`` and renamed when the end line is in.
    """
    if isinstance(source, MemoryConfig):
        store = await open_store(source)
        try:
            return await export_memory(store, path, progress=progress)
        finally:
            await store.close()
    store = source.store if isinstance(source, StorageService) else source
    target = Path(path)
    partial = target.with_name(target.name + ".partial")
    report = TransferReport(str(target))
    total = (await store.counts())["episodes"]
    header = {"type": "header", "format": FORMAT, "format_version": FORMAT_VERSION}
    header |= {"schema_version": SCHEMA_VERSION, "exported_at": utc_now().isoformat()}
    try:
        with open_jsonl(partial, "w", gz=target.suffix == ".gz") as out:
            out.write(_line(header))
            for pattern in await store.load_patterns():
                out.write(_line({"type": "pattern", "record": pattern.model_dump(mode="json")}))
                report.counts["pattern"] += 1
            for heuristic in await store.load_heuristics():
                out.write(_line({"type": "heuristic", "record": heuristic.model_dump(mode="json")}))
                report.counts["heuristic"] += 1
            async for page in store.iter_episodes(BATCH):
                learned = await store.learned_episode_ids([e.episode_id for e in page])
                for episode in page:
                    record = episode.model_dump(mode="json")
                    line = {"type": "episode", "learned": episode.episode_id in learned}
                    out.write(_line(line | {"record": record}))
                report.counts["episode"] += len(page)
                if progress is not None:
                    progress(report.counts["episode"], total)
            out.write(_line({"type": "end", "counts": report.counts}))
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return report


# --- import -----------------------------------------------------------------------------------
def _bad(path: Path, number: int, problem: str, fix: str) -> ValidationError:
    return ValidationError(f"{path.name}:{number}", problem, fix)


def is_export(path: Path) -> bool:
    """Whether ``path`` starts with an export's header (an unreadable file is not one)."""
    try:
        with open_jsonl(path, "r") as f:
            for raw in f:
                if raw.strip():
                    first = orjson.loads(raw)
                    return isinstance(first, dict) and first.get("format") == FORMAT
    except (OSError, EOFError, gzip.BadGzipFile, orjson.JSONDecodeError):
        return False
    return False


def check_framing(path: Path) -> dict[str, Any]:
    """The header, after checking that the file ends with its end line (not truncated)."""
    try:
        with open_jsonl(path, "r") as f:
            first = f.readline()
            last = first
            for line in f:
                if line.strip():
                    last = line
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise ValidationError("path", f"cannot read {path}: {exc}", "pass an export file") from None
    try:
        header, end = orjson.loads(first), orjson.loads(last)
    except orjson.JSONDecodeError:
        raise _bad(path, 1, "is not JSON Lines", "pass a file written by export") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise _bad(path, 1, "has no episodic-memory header", "pass a file written by export")
    if (
        not isinstance(header.get("format_version"), int)
        or header["format_version"] > FORMAT_VERSION
    ):
        raise _bad(
            path, 1, f"is format {header.get('format_version')!r}", "upgrade episodic-memory"
        )
    if not isinstance(end, dict) or end.get("type") != "end":
        raise ValidationError(
            "path", f"{path} has no end line (truncated?)", "export again; the file is incomplete"
        )
    return header


def _records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with open_jsonl(path, "r") as f:
        for number, raw in enumerate(f, start=1):
            if raw.strip():
                try:
                    yield number, orjson.loads(raw)
                except orjson.JSONDecodeError:
                    raise _bad(
                        path, number, "is not JSON", "repair or re-export the file"
                    ) from None


def parse_line(path: Path, number: int, line: dict[str, Any]) -> Pattern | Heuristic | Episode:
    kind, record = line.get("type"), line.get("record")
    if not isinstance(record, dict):
        raise _bad(path, number, f"{kind!r} line has no record", "repair or re-export the file")
    try:
        if kind == "episode":
            return sanitize_episode(Episode.model_validate(record))
        if kind == "heuristic":
            return Heuristic.model_validate(record)
        cls = _PATTERNS.get(str(record.get("kind")))
        if kind == "pattern" and cls is not None:
            return cls.model_validate(record)
    except ValidationError as exc:
        raise _bad(path, number, f"{kind} {exc.field}: {exc.problem}", exc.fix) from None
    raise _bad(path, number, f"has unknown type {kind!r}", "repair or re-export the file")


class _Importer:
    """Batched writes of parsed records into one store, and the index kept level with them."""

    def __init__(self, service: StorageService, index: ThreadedIndex, merge: bool) -> None:
        self.store = service.store
        self.index = index
        self.merge = merge
        self.report = TransferReport("")
        self.patterns: list[Pattern] = []
        self.heuristics: list[Heuristic] = []

    async def learned_records(self) -> None:
        """Patterns and heuristics in one transaction (merge: ones already there are kept)."""
        patterns, heuristics = self.patterns, self.heuristics
        if self.merge:
            have_p = {p.pattern_id for p in await self.store.load_patterns()}
            have_h = {h.heuristic_id for h in await self.store.load_heuristics()}
            patterns = [p for p in patterns if p.pattern_id not in have_p]
            heuristics = [h for h in heuristics if h.heuristic_id not in have_h]
        await self.store.commit_learning(patterns, heuristics, [])
        for kind, wanted, added in (
            ("pattern", self.patterns, patterns),
            ("heuristic", self.heuristics, heuristics),
        ):
            self.report.counts[kind] += len(added)
            self.report.skipped[kind] += len(wanted) - len(added)
        self.patterns, self.heuristics = [], []

    async def episodes(self, batch: Sequence[tuple[Episode, bool]]) -> None:
        """Steps first (completed episodes' full-text rows read them), then headers, marks,
        vectors. Merge: a stored episode keeps its header; its missing steps are added."""
        ids = [e.episode_id for e, _ in batch]
        have = {e.episode_id for e in await self.store.get_episodes(ids)} if self.merge else set()
        await self.store.append_steps([(e.episode_id, s) for e, _ in batch for s in e.steps])
        fresh = [(e, learned) for e, learned in batch if e.episode_id not in have]
        await self.store.put_episodes([e for e, _ in fresh])
        await self.store.mark_learned([e.episode_id for e, learned in fresh if learned])
        completed = [e for e, _ in fresh if e.status == "completed"]
        if completed:
            await self.store.put_embeddings(await self.index.add_episodes(completed))
            # The learner teaches the predictor the unlearned ones when it learns them.
            marked = {e.episode_id for e, learned in fresh if learned}
            await self.index.observe([e for e in completed if e.episode_id in marked])
        self.report.counts["episode"] += len(fresh)
        self.report.skipped["episode"] += len(batch) - len(fresh)


async def import_memory(
    target: MemoryConfig | StorageService,
    path: str | os.PathLike[str],
    *,
    merge: bool = False,
    progress: Progress | None = None,
) -> TransferReport:
    """Load an export into ``target``'s store and index; the memory must not be running.

    Without ``merge`` the target must be empty (no episodes, patterns or heuristics).
    """
    if isinstance(target, MemoryConfig):
        service = await StorageService.open(target)
        try:
            return await import_memory(service, path, merge=merge, progress=progress)
        finally:
            await service.close()
    source = Path(path)
    check_framing(source)
    counts = await target.store.counts()
    held = {k: counts[k] for k in ("episodes", "patterns", "heuristics") if counts[k]}
    if held and not merge:
        raise ValidationError(
            "target", f"the memory is not empty ({held})", "import into an empty memory, or merge"
        )
    config = target.config
    index = ThreadedIndex(await asyncio.to_thread(IndexService, config.index, config.index_dir))
    try:
        await restore_index(index, target)
        importer = _Importer(target, index, merge)
        importer.report.path = str(source)
        await _run(importer, source, progress)
        await index.save()
    finally:
        index.close()
    await target.sync_memories()  # the LMDB cache follows what was written below it
    return importer.report


async def _run(importer: _Importer, path: Path, progress: Progress | None) -> None:
    total = None
    batch: list[tuple[Episode, bool]] = []
    async for number, line in _lines(path):
        kind = line.get("type")
        if kind in ("header", "end"):
            if kind == "end" and isinstance(line.get("counts"), dict):
                total = line["counts"].get("episode")
            continue
        record = parse_line(path, number, line)
        if isinstance(record, Episode):
            if importer.patterns or importer.heuristics:
                await importer.learned_records()
            batch.append((record, line.get("learned") is True))
            if len(batch) >= BATCH:
                await importer.episodes(batch)
                batch = []
                if progress is not None:
                    progress(importer.report.counts["episode"], total)
        elif isinstance(record, Heuristic):
            importer.heuristics.append(record)
        else:
            importer.patterns.append(record)
    if batch:
        await importer.episodes(batch)
    if importer.patterns or importer.heuristics:
        await importer.learned_records()
    if progress is not None:
        done = importer.report.counts["episode"] + importer.report.skipped["episode"]
        progress(done, done)


async def _lines(path: Path) -> AsyncIterator[tuple[int, dict[str, Any]]]:
    """The file's records, read in a worker thread a block at a time (gzip is CPU work)."""
    reader = _records(path)
    while True:
        block = await asyncio.to_thread(lambda: list(itertools.islice(reader, BATCH)))
        for item in block:
            if not isinstance(item[1], dict):
                raise _bad(path, item[0], "is not a JSON object", "repair or re-export the file")
            yield item
        if len(block) < BATCH:
            return
