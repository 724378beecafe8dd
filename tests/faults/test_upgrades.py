"""A database written by older code (migration 0001, older JSON shapes) opens and keeps learning.

Rows are written by raw SQL the way a v1 writer did, without fields added later (an episode
without ``revision``/``pattern_ids``/reward/reflection, a pattern without ``weighted_*``, a
heuristic without ``last_evidence_at``/``weighted_*``); the newer code loads them in place,
learns from the old unlearned episode and merges into the old pattern without resetting it.

Covered elsewhere, not repeated here: a database newer than the code is refused with upgrade
advice (tests/contract/test_migrations_contract.py::
test_a_database_newer_than_the_code_is_refused_with_upgrade_advice); an old episode shape at the
store level (tests/contract/test_store_contract.py); export → import of every record
(tests/unit/test_transfer.py::test_export_then_import_into_an_empty_memory_gives_every_record_back).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import orjson
import pytest
from fault_helpers import config, step

from episodic_memory.core.learning import extract_patterns
from episodic_memory.core.models import Episode, ExecutionStep, TaskContext, TaskOutcome
from episodic_memory.core.patterns import ToolSequence
from episodic_memory.memory import SelfLearningMemory

pytestmark = pytest.mark.slow

SEQUENCE = ["read_file", "edit_file", "pytest"]
CTX = TaskContext(domain="legacy", language="python")


def old_rows(data_dir: Path, pattern: ToolSequence) -> None:
    steps = [{"tool": t, "step_number": i + 1} for i, t in enumerate(SEQUENCE)]
    episode = {
        "episode_id": "old-episode",
        "task_description": "fix the legacy importer",
        "context": {"domain": "legacy", "language": "python"},
        "status": "completed",
        "outcome": {"verdict": "success", "summary": "fixed"},
        "started_at": "2024-01-02T03:04:05+00:00",
        "completed_at": "2024-01-02T03:09:05+00:00",
    }
    old_pattern = {
        "kind": "tool_sequence",
        "pattern_id": pattern.pattern_id,
        "key": pattern.key,
        "domain": pattern.domain,
        "tools": pattern.tools,
        "occurrences": 5,
        "successes": 4,
        "confidence": 0.6,
    }
    old_heuristic = {
        "heuristic_id": "old-heuristic",
        "condition": "a legacy importer fails",
        "action": "read the file before editing it",
        "domain": "legacy",
        "evidence_count": 3,
        "success_count": 2,
        "confidence": 0.5,
    }
    with sqlite3.connect(data_dir / "memory.db") as db:
        db.execute(
            "INSERT INTO episodes (episode_id, task_type, domain, language, status, verdict, "
            "started_at, completed_at, schema_version, data) "
            "VALUES ('old-episode', 'debugging', 'legacy', 'python', 'completed', 'success', "
            "1704164645, 1704164945, 1, ?)",
            (orjson.dumps(episode).decode(),),
        )
        db.executemany(
            "INSERT INTO steps (episode_id, step_number, tool, success, timestamp, "
            "schema_version, data) VALUES ('old-episode', ?, ?, 1, 1704164645, 1, ?)",
            [(s["step_number"], s["tool"], orjson.dumps(s).decode()) for s in steps],
        )
        db.execute(
            "INSERT INTO patterns (pattern_id, kind, domain, confidence, occurrences, updated_at, "
            "schema_version, data) VALUES (?, 'tool_sequence', 'legacy', 0.6, 5, 1704164645, 1, ?)",
            (pattern.pattern_id, orjson.dumps(old_pattern).decode()),
        )
        db.execute(
            "INSERT INTO heuristics (heuristic_id, domain, confidence, evidence_count, "
            "updated_at, schema_version, data) VALUES ('old-heuristic', 'legacy', 0.5, 3, "
            "1704164645, 1, ?)",
            (orjson.dumps(old_heuristic).decode(),),
        )


def the_sequence_pattern() -> ToolSequence:
    sample = Episode(
        task_description="x",
        context=CTX,
        status="completed",
        outcome=TaskOutcome.success(),
        steps=[ExecutionStep(tool=t, step_number=i + 1) for i, t in enumerate(SEQUENCE)],
    )
    [found] = [p for p in extract_patterns(sample) if isinstance(p, ToolSequence)]
    return found


async def test_a_v1_database_with_older_record_shapes_loads_and_keeps_learning(
    tmp_path: Path,
) -> None:
    fresh = await SelfLearningMemory.open(config(tmp_path), backend="in_process")
    await fresh.close()  # migration 0001 applied, nothing else
    pattern = the_sequence_pattern()
    old_rows(tmp_path, pattern)

    memory = await SelfLearningMemory.open(config(tmp_path), backend="in_process")
    try:
        old = await memory.get_episode("old-episode")
        assert (old.status, old.revision, old.pattern_ids) == ("completed", 0, [])
        assert [s.tool for s in old.steps] == SEQUENCE
        assert [e.episode_id for e in await memory.list_episodes(domain="legacy")] == [
            "old-episode"
        ]

        eid = await memory.start_episode("fix the legacy exporter", CTX)
        await memory.log_steps(eid, [step(0, tool=t) for t in SEQUENCE])
        await memory.complete_episode(eid, TaskOutcome.success("fixed"))
        await memory.settle()  # learns the old unlearned episode and the new one

        found = await memory.retrieve_relevant_context("fix the legacy importer", CTX, limit=5)
        assert "old-episode" in [s.episode_id for s in found.episodes]
        merged = [p for p in found.patterns if p.pattern_id == pattern.pattern_id]
        assert [p.occurrences for p in merged] == [7]  # 5 old + the old episode + the new one
        assert merged[0].weighted_occurrences > 0
        storage = memory._backend._storage  # type: ignore[union-attr]  # in-process backend
        [heuristic] = [
            h
            for h in await storage.heuristics("legacy", 1000)
            if h.domain == "legacy" and h.heuristic_id == "old-heuristic"
        ]
        assert (heuristic.evidence_count, heuristic.last_evidence_at) == (3, None)
        assert (await memory.sync_memories()).repaired == 0
    finally:
        await memory.close()
