"""Two Ray nodes on one machine: the memory keeps serving when the agents' node dies.

The cluster runs in ``multinode_run.py``, its own process (pytest's process may hold the
suite's Ray, and a process can join one Ray only); this test judges its JSON report and checks
that nothing it started is left running and nothing listened beyond loopback.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

HELPER = Path(__file__).with_name("multinode_run.py")
LOOPBACK = {"127.0.0.1", "[::ffff:127.0.0.1]", "[::1]"}


def processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and text in (entry / "cmdline").read_text(errors="replace"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Any:
    # Ray's socket paths must stay short (108 bytes), hence /tmp rather than pytest's tmp_path.
    temp = tempfile.mkdtemp(prefix="emc-", dir="/tmp")
    try:
        done = subprocess.run(
            [sys.executable, str(HELPER), str(tmp_path_factory.mktemp("multinode")), temp],
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
            env={**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"},
        )
        leftovers = processes_mentioning(temp)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert "error" not in result, result.get("error")
    return {**result, "leftovers": leftovers}


@pytest.mark.slow
def test_completed_episodes_survive_the_agents_node_dying_mid_run(report: Any) -> None:
    before, after = set(report["completed_before_kill"]), set(report["completed_after"])
    assert len(before) >= 8
    assert before <= after  # (agents may finish one more before their node goes)
    assert report["fresh_episode"] in after  # logged from the head after the node died
    assert report["broken"] == []  # every completed episode: its steps, in order, its verdict
    assert report["agent_errors"] == ["NodeDiedError", "NodeDiedError"]
    assert set(report["agent_nodes"]) == {report["worker_node"], "head"}


@pytest.mark.slow
def test_the_memory_keeps_serving_from_the_head_and_status_shows_it(report: Any) -> None:
    assert report["serve"]["status"] == "started"
    assert report["serve"]["storage_resources"] == {"episodic_memory_storage": 0.01}
    assert report["fresh_episode"] in report["retrieved"]

    status = report["status"]
    assert (status["exit"], status["served"]) == (0, True)
    nodes = {n["node_id"][:8]: n for n in status["nodes"]}
    assert nodes[report["head_node"]]["alive"]
    assert not nodes[report["worker_node"]]["alive"]
    actors = {a["actor"]: a for a in status["actors"]}
    assert actors["storage"]["node_id"][:8] == report["head_node"]  # pinned by the resource
    assert {a["state"] for a in actors.values()} == {"ALIVE"}
    assert status["counts"]["episodes"] >= len(report["completed_after"])
    assert "memory default in namespace multinode: served" in report["status_text"]


@pytest.mark.slow
def test_the_cluster_listened_on_loopback_only_and_left_nothing_running(report: Any) -> None:
    assert report["listeners"]
    assert set(report["listeners"]) <= LOOPBACK
    assert report["stopped"]["stopped"] is True
    assert report["leftovers"] == []
