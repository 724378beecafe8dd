"""The tool predictor on disk: its classifiers as JSON, its learned neighbours as arrays.

Saving must not stall retrieval: the predictor's lock is held only to snapshot it (the
classifiers' JSON-ready state, small; the neighbours' flat arrays, copied), and the files are
written after. The neighbours file carries a generation number and the JSON, written last,
names it, so a crash between the two leaves the previous pair whole; older generations are
removed once the JSON points past them. A JSON file from before the split (neighbours inline)
still loads.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import orjson

from episodic_memory.core import neighbours_state
from episodic_memory.core.tool_predictor import ToolPredictor
from episodic_memory.errors import StorageError

__all__ = ["PREDICTOR_FILE", "load_predictor", "save_predictor"]

PREDICTOR_FILE = "tool_predictor.json"
_NEIGHBOURS = "tool_neighbours-{generation}.npz"


def save_predictor(predictor: ToolPredictor, lock: threading.Lock, directory: Path) -> None:
    """Write ``predictor`` under ``directory``; ``lock`` keeps learning out while its state is
    copied (queries may go on: they do not change what is copied)."""
    with lock:
        state = predictor.to_state(neighbours=False)
        copy = neighbours_state.snapshot(predictor.neighbours)
    generation = time.time_ns()
    neighbours_file = _NEIGHBOURS.format(generation=generation)
    state["neighbours_file"] = neighbours_file
    target = directory / PREDICTOR_FILE
    temporary = target.with_name(target.name + ".tmp")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        neighbours_state.write(copy, directory / neighbours_file)
        temporary.write_bytes(orjson.dumps(state))
        os.replace(temporary, target)
        for old in directory.glob(_NEIGHBOURS.format(generation="*")):
            if old.name != neighbours_file:
                old.unlink(missing_ok=True)
    except OSError as exc:
        raise StorageError(f"could not save the tool predictor to {directory}: {exc}") from exc


def load_predictor(directory: Path) -> ToolPredictor:
    """The saved predictor; ``OSError``/``ValueError``/``KeyError``/``TypeError`` when the
    files are missing, torn or from incompatible code (the caller relearns)."""
    state = orjson.loads((directory / PREDICTOR_FILE).read_bytes())
    name = state.get("neighbours_file")
    if name is None:  # the single-file JSON of earlier versions
        return ToolPredictor.from_state(state)
    if Path(str(name)).name != name:
        raise ValueError(f"neighbours file name {name!r} is not a plain file name")
    return ToolPredictor.from_state(state, neighbours_state.read(directory / str(name)))
