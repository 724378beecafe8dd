"""Importing a JSON Lines file through ``bulk_ingest``: an export, or one episode per line.

Two shapes are recognised by the first line:

- the project's export (``transfer.py``): a header, patterns and heuristics, episode lines
  ``{"type": "episode", "learned": ..., "record": {...}}``, an end line. The file must be whole
  (its end line is checked first, as the offline import does); patterns and heuristics the
  memory lacks are added before the episodes, ones it has are kept; episodes marked learned
  are stored learned (their patterns came with the file);
- plain JSON Lines: one episode object per line (``Episode`` fields; old shapes load), or
  export-style episode lines without the framing.

``.gz`` files are read compressed. A position counts physical lines and the digest covers their
raw bytes, so a checkpoint (``<file>.checkpoint`` by default) survives fixing a rejected line
*after* the committed prefix but refuses a file whose prefix changed. Lines are read and parsed
on a worker thread, a batch at a time.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
from pathlib import Path
from typing import IO, Any

import orjson

from episodic_memory.config import InputLimits
from episodic_memory.core.models import Episode
from episodic_memory.core.patterns import Heuristic, Pattern
from episodic_memory.errors import ValidationError
from episodic_memory.ingest.run import (
    DEFAULT_BATCH_SIZE,
    IngestReport,
    IngestSink,
    Progress,
    run_ingest,
)
from episodic_memory.ingest.sources import IngestCheckpoint
from episodic_memory.transfer import check_framing, is_export, parse_line

__all__ = ["FileSource", "default_checkpoint", "ingest_file"]

_FRAMING = frozenset({"header", "end", "pattern", "heuristic"})
_COUNT_BLOCK = 1 << 20


def default_checkpoint(path: Path) -> Path:
    """Where a file import keeps its checkpoint unless told: beside the file."""
    return path.with_name(path.name + ".checkpoint")


def _reader(path: Path) -> IO[bytes]:
    try:
        if path.suffix == ".gz":
            return gzip.open(path, "rb")  # type: ignore[return-value]  # a binary file object
        return path.open("rb")
    except OSError as exc:
        raise ValidationError("path", f"cannot read {path}: {exc}", "pass a JSONL file") from None


def _count_lines(path: Path) -> int:
    """Lines of an uncompressed file, counted in blocks (fast: for the progress bar only)."""
    lines, last = 0, b"\n"
    with _reader(path) as f:
        while block := f.read(_COUNT_BLOCK):
            lines += block.count(b"\n")
            last = block[-1:]
    return lines + (last != b"\n")


class FileSource:
    """A JSONL file as an ingest ``Source``; a position counts physical lines."""

    kind = "lines"

    def __init__(self, path: Path, total: int | None) -> None:
        self.path = path
        self.total = total
        self._file: IO[bytes] | None = None
        self._line = 0
        self._digest = hashlib.sha256()

    def _next(self) -> bytes:
        if self._file is None:
            self._file = _reader(self.path)
        try:
            raw = self._file.readline()
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            raise ValidationError(
                f"{self.path.name}:{self._line + 1}", f"cannot be read ({exc})", "repair the file"
            ) from None
        if raw:
            self._line += 1
            self._digest.update(raw)
        return raw

    def _read(self, count: int) -> list[tuple[str, object]]:
        taken: list[tuple[str, object]] = []
        while len(taken) < count and (raw := self._next()):
            if not raw.strip():
                continue
            label = f"{self.path.name}:{self._line}"
            try:
                value = orjson.loads(raw)
            except orjson.JSONDecodeError:
                raise ValidationError(label, "is not JSON", "repair or remove the line") from None
            if not isinstance(value, dict):
                raise ValidationError(label, "is not a JSON object", "one episode per line")
            kind = value.get("type")
            if kind in _FRAMING:
                continue  # handled before the episodes (see ingest_file)
            if kind is not None and kind != "episode":
                raise ValidationError(label, f"has unknown type {kind!r}", "repair the line")
            taken.append((label, value))
        return taken

    async def take(self, count: int) -> list[tuple[str, object]]:
        return await asyncio.to_thread(self._read, count)

    def _skip(self, position: int) -> None:
        while self._line < position and self._next():
            pass

    async def skip(self, position: int, digest: str) -> bool:
        await asyncio.to_thread(self._skip, position)
        return self.mark() == (position, digest)

    def mark(self) -> tuple[int, str]:
        return self._line, self._digest.hexdigest()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _learned_records(path: Path) -> tuple[list[Pattern], list[Heuristic]]:
    """An export's patterns and heuristics: the lines between its header and first episode."""
    patterns: list[Pattern] = []
    heuristics: list[Heuristic] = []
    with _reader(path) as f:
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            line = orjson.loads(raw)
            kind = line.get("type") if isinstance(line, dict) else None
            if kind == "header":
                continue
            if kind not in ("pattern", "heuristic"):
                break
            record = parse_line(path, number, line)
            if isinstance(record, Heuristic):
                heuristics.append(record)
            elif not isinstance(record, Episode):
                patterns.append(record)
    return patterns, heuristics


def open_file(path: Path) -> tuple[FileSource, list[Pattern], list[Heuristic]]:
    """The file as a source (episodes in total when known), and an export's learned records."""
    if is_export(path):
        check_framing(path)  # whole, and a format this code reads
        end: dict[str, Any] = {}
        with _reader(path) as f:
            for raw in f:
                if raw.strip():
                    end = orjson.loads(raw)
        found = end.get("counts")
        counts: dict[str, Any] = found if isinstance(found, dict) else {}
        total = counts.get("episode") if isinstance(counts.get("episode"), int) else None
        patterns, heuristics = _learned_records(path)
        return FileSource(path, total), patterns, heuristics
    total = None if path.suffix == ".gz" else _count_lines(path)
    return FileSource(path, total), [], []


async def ingest_file(
    sink: IngestSink,
    path: Path,
    *,
    target: str,
    limits: InputLimits,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Progress | None = None,
    checkpoint: IngestCheckpoint | None = None,
    learn: bool = True,
) -> IngestReport:
    """Import ``path`` through ``sink`` (a backend); see the module docstring."""
    source, patterns, heuristics = await asyncio.to_thread(open_file, path)
    label = str(await asyncio.to_thread(path.resolve))
    report = IngestReport()
    try:
        if patterns or heuristics:
            added = await sink.add_learned_records(patterns, heuristics)
            report.patterns, report.heuristics = added["patterns"], added["heuristics"]
        return await run_ingest(
            sink,
            source,
            target=target,
            limits=limits,
            batch_size=batch_size,
            progress=progress,
            checkpoint=checkpoint,
            learn=learn,
            label=label,
            report=report,
        )
    finally:
        await asyncio.to_thread(source.close)
