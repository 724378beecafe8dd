"""The command line against real memories: a data folder in-process, and the session's Ray.

Commands run through ``main([...])`` in this process (their output captured), except one run
through ``python -m episodic_memory.cli`` to check what a shell sees.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import ray

from episodic_memory.cli import main
from episodic_memory.config import MemoryConfig, RayConfig
from episodic_memory.demo import generate_episode
from episodic_memory.memory import SelfLearningMemory

EPISODES = 12


@pytest.fixture(scope="module")
async def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data folder with learned episodes in several domains (written without Ray)."""
    path = tmp_path_factory.mktemp("cli-memory")
    memory = await SelfLearningMemory.open(MemoryConfig(data_dir=path), backend="in_process")
    try:
        for seed in range(EPISODES):
            task, context, steps, outcome = generate_episode(seed)
            episode_id = await memory.start_episode(task, context)
            await memory.log_steps(episode_id, steps)
            await memory.complete_episode(episode_id, outcome)
        await memory.settle()
    finally:
        await memory.close()
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, Any, str]:
    """Exit status, parsed JSON stdout (or the raw text), stderr."""
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    try:
        return status, json.loads(out), err
    except json.JSONDecodeError:
        return status, out, err


def test_episodes_list_filters_and_show_returns_the_steps(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, listed, _ = run(capsys, "episodes", "list", "--data-dir", folder, "--json")
    assert status == 0
    assert len(listed) == EPISODES
    started = [e["started_at"] for e in listed]
    assert started == sorted(started, reverse=True)

    domain = listed[0]["domain"]
    _, same, _ = run(capsys, "episodes", "list", "--domain", domain, "--data-dir", folder, "--json")
    assert same
    assert {e["domain"] for e in same} == {domain}

    first = listed[0]["episode_id"]
    status, shown, _ = run(capsys, "episodes", "show", first, "--data-dir", folder, "--json")
    assert status == 0
    assert shown["episode_id"] == listed[0]["episode_id"]
    assert [s["step_number"] for s in shown["steps"]] == list(range(1, len(shown["steps"]) + 1))


def test_retrieve_ranks_past_episodes_and_prints_a_briefing(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, found, _ = run(
        capsys, "retrieve", "fix the failing login test", "--domain", "web", "--limit", "3",
        "--data-dir", folder, "--json",
    )  # fmt: skip
    assert status == 0
    assert 0 < len(found["episodes"]) <= 3
    scores = [e["score"] for e in found["episodes"]]
    assert scores == sorted(scores, reverse=True)

    task = "fix the failing login test"
    status, text, _ = run(capsys, "retrieve", task, "--prompt", "--data-dir", folder)
    assert status == 0
    assert text.startswith("Past experience for: fix the failing login test")


def test_learned_records_stats_and_sync_report_what_the_store_holds(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, patterns, _ = run(
        capsys, "patterns", "list", "--limit", "500", "--data-dir", folder, "--json"
    )
    _, heuristics, _ = run(
        capsys, "heuristics", "list", "--limit", "500", "--data-dir", folder, "--json"
    )
    status, stats, _ = run(capsys, "stats", "--data-dir", folder, "--json")
    assert status == 0
    tables = stats["storage"]["tables"]
    assert (tables["episodes"], tables["patterns"], tables["heuristics"]) == (
        EPISODES,
        len(patterns),
        len(heuristics),
    )
    confidences = [p["confidence"] for p in patterns]
    assert confidences == sorted(confidences, reverse=True)

    status, table, _ = run(capsys, "patterns", "list", "--limit", "3", "--data-dir", folder)
    assert status == 0
    assert "3 pattern(s)" in table

    status, repair, _ = run(capsys, "sync", "--data-dir", folder, "--json")
    assert status == 0
    assert repair["repaired"] == 0


def test_export_then_import_through_the_cli_copies_the_memory(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dump, copy = tmp_path / "backup.jsonl.gz", tmp_path / "copy"
    status, exported, _ = run(capsys, "export", dump, "--data-dir", folder, "--json")
    assert status == 0
    status, imported, _ = run(capsys, "import", dump, "--data-dir", copy, "--json")
    assert status == 0
    assert imported["added"] == exported["counts"]

    listings = [
        run(capsys, "episodes", "list", "--limit", "100", "--data-dir", where, "--json")[1]
        for where in (folder, copy)
    ]
    assert listings[0] == listings[1]

    status, _, err = run(capsys, "import", dump, "--data-dir", copy)
    assert status == 2
    assert "not empty" in err


def test_migrate_check_reports_pending_without_creating_the_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fresh = tmp_path / "fresh"
    status, report, _ = run(capsys, "migrate", "--check", "--data-dir", fresh, "--json")
    assert (status, report["version"], report["pending"]) == (1, 0, [1, 2, 3])
    assert not fresh.exists()

    status, report, _ = run(capsys, "migrate", "--data-dir", fresh, "--json")
    assert (status, report["applied"]) == (0, [1, 2, 3])
    status, report, _ = run(capsys, "migrate", "--check", "--data-dir", fresh, "--json")
    assert (status, report["pending"]) == (0, [])


def test_errors_are_one_line_with_exit_status_two_for_bad_input(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = run(capsys, "episodes", "list", "--limit", "0", "--data-dir", folder)
    assert status == 2
    assert err.count("\n") == 1
    assert "ValidationError: --limit" in err

    status, _, err = run(capsys, "episodes", "show", "no-such-episode", "--data-dir", folder)
    assert status == 1
    assert err.startswith("episodic-memory: error: EpisodeNotFound")

    done = subprocess.run(
        [sys.executable, "-m", "episodic_memory.cli", "retrieve", "   ", "--data-dir", str(folder)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "episodic-memory: error: ValidationError: description: is empty "
        "(fix: describe the task in text)"
    ]

    nobody = subprocess.run(  # Ray alone would retry a dead address for minutes
        [sys.executable, "-m", "episodic_memory.cli", "status", "--address", "127.0.0.1:1"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert nobody.returncode == 1
    assert nobody.stderr.startswith("episodic-memory: error: ServiceError: cannot join the Ray")
    assert "Traceback" not in nobody.stderr


def test_serve_is_idempotent_status_reports_it_and_stop_removes_it(
    ray_session: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name, namespace = f"cli-{uuid.uuid4().hex[:8]}", ray.get_runtime_context().namespace
    where = ["--namespace", namespace, "--memory-name", name, "--json"]
    status, first, _ = run(capsys, "serve", "--data-dir", tmp_path, "--hosts", "1", *where)
    assert (status, first["status"], first["data_dir"]) == (0, "started", str(tmp_path))
    try:
        status, second, _ = run(capsys, "serve", "--data-dir", tmp_path / "other", *where)
        assert (status, second["status"]) == (0, "already running")
        assert second["data_dir"] == str(tmp_path)  # the running service's, not the flag's

        config = MemoryConfig(ray=RayConfig(namespace=namespace, memory_name=name))
        with SelfLearningMemory.open_sync(config) as agent:  # any client finds it by name
            task, context, steps, outcome = generate_episode(7)
            episode_id = agent.start_episode(task, context)
            agent.log_steps(episode_id, steps)
            agent.complete_episode(episode_id, outcome)

        status, state, _ = run(capsys, "status", *where)
        assert (status, state["served"]) == (0, True)
        actors = {a["actor"]: a for a in state["actors"]}
        assert set(actors) == {"storage", "index", "learner:0", "host:0"}
        assert {a["state"] for a in actors.values()} == {"ALIVE"}
        assert (state["counts"]["episodes"], state["counts"]["steps"]) == (1, len(steps))
        assert [n["alive"] for n in state["nodes"]] == [True]

        _, listed, _ = run(capsys, "episodes", "list", "--backend", "ray", *where)
        assert [e["episode_id"] for e in listed] == [episode_id]
        _, found, _ = run(capsys, "retrieve", task, "--backend", "ray", *where)
        assert found["episodes"][0]["episode_id"] == episode_id

        dump = tmp_path / "served.jsonl"  # the service flushes, then its folder is read
        status, exported, _ = run(capsys, "export", dump, "--backend", "ray", *where)
        assert (status, exported["counts"]["episode"]) == (0, 1)
        status, _, err = run(capsys, "episodes", "list", "--data-dir", tmp_path)
        assert status == 1
        assert "DataFolderLocked" in err  # the service owns its folder; use --address
    finally:
        status, stopped, _ = run(capsys, "stop", *where)
    assert (status, stopped["stopped"]) == (0, True)

    status, state, _ = run(capsys, "status", *where)
    assert (status, state["served"]) == (1, False)
    status, again, _ = run(capsys, "stop", *where)
    assert (status, again["stopped"]) == (0, False)
