"""Every corpus secret, put in every free-text field, never reaches a byte on disk or in logs.

Full episodes run through the memory (in-process and Ray) with each secret of
``support/secrets_corpus.py`` in the description, tags, action, parameters, observation,
error, step metadata and the outcome's summary, reason and artifacts. After an export, every
file under the data folder (libSQL db + WAL, LMDB, FAISS index and side files), the export
file, the captured log records and this Ray session's log files are searched for every
secret substring (raw and JSON-escaped): none may appear. Ordinary tool output that merely
looks sensitive (``FALSE_POSITIVES``) comes back unchanged.
"""

from __future__ import annotations

import logging
from pathlib import Path

import orjson
import pytest
from fault_helpers import config

from episodic_memory.core.models import ExecutionStep, TaskContext, TaskOutcome
from episodic_memory.memory import SelfLearningMemory
from episodic_memory.transfer import export_memory
from support.secrets_corpus import FALSE_POSITIVES, SECRETS

pytestmark = pytest.mark.slow


def needles() -> dict[str, list[bytes]]:
    found: dict[str, list[bytes]] = {}
    for kind, _text, secret in SECRETS:
        raw = secret.encode()
        found.setdefault(f"{kind}:{secret[:12]}", []).extend({raw, orjson.dumps(secret)[1:-1]})
    return found


def leaks(blobs: dict[str, bytes]) -> list[str]:
    return [
        f"{name} leaked into {where}"
        for name, forms in needles().items()
        for where, blob in blobs.items()
        if any(form in blob for form in forms)
    ]


def files_under(root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def ray_logs() -> dict[str, bytes]:
    """This Ray session's log files (workers of our actors log here), when reachable."""
    import ray

    node = getattr(ray._private.worker, "_global_node", None)
    if node is None:
        return {}
    return files_under(Path(node.get_logs_dir_path()))


async def run_episodes(memory: SelfLearningMemory) -> list[str]:
    ids = []
    for n, (kind, text, _secret) in enumerate(SECRETS):
        tags = [text] if len(text) <= 64 else [kind]
        eid = await memory.start_episode(
            f"deploy step {n} failed: {text}",
            TaskContext(domain="secrets", tags=tags),
            agent_id=f"agent-{n}",
        )
        await memory.log_steps(
            eid,
            [
                ExecutionStep(
                    tool="shell",
                    action=f"run {text}",
                    parameters={"command": text, "nested": {"args": [text, {"env": text}]}},
                    observation=f"output: {text}",
                    error=f"failed with {text}",
                    success=False,
                    metadata={"note": text},
                ),
                ExecutionStep(tool="shell", action="retry", observation="ok"),
            ],
        )
        await memory.complete_episode(
            eid,
            TaskOutcome(verdict="partial", summary=text, reason=text, artifacts=[text]),
        )
        ids.append(eid)
    return ids


async def false_positives_survive(memory: SelfLearningMemory) -> None:
    eid = await memory.start_episode("look at ordinary tool output", TaskContext(domain="secrets"))
    await memory.log_steps(
        eid,
        [ExecutionStep(tool="shell", action=text, observation=text) for text in FALSE_POSITIVES],
    )
    await memory.complete_episode(eid, TaskOutcome.success("read it all"))
    stored = await memory.get_episode(eid)
    assert [s.observation for s in stored.steps] == FALSE_POSITIVES
    assert [s.action for s in stored.steps] == FALSE_POSITIVES


@pytest.mark.parametrize("backend", ["in_process", pytest.param("ray", marks=pytest.mark.ray)])
async def test_no_secret_reaches_disk_exports_or_logs(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> None:
    if backend == "ray":
        request.getfixturevalue("ray_session")
    data_dir = tmp_path / "memory"
    settings = config(data_dir)
    caplog.set_level(logging.DEBUG)
    memory = await SelfLearningMemory.open(settings, backend=backend)  # type: ignore[arg-type]
    try:
        ids = await run_episodes(memory)
        await false_positives_survive(memory)
        await memory.settle()
        found = await memory.retrieve_relevant_context("deploy step failed", limit=5)
        assert found.episodes
        stats = await memory.stats()
        assert stats["storage"]["tables"]["episodes"] == len(ids) + 1
    finally:
        await memory.close(stop_service=True)
    export = tmp_path / "export.jsonl"
    report = await export_memory(settings, export)
    assert report.counts["episode"] == len(SECRETS) + 1

    blobs = files_under(data_dir)
    assert any(name.endswith("memory.db") for name in blobs)
    assert any("cache.lmdb" in name for name in blobs)
    assert any("index" in name for name in blobs)
    blobs[str(export)] = export.read_bytes()
    blobs["caplog"] = caplog.text.encode("utf-8", "replace")
    if backend == "ray":
        blobs.update(ray_logs())
    assert leaks(blobs) == []
    assert len(leaks({"canary": "".join(t for _, t, _ in SECRETS).encode()})) == len(needles())
    print(f"\nsecrets ({backend}): {len(SECRETS)} secrets, {len(blobs)} files and logs clean")
