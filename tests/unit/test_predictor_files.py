"""The tool predictor on disk: classifiers as JSON, neighbours as arrays, old files still load."""

from __future__ import annotations

import threading
from pathlib import Path

import orjson
import pytest

from episodic_memory.core.models import TaskContext
from episodic_memory.core.tool_predictor import ToolPredictor
from episodic_memory.index.predictor_files import PREDICTOR_FILE, load_predictor, save_predictor

SHOP = TaskContext(domain="shop")


def trained() -> ToolPredictor:
    predictor = ToolPredictor()
    for i in range(8):
        for name in ("alice", "bob", "carol"):
            predictor.observe(
                f"cancel the pending order of {name}",
                SHOP,
                ["find", "cancel"],
                episode_id=f"c{i}{name}",
            )
            predictor.observe(
                f"return the received jacket of {name}",
                SHOP,
                ["find", "refund"],
                episode_id=f"r{i}{name}",
            )
    return predictor


def test_a_saved_predictor_loads_equal_and_keeps_one_neighbours_file(tmp_path: Path) -> None:
    original = trained()
    lock = threading.Lock()
    save_predictor(original, lock, tmp_path)
    original.observe("cancel my order now", SHOP, ["find", "cancel"], episode_id="late")
    save_predictor(original, lock, tmp_path)
    assert len(list(tmp_path.glob("tool_neighbours-*.npz"))) == 1
    assert not list(tmp_path.glob("*.tmp"))
    restored = load_predictor(tmp_path)
    assert restored.to_state() == original.to_state()
    task = "please cancel the order of dave"
    assert restored.find_neighbours(task, SHOP, 5) == original.find_neighbours(task, SHOP, 5)
    assert restored.predict(task, SHOP) == original.predict(task, SHOP)


def test_the_single_file_json_of_earlier_versions_still_loads(tmp_path: Path) -> None:
    original = trained()
    (tmp_path / PREDICTOR_FILE).write_bytes(orjson.dumps(original.to_state()))
    assert load_predictor(tmp_path).to_state() == original.to_state()


def test_a_json_naming_a_missing_or_outside_file_is_refused(tmp_path: Path) -> None:
    save_predictor(trained(), threading.Lock(), tmp_path)
    for npz in tmp_path.glob("tool_neighbours-*.npz"):
        npz.unlink()
    with pytest.raises(FileNotFoundError, match="tool_neighbours-"):
        load_predictor(tmp_path)
    state = orjson.loads((tmp_path / PREDICTOR_FILE).read_bytes())
    (tmp_path / PREDICTOR_FILE).write_bytes(orjson.dumps({**state, "neighbours_file": "../x.npz"}))
    with pytest.raises(ValueError, match="plain file name"):
        load_predictor(tmp_path)
