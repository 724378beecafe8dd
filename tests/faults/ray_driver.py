"""A driver that owns its own local Ray (own temp dir) and works a memory until it is killed.

Run as ``python ray_driver.py DATA_DIR RAY_TEMP_DIR``. It prints one JSON line per fact the
parent may rely on — ``{"completed": id}`` once ``complete_episode`` returned, ``{"acked":
[id, numbers]}`` once a strict ``log_steps`` returned — then ``{"ready": true}``, and keeps
logging buffered and strict steps until the parent kills every process of this Ray with
SIGKILL. Lives outside the pytest process so the session's Ray is never touched.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from pathlib import Path

import ray

from episodic_memory.config import FlushPolicy, LearnerConfig, MemoryConfig, RayConfig
from episodic_memory.core.models import ExecutionStep, TaskContext, TaskOutcome
from episodic_memory.memory import SelfLearningMemory

SEQUENCE = ["read_file", "edit_file", "pytest"]
CTX = TaskContext(domain="faults", language="python")


def say(**fact: object) -> None:
    print(json.dumps(fact), flush=True)


async def main(data_dir: Path, temp_dir: str) -> None:
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray.init(
        address="local",
        num_cpus=1,
        include_dashboard=False,
        object_store_memory=80 * 1024**2,
        _temp_dir=temp_dir,
        namespace="whole-ray-kill",
        log_to_driver=False,
    )
    config = MemoryConfig(
        data_dir=data_dir,
        flush=FlushPolicy(flush_interval_s=0.2),
        learner=LearnerConfig(pool_size=1),
        ray=RayConfig(namespace="whole-ray-kill", memory_name=uuid.uuid4().hex[:8], num_hosts=1),
    )
    memory = await SelfLearningMemory.open(config)
    for n in range(3):
        eid = await memory.start_episode(f"repair the broken deploy script {n}", CTX)
        await memory.log_steps(eid, [ExecutionStep(tool=t, action=t) for t in SEQUENCE])
        await memory.complete_episode(eid, TaskOutcome.success("deployed"))
        say(completed=eid)
    active = await memory.start_episode("rotate the logs when ray dies", CTX)
    say(active=active)
    burst = 0
    while True:
        steps = [ExecutionStep(tool="shell", action=f"burst {burst} step {i}") for i in range(5)]
        if burst % 2:
            await memory.log_steps(active, steps)  # buffered: allowed to be lost
        else:
            say(acked=[active, await memory.log_steps(active, steps, durability="strict")])
        if burst == 4:
            say(ready=True)
        burst += 1
        await asyncio.sleep(0.01)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), sys.argv[2]))
