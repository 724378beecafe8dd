"""Saving learned neighbours as arrays: a snapshot in milliseconds, a file in one write.

The JSON state (``TaskNeighbours.to_state``) spells every stored episode's words out: at a
million episodes that is ~300 MB built in ~30 s while the predictor's lock is held, so
retrieval would stall on every periodic save. ``snapshot`` instead copies the flat arrays
``_Domain`` already keeps (a memcpy each) plus the vocabularies and ids; ``write`` turns a
snapshot into one ``.npz`` outside any lock, and ``read`` restores an equal index without
re-adding episode by episode (postings are regrouped with one sort per domain).
"""

from __future__ import annotations

import os
import zipfile
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray

from episodic_memory.core.neighbours import TaskNeighbours, _Domain

__all__ = ["FORMAT", "NeighboursSnapshot", "read", "snapshot", "write"]

FORMAT = 1
_ARRAYS = ("rows", "start", "cols", "col_start", "weight", "live", "co", "df", "tool_docs")


@dataclass(frozen=True)
class _DomainCopy:
    name: str
    episodes: float
    terms: list[str]
    tools: list[str]
    ids: list[str]
    arrays: dict[str, NDArray[Any]]


@dataclass(frozen=True)
class NeighboursSnapshot:
    domains: list[_DomainCopy]


def _copy(name: str, model: _Domain) -> _DomainCopy:
    terms, tools = len(model.row), len(model.col)
    arrays: dict[str, NDArray[Any]] = {
        "rows": np.array(model._rows, dtype=np.int32),
        "start": np.array(model._start, dtype=np.int64),
        "cols": np.array(model._cols, dtype=np.int32),
        "col_start": np.array(model._col_start, dtype=np.int64),
        "weight": np.array(model._weight, dtype=np.float64),
        "live": np.fromiter(model.slot.values(), dtype=np.int64, count=len(model.slot)),
        "co": model.co[:terms, :tools].copy(),
        "df": model.df[:terms].copy(),
        "tool_docs": model.tool_docs[:tools].copy(),
    }
    return _DomainCopy(
        name, model.episodes, list(model.row), list(model.col), list(model.ids), arrays
    )


def snapshot(index: TaskNeighbours) -> NeighboursSnapshot:
    """Copies of everything ``read`` needs; hold the owner's lock only for this call."""
    return NeighboursSnapshot([_copy(name, model) for name, model in index._domains.items()])


def write(copy: NeighboursSnapshot, path: Path) -> None:
    """One ``.npz`` at ``path``, written to a temporary file and renamed into place."""
    meta = {
        "format": FORMAT,
        "domains": [
            {
                "name": d.name,
                "episodes": d.episodes,
                "terms": d.terms,
                "tools": d.tools,
                "ids": d.ids,
            }
            for d in copy.domains
        ],
    }
    arrays: dict[str, NDArray[Any]] = {"meta": np.frombuffer(orjson.dumps(meta), dtype=np.uint8)}
    for number, domain in enumerate(copy.domains):
        arrays.update({f"{number}.{key}": value for key, value in domain.arrays.items()})
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("wb") as handle:
        np.savez(handle, allow_pickle=False, **arrays)
    os.replace(temporary, path)


def _restore(entry: dict[str, Any], data: Any, number: int) -> _Domain:
    model = _Domain()
    get = {key: data[f"{number}.{key}"] for key in _ARRAYS}
    model.row = {term: i for i, term in enumerate(entry["terms"])}
    model.col = {tool: i for i, tool in enumerate(entry["tools"])}
    model.co = np.array(get["co"], dtype=np.float64).reshape(len(model.row), len(model.col))
    model.df = np.array(get["df"], dtype=np.float64)
    model.tool_docs = np.array(get["tool_docs"], dtype=np.float64)
    if not len(model.df) or not len(model.tool_docs):  # keep room to grow, as __init__ does
        model.co, model.df, model.tool_docs = np.zeros((8, 4)), np.zeros(8), np.zeros(4)
    model.episodes = float(entry["episodes"])
    model.ids = [str(i) for i in entry["ids"]]
    live = get["live"].astype(np.int64)
    model.slot = {model.ids[s]: int(s) for s in np.sort(live)}
    model._rows = array("i", get["rows"].astype(np.int32).tobytes())
    model._start = array("q", get["start"].astype(np.int64).tobytes())
    model._cols = array("i", get["cols"].astype(np.int32).tobytes())
    model._col_start = array("q", get["col_start"].astype(np.int64).tobytes())
    model._weight = array("d", get["weight"].astype(np.float64).tobytes())
    # Postings: every live (row, slot) pair, grouped by row with slots ascending.
    rows = get["rows"].astype(np.int64)
    owner = np.repeat(np.arange(len(model.ids)), np.diff(get["start"].astype(np.int64)))
    keep = np.isin(owner, live)
    rows, owner = rows[keep], owner[keep]
    order = np.lexsort((owner, rows))
    rows, owner = rows[order], owner[order].astype(np.int32)
    bounds = np.flatnonzero(np.diff(rows)) + 1
    for chunk_rows, chunk in zip(np.split(rows, bounds), np.split(owner, bounds), strict=True):
        if len(chunk):
            model.postings[int(chunk_rows[0])] = array("i", chunk.tobytes())
    return model


def read(path: Path) -> TaskNeighbours:
    """The index ``write`` saved; ``ValueError``/``OSError``/``KeyError`` when torn or foreign."""
    with path.open("rb") as handle:
        try:
            with np.load(handle, allow_pickle=False) as data:
                meta = orjson.loads(data["meta"].tobytes())
                if meta.get("format") != FORMAT:
                    found = meta.get("format")
                    raise ValueError(f"neighbours file format {found!r}, expected {FORMAT}")
                index = TaskNeighbours()
                for number, entry in enumerate(meta["domains"]):
                    index._domains[str(entry["name"])] = _restore(entry, data, number)
        except (zipfile.BadZipFile, EOFError) as exc:
            raise ValueError(f"neighbours file {path} is torn: {exc}") from exc
    return index
