"""Bulk ingest through the Ray service (the session's Ray): the same promises as in-process.

Episodes go in a few actor calls per batch, are retrievable when the call returns, are written
once however often the input is replayed, and are learned in the background (``settle()``
waits); ``episodic-memory import`` into a served memory takes the same road, resumably.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import ray

from episodic_memory.cli import main
from episodic_memory.demo import generate_episode
from episodic_memory.errors import ValidationError
from episodic_memory.memory import SelfLearningMemory


def record(seed: int) -> dict[str, Any]:
    task, context, steps, outcome = generate_episode(seed)
    return {
        "episode_id": f"ray-ingest-{seed}",
        "task_description": task,
        "context": context.model_dump(mode="json"),
        "status": "completed",
        "steps": [s.model_dump(mode="json") for s in steps],
        "outcome": outcome.model_dump(mode="json"),
    }


async def test_bulk_ingest_through_ray_is_retrievable_written_once_and_learned(
    open_memory: Callable[..., Any], tmp_path: Path
) -> None:
    memory: SelfLearningMemory = await open_memory()
    seen: list[tuple[int, int | None]] = []
    items = [record(seed) for seed in range(40)]
    report = await memory.bulk_ingest(items, batch_size=16, progress=lambda *a: seen.append(a))
    assert (report.episodes, report.skipped, report.batches) == (40, 0, 3)
    assert seen[-1] == (40, 40)

    task, context, *_ = generate_episode(2)
    found = await memory.retrieve_relevant_context(task, context, limit=5)
    assert "ray-ingest-2" in [e.episode_id for e in found.episodes]

    again = await memory.bulk_ingest(items, batch_size=16)
    assert (again.episodes, again.skipped, again.steps) == (0, 40, 0)
    tables = (await memory.stats())["storage"]["tables"]
    assert (tables["episodes"], tables["steps"], tables["embeddings"]) == (40, report.steps, 40)

    await memory.settle()
    storage = ray.get_actor(
        f"{memory.config.ray.memory_name}:storage", namespace=memory.config.ray.namespace
    )
    assert await storage.unlearned_episode_ids.remote() == []
    assert (await memory.stats())["storage"]["learned"]["patterns"] > 0

    bad = [record(99) | {"status": "finished"}]
    with pytest.raises(ValidationError, match=r"episodes\[0\]\.status"):
        await memory.bulk_ingest(bad)


def test_the_cli_imports_into_a_served_memory_in_bulk_and_resumes(
    ray_session: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name, namespace = f"ingest-{uuid.uuid4().hex[:8]}", ray.get_runtime_context().namespace
    where = ["--namespace", namespace, "--memory-name", name]
    assert main(["serve", "--data-dir", str(tmp_path / "served"), "--hosts", "1", *where]) == 0
    capsys.readouterr()
    try:
        items = [record(seed) for seed in range(30)]
        items[22]["steps"][0]["latency_ms"] = -1
        history = tmp_path / "history.jsonl"
        history.write_bytes(b"".join(orjson.dumps(item) + b"\n" for item in items))
        argv = ["import", str(history), "--backend", "ray", "--batch-size", "10", *where]
        assert main([*argv, "--json"]) == 2
        assert "history.jsonl:23.steps.0.latency_ms" in capsys.readouterr().err
        assert (
            orjson.loads(history.with_name("history.jsonl.checkpoint").read_bytes())["position"]
            == 20
        )

        items[22] = record(22)
        history.write_bytes(b"".join(orjson.dumps(item) + b"\n" for item in items))
        assert main([*argv, "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert (report["resumed_from"], report["episodes"], report["handled"]) == (20, 30, 10)
        assert main(["stats", "--backend", "ray", *where, "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["storage"]["tables"]["episodes"] == 30
    finally:
        assert main(["stop", *where, "--json"]) == 0


async def test_a_ray_task_holding_every_cpu_can_still_ingest(
    open_memory: Callable[..., Any],
) -> None:
    memory: SelfLearningMemory = await open_memory()

    @ray.remote(num_cpus=2)  # every CPU of the session's Ray: ingest tasks reserve none
    def agent(shared: SelfLearningMemory, items: list[dict[str, Any]]) -> int:
        import asyncio

        async def run() -> int:
            return (await shared.bulk_ingest(items, batch_size=5)).episodes

        return asyncio.run(run())

    written = await agent.remote(memory, [record(seed) for seed in range(200, 212)])
    assert written == 12
    found = await memory.get_episode("ray-ingest-205")
    assert found.status == "completed"
