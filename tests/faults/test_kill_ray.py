"""kill -9 every process of a local Ray (driver, GCS, raylet, workers), then reopen the folder.

The driver (``ray_driver.py``) runs in a subprocess with its own Ray and temp dir, so the
session's Ray is untouched. After the SIGKILLs the data folder is reopened with the
in-process backend: everything the driver was told was durable is there exactly once, the
cache agrees with libSQL, the FAISS index is reloaded or rebuilt (retrieval finds every
completed episode), and learning is re-derived for episodes whose learner died.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from fault_helpers import config, count, durable_episodes, durable_steps, poll

from episodic_memory.core.models import TaskContext
from episodic_memory.memory import SelfLearningMemory

pytestmark = pytest.mark.slow

DRIVER = Path(__file__).with_name("ray_driver.py")
READY_TIMEOUT_S = 120.0


def descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry.name))
    found, stack = {root}, [root]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def using(temp_dir: str) -> set[int]:
    """Processes whose command line names this Ray's temp dir (orphans re-parented to init)."""
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if temp_dir.encode() in (entry / "cmdline").read_bytes():
                    found.add(int(entry.name))
            except OSError:
                continue
    return found


def alive(pid: int) -> bool:
    """True until every thread of ``pid`` has exited.

    A killed multi-threaded process shows its leader as a zombie while other threads are still
    tearing down (big mappings take a while), and its files, the folder lock among them, are
    released only when the last thread is gone; so the leader's own state is not enough.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return False
    for task in tasks:
        try:
            if (task / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                return True
        except OSError:
            continue
    return False


def start_driver(data_dir: Path, temp_dir: str) -> subprocess.Popen[str]:
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, str(DRIVER), str(data_dir), temp_dir],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )


async def run_until_ready(
    data_dir: Path, temp_dir: str
) -> tuple[subprocess.Popen[str], list[dict[str, Any]]]:
    driver = start_driver(data_dir, temp_dir)
    facts: list[dict[str, Any]] = []
    assert driver.stdout is not None

    def read_until_ready() -> None:
        for line in driver.stdout:  # type: ignore[union-attr]
            facts.append(json.loads(line))
            if facts[-1].get("ready"):
                return

    await asyncio.wait_for(asyncio.to_thread(read_until_ready), READY_TIMEOUT_S)
    return driver, facts


async def test_killing_the_whole_local_ray_loses_nothing_acknowledged(tmp_path: Path) -> None:
    temp_dir = tempfile.mkdtemp(prefix="rayk", dir="/tmp")
    data_dir = tmp_path / "memory"
    driver, facts = await run_until_ready(data_dir, temp_dir)
    try:
        victims = descendants(driver.pid) | using(temp_dir)
        assert len(victims) >= 4, victims  # driver, GCS, raylet, workers at least

        def sweep() -> bool:
            """Kill every live process of this Ray; True once none is left.

            Repeated, because Ray may start a process (a restarted worker) after any snapshot,
            and a survivor would keep holding the data folder.
            """
            left = {p for p in descendants(driver.pid) | using(temp_dir) | victims if alive(p)}
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            return not left

        sweep()
        driver.wait(timeout=30)
        await poll(lambda: asyncio.sleep(0, result=sweep()))
    finally:
        if driver.poll() is None:
            driver.kill()
        if driver.stdout is not None:
            driver.stdout.close()
        shutil.rmtree(temp_dir, ignore_errors=True)
    # Facts printed after "ready" were read by nobody: only the ones before it count.
    completed = [str(f["completed"]) for f in facts if "completed" in f]
    acked = [n for f in facts if "acked" in f for n in f["acked"][1]]
    active = next(str(f["active"]) for f in facts if "active" in f)
    assert len(completed) == 3
    assert acked

    stored = durable_steps(data_dir, active)
    assert len(stored) == len(set(stored))
    assert set(acked) <= set(stored)
    assert {durable_episodes(data_dir)[eid] for eid in completed} == {"completed"}

    memory = await SelfLearningMemory.open(config(data_dir), backend="in_process")
    try:
        report = await memory.sync_memories()
        assert (await memory.sync_memories()).repaired == 0
        ctx = TaskContext(domain="faults", language="python")
        for eid in completed:
            found = await memory.retrieve_relevant_context(
                (await memory.get_episode(eid)).task_description, ctx, limit=10
            )
            assert eid in [s.episode_id for s in found.episodes]
        await memory.settle()
        assert count(data_dir, "episodes WHERE status = 'completed' AND learned_at IS NULL") == 0
        stats = await memory.stats()
        print(
            f"whole-Ray kill: {len(acked)} acknowledged steps, {len(completed)} completed, "
            f"cache repair {report}, index {stats['index']['vectors']} vectors"
        )
        assert stats["index"]["vectors"] == len(completed)
        sequences = [
            p
            for p in await memory._backend._storage.patterns(None, 1000)  # type: ignore[union-attr]
            if p.kind == "tool_sequence" and p.tools == ["read_file", "edit_file", "pytest"]
        ]
        assert [p.occurrences for p in sequences] == [len(completed)]
    finally:
        await memory.close()
