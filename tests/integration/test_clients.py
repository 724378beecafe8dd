"""Many clients, one memory: second drivers, Ray tasks and actors find it by name; loopback only."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray

from episodic_memory.core.models import TaskOutcome
from episodic_memory.errors import EpisodeNotFound
from episodic_memory.memory import SelfLearningMemory
from episodic_memory.memory_sync import SyncMemory

SECOND_DRIVER = textwrap.dedent(
    """
    import asyncio, sys
    import ray
    from episodic_memory.config import MemoryConfig
    from episodic_memory.memory import SelfLearningMemory

    async def main() -> None:
        config = MemoryConfig.model_validate_json(sys.argv[2])
        memory = await SelfLearningMemory.open(config)  # attaches: the service exists
        episode_id = await memory.start_episode("written by the second driver")
        await memory.log_steps(episode_id, [{"tool": "grep"}, {"tool": "sed"}])
        await memory.complete_episode(episode_id, {"verdict": "success"})
        await memory.close()
        print(episode_id)

    ray.init(address=sys.argv[1], namespace=sys.argv[3], log_to_driver=False)
    asyncio.run(main())
    """
)


async def test_a_second_driver_finds_the_same_named_memory(
    open_memory: Callable[..., Any], ray_session: str
) -> None:
    memory = await open_memory()
    config = memory.config
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", SECOND_DRIVER, ray_session, config.model_dump_json(), "other"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    episode_id = done.stdout.strip().splitlines()[-1]
    episode = await memory.get_episode(episode_id)
    assert episode.status == "completed"
    assert [s.tool for s in episode.steps] == ["grep", "sed"]


async def test_the_sync_handle_works_inside_ray_tasks(open_memory: Callable[..., Any]) -> None:
    memory = await open_memory(num_hosts=2)
    sync = SyncMemory(memory)  # what a driver without asyncio would hold

    @ray.remote(num_cpus=0)
    def agent(shared: SyncMemory, n: int) -> str:
        episode_id = shared.start_episode(f"task {n}: rotate the API keys")
        shared.log_steps(episode_id, [{"tool": "vault", "action": f"agent {n}"}] * 3)
        shared.complete_episode(episode_id, TaskOutcome.success())
        return episode_id

    ids = await asyncio_gather_refs([agent.remote(sync, n) for n in range(4)])
    for n, episode_id in enumerate(ids):
        episode = await memory.get_episode(episode_id)
        assert {s.action for s in episode.steps} == {f"agent {n}"}
        assert episode.status == "completed"


async def test_the_async_handle_works_inside_a_ray_actor(open_memory: Callable[..., Any]) -> None:
    memory = await open_memory()

    @ray.remote(num_cpus=0)
    class Agent:
        async def work(self, shared: SelfLearningMemory) -> tuple[str, str]:
            episode_id = await shared.start_episode("summarise the incident report")
            await shared.log_step(episode_id, {"tool": "read_file"})
            await shared.complete_episode(episode_id, TaskOutcome.success())
            try:
                await shared.get_episode("missing-episode")
            except EpisodeNotFound as exc:  # typed errors reach the actor too
                return episode_id, type(exc).__name__
            return episode_id, "no error"

    actor = Agent.remote()  # type: ignore[attr-defined]
    episode_id, error = await actor.work.remote(memory)
    ray.kill(actor)
    assert error == "EpisodeNotFound"
    assert (await memory.get_episode(episode_id)).steps[0].tool == "read_file"


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry.name))
    found, stack = {root}, [root]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def test_ray_listens_only_on_loopback(ray_session: str) -> None:
    ray_pids = _descendants(os.getpid())
    listing = subprocess.run(["ss", "-tlnpH"], capture_output=True, text=True, check=True).stdout
    ours = []
    for line in listing.splitlines():
        pids = {int(p) for p in _pids_in(line)}
        if pids & ray_pids:
            ours.append(line.split()[3])
    assert ours, "found no listening socket of this session's Ray"
    loopback = ("127.0.0.1:", "[::1]:", "[::ffff:127.0.0.1]:")
    assert all(addr.startswith(loopback) for addr in ours), ours
    assert ray_session.startswith("127.0.0.1:")


def _pids_in(line: str) -> list[str]:
    return [part.split(",")[0] for part in line.split("pid=")[1:]]


async def asyncio_gather_refs(refs: list[Any]) -> list[Any]:
    return [await ref for ref in refs]
