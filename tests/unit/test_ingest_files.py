"""Importing files through bulk ingest (in-process, real files): exports and plain JSON Lines.

An export imported this way holds what the offline copy (``transfer.import_memory``) holds; a
plain file with a bad line names the line, and once the line is fixed the same import resumes
after the last committed batch and ends as an uninterrupted one.
"""

from __future__ import annotations

import gzip
import json
import sqlite3
from pathlib import Path
from typing import Any

import orjson
import pytest
from test_ingest import config, content, record

from episodic_memory.cli import main
from episodic_memory.errors import ValidationError
from episodic_memory.memory import SelfLearningMemory
from episodic_memory.transfer import export_memory, import_memory


def rows(folder: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(folder / "memory.db") as db:
        return db.execute(sql).fetchall()


def write_lines(path: Path, items: list[Any]) -> Path:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as out:
        for item in items:
            out.write(item if isinstance(item, bytes) else orjson.dumps(item) + b"\n")
    return path


async def import_file(folder: Path, path: Path, **options: Any) -> Any:
    memory = await SelfLearningMemory.open(config(folder), backend="in_process")
    try:
        report = await memory.import_file(path, **options)
        await memory.settle()
        return report
    finally:
        await memory.close()


async def test_an_export_imported_in_bulk_holds_what_the_offline_copy_holds(
    tmp_path: Path,
) -> None:
    source = await SelfLearningMemory.open(config(tmp_path / "source"), backend="in_process")
    try:
        await source.bulk_ingest(record(seed) for seed in range(30))
        await source.settle()
        await source.bulk_ingest(record(seed) for seed in range(30, 36))  # left unlearned
    finally:
        await source.close()
    dump = tmp_path / "dump.jsonl.gz"
    await export_memory(config(tmp_path / "source"), dump)

    offline = await import_memory(config(tmp_path / "offline"), dump)
    bulk = await import_file(tmp_path / "bulk", dump, batch_size=8)
    assert bulk.episodes == offline.counts["episode"] == 36
    assert bulk.patterns == offline.counts["pattern"]
    assert bulk.heuristics == offline.counts["heuristic"]
    steps = "SELECT episode_id, step_number, data FROM steps ORDER BY 1, 2"
    assert rows(tmp_path / "bulk", steps) == rows(tmp_path / "offline", steps)
    learned = "SELECT episode_id FROM episodes WHERE learned_at IS NOT NULL ORDER BY 1"
    assert len(rows(tmp_path / "bulk", learned)) == 36  # 30 marked, 6 learned afterwards
    taught = {}  # the tool predictor learns every successful episode once, on every road
    for name in ("source", "offline", "bulk"):
        memory = await SelfLearningMemory.open(config(tmp_path / name), backend="in_process")
        try:
            await memory.settle()  # the six unlearned ones are learned now
            taught[name] = (await memory.stats())["index"]["predictor_episodes"]
        finally:
            await memory.close()
    assert taught["offline"] == taught["bulk"] == taught["source"] > 0
    patterns = "SELECT pattern_id, occurrences FROM patterns ORDER BY 1"
    assert rows(tmp_path / "bulk", patterns) == rows(tmp_path / "source", patterns)
    assert not (tmp_path / "dump.jsonl.gz.checkpoint").exists()


async def test_a_bad_line_is_named_and_after_the_fix_the_import_resumes(tmp_path: Path) -> None:
    items: list[Any] = [record(seed) for seed in range(30)]
    items[24]["outcome"]["verdict"] = "maybe"
    items.insert(5, b"\n")  # blank lines count as lines, and are skipped
    history = write_lines(tmp_path / "history.jsonl", items)
    with pytest.raises(ValidationError) as raised:
        await import_file(tmp_path / "a", history, batch_size=10)
    assert raised.value.field == "history.jsonl:26.outcome.verdict"
    state = orjson.loads((tmp_path / "history.jsonl.checkpoint").read_bytes())
    assert state["position"] == 21  # two batches of ten episodes (and the blank line)
    assert rows(tmp_path / "a", "SELECT count(*) FROM episodes") == [(20,)]

    items[25]["outcome"]["verdict"] = "success"  # fixed after the committed prefix
    write_lines(history, items)
    resumed = await import_file(tmp_path / "a", history, batch_size=10)
    assert (resumed.resumed_from, resumed.episodes, resumed.handled) == (21, 30, 10)

    await import_file(tmp_path / "b", history, batch_size=10, checkpoint=False)
    assert content(tmp_path / "a") == content(tmp_path / "b")


async def test_a_file_whose_committed_prefix_changed_is_refused(tmp_path: Path) -> None:
    items: list[Any] = [record(seed) for seed in range(12)]
    items[9]["steps"] = "nope"
    history = write_lines(tmp_path / "h.jsonl.gz", items)
    with pytest.raises(ValidationError, match=r"h\.jsonl\.gz:10\.steps"):
        await import_file(tmp_path / "m", history, batch_size=4)
    items[0]["task_description"] = "something else"
    items[9] = record(9)
    write_lines(history, items)
    with pytest.raises(ValidationError, match="first 8 lines of the input differ"):
        await import_file(tmp_path / "m", history, batch_size=4)


def test_the_cli_imports_a_plain_file_in_bulk(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    history = write_lines(tmp_path / "history.jsonl", [record(seed) for seed in range(15)])
    argv = ["import", str(history), "--data-dir", str(tmp_path / "m"), "--batch-size", "4"]
    assert main([*argv, "--no-learn", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["episodes"], report["batches"], report["learning"]) == (15, 4, "skipped")
    assert main(argv) == 0
    assert "kept 15 already stored" in capsys.readouterr().out

    broken = write_lines(tmp_path / "broken.jsonl", [b'{"task_description": "x"\n'])
    assert main(["import", str(broken), "--data-dir", str(tmp_path / "m")]) == 2
    assert "broken.jsonl:1: is not JSON" in capsys.readouterr().err
