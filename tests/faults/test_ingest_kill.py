"""``kill -9`` of a bulk import mid-run: the same command resumes and ends like an unbroken run.

A real ``episodic-memory import`` process (in-process backend: libSQL file, LMDB, FAISS) is
killed once its checkpoint shows committed batches; running the same command again resumes
after the last committed batch. Afterwards the database holds exactly what an uninterrupted
import into another folder holds: every episode, step and vector once.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from episodic_memory.demo import generate_episode

pytestmark = pytest.mark.slow

EPISODES = 3_000


def history(path: Path) -> Path:
    with path.open("wb") as out:
        for seed in range(EPISODES):
            task, context, steps, outcome = generate_episode(seed)
            item = {
                "episode_id": str(uuid.UUID(int=seed + 1)),
                "task_description": task,
                "context": context.model_dump(mode="json"),
                "status": "completed",
                "started_at": "2025-01-01T00:00:00+00:00",
                "steps": [
                    s.model_dump(mode="json") | {"timestamp": "2025-01-01T00:00:01+00:00"}
                    for s in steps
                ],
                "outcome": outcome.model_dump(mode="json"),
            }
            out.write(orjson.dumps(item) + b"\n")
    return path


def command(data: Path, folder: Path) -> list[str]:
    return [
        sys.executable, "-m", "episodic_memory.cli", "import", str(data),
        "--data-dir", str(folder), "--batch-size", "20", "--no-learn", "--json",
    ]  # fmt: skip


def content(folder: Path) -> dict[str, Any]:
    with sqlite3.connect(folder / "memory.db") as db:
        return {
            table: db.execute(f"SELECT {columns} FROM {table} ORDER BY 1, 2").fetchall()
            for table, columns in (
                ("episodes", "episode_id, revision, reward_total, tool_path, data"),
                ("steps", "episode_id, step_number, data"),
                ("embeddings", "episode_id, model, vector"),
                ("episodes_fts", "episode_id, description, steps_text"),
            )
        }


def test_a_killed_import_resumes_and_ends_like_an_uninterrupted_one(tmp_path: Path) -> None:
    data = history(tmp_path / "history.jsonl")
    checkpoint = tmp_path / "history.jsonl.checkpoint"
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    run = subprocess.Popen(command(data, tmp_path / "a"), env=env, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and run.poll() is None:
        assert time.monotonic() < deadline, "no batch committed in time"
        time.sleep(0.005)
    run.send_signal(signal.SIGKILL)
    run.wait(timeout=60)
    assert checkpoint.exists(), "the import finished before it could be killed"
    killed_at = orjson.loads(checkpoint.read_bytes())["position"]
    assert 0 < killed_at < EPISODES

    again = subprocess.run(
        command(data, tmp_path / "a"), env=env, capture_output=True, timeout=600, check=True
    )
    report = orjson.loads(again.stdout)
    assert report["resumed_from"] >= killed_at
    assert report["episodes"] + report["skipped"] == EPISODES
    assert not checkpoint.exists()

    subprocess.run(command(data, tmp_path / "b"), env=env, capture_output=True, check=True)
    assert content(tmp_path / "a") == content(tmp_path / "b")
