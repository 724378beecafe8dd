"""Where an ingest reads from, and where it records how far it got.

A ``Source`` hands out records in order and can say, at any point, how much it has handed out
(a position: records of an iterable, lines of a file) and the SHA-256 of that prefix (episode
ids in order for an iterable, raw bytes for a file). ``IngestCheckpoint`` stores the pair after
every committed batch; a resumed run passes over the prefix and compares digests, so a different
input is refused while one whose later, rejected record was fixed still resumes.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import orjson

from episodic_memory.core.base import utc_now
from episodic_memory.core.models import Episode
from episodic_memory.errors import ValidationError
from episodic_memory.ingest.prepare import IngestItem

__all__ = ["CHECKPOINT_FORMAT", "MAX_BATCH_SIZE", "IngestCheckpoint", "Source", "iterable_source"]

CHECKPOINT_FORMAT = "episodic-memory-ingest-checkpoint"
MAX_BATCH_SIZE = 10_000


class Source(Protocol):
    """An input read in order. ``mark()``: position and SHA-256 of what was taken so far."""

    kind: str  # what a position counts: "records" or "lines"
    total: int | None  # episodes in the whole input, when known (for progress)

    async def take(self, count: int) -> list[tuple[str, object]]:
        """Up to ``count`` more episode records, each with its label for errors."""
        ...

    async def skip(self, position: int, digest: str) -> bool:
        """Pass over the first ``position`` units; whether their digest is ``digest``."""
        ...

    def mark(self) -> tuple[int, str]: ...


def _key(item: object) -> bytes:
    if isinstance(item, Episode):
        return item.episode_id.encode()
    if isinstance(item, Mapping):
        inner = item.get("record")
        record: Mapping[str, Any] = inner if isinstance(inner, Mapping) else item
        return str(record.get("episode_id", "")).encode()
    return b""


class _Items:
    """A sync or async iterable as a ``Source``; a position counts records."""

    kind = "records"

    def __init__(self, items: Iterable[IngestItem] | AsyncIterable[IngestItem]) -> None:
        self._sync: Iterator[IngestItem] | None = None
        self._async: AsyncIterator[IngestItem] | None = None
        if isinstance(items, AsyncIterable):
            self._async = aiter(items)
        else:
            self._sync = iter(items)
        self.total = len(items) if isinstance(items, Sequence) else None
        self._position = 0
        self._digest = hashlib.sha256()

    async def _block(self, count: int) -> list[object]:
        if self._sync is not None:
            # Read on the event loop's thread, always the same one: iterables tied to a
            # thread (a sqlite3 cursor) keep working; files are read off the loop by FileSource.
            return list(itertools.islice(self._sync, count))
        assert self._async is not None
        block: list[object] = []
        async for item in self._async:
            block.append(item)
            if len(block) >= count:
                break
        return block

    async def take(self, count: int) -> list[tuple[str, object]]:
        taken = []
        for item in await self._block(count):
            taken.append((f"episodes[{self._position}]", item))
            self._position += 1
            self._digest.update(_key(item) + b"\n")
        return taken

    async def skip(self, position: int, digest: str) -> bool:
        while self._position < position:
            if not await self.take(min(MAX_BATCH_SIZE, position - self._position)):
                break
        return self.mark() == (position, digest)

    def mark(self) -> tuple[int, str]:
        return self._position, self._digest.hexdigest()


def iterable_source(items: Iterable[IngestItem] | AsyncIterable[IngestItem]) -> Source:
    """Episodes from a list, generator or async iterable (digest: their ids in order)."""
    if isinstance(items, str | bytes | Mapping | Episode):
        raise ValidationError(
            "episodes", f"is a single {type(items).__name__}", "pass an iterable of episodes"
        )
    if not isinstance(items, Iterable | AsyncIterable):
        raise ValidationError("episodes", f"is a {type(items).__name__}", "pass an iterable")
    return _Items(items)


# --- checkpoint -------------------------------------------------------------------------------
class IngestCheckpoint:
    """A small JSON file: how much of an ingest's input is durably committed, and where to.

    ``{"format": ..., "version": 1, "target": <database>, "kind": "lines"|"records",
    "position": N, "digest": <sha256 of the first N units>, "source": <file or null>,
    "report": {counts so far}, "updated_at": ...}`` — rewritten atomically (temporary file,
    fsync, rename) after every committed batch, deleted when the input is done.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def _bad(self, problem: str) -> ValidationError:
        return ValidationError(
            "checkpoint", f"{self.path} {problem}",
            f"delete {self.path} to start over (re-ingesting is idempotent, only slower)",
        )  # fmt: skip

    def read(self) -> dict[str, Any] | None:
        """The recorded state; ``None`` when there is no checkpoint yet."""
        try:
            state = orjson.loads(self.path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, orjson.JSONDecodeError) as exc:
            raise self._bad(f"cannot be read ({exc})") from None
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise self._bad("is not an ingest checkpoint")
        if not isinstance(state.get("position"), int) or not isinstance(state.get("digest"), str):
            raise self._bad("has no position")
        return state

    def check(self, state: dict[str, Any], *, target: str, kind: str) -> None:
        if state.get("target") != target:
            raise self._bad(f"belongs to an ingest into {state.get('target')!r}, not {target!r}")
        if state.get("kind") != kind:
            raise self._bad(f"counts {state.get('kind')}, this input counts {kind}")

    def write(self, state: dict[str, Any]) -> None:
        """Replace the file atomically: a crash leaves the old state or the new one."""
        data = orjson.dumps(
            {"format": CHECKPOINT_FORMAT, "version": 1, **state, "updated_at": utc_now()}
        )
        partial = self.path.with_name(self.path.name + ".tmp")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with partial.open("wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, self.path)
        try:  # the rename itself survives power loss once the folder is synced
            folder = os.open(self.path.parent, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(folder)
        except OSError:
            pass
        finally:
            os.close(folder)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
