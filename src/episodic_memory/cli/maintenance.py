"""Moving and mending data: ``export``, ``import``, ``sync``, ``migrate``.

``export`` works on the store directly (see ``episodic_memory.transfer`` for why): with an
address it first has the served memory flush and finish learning, then reads the database the
service uses — from this machine, so run it on the storage node or use a remote libSQL URL.

``import`` takes two roads. An export into a memory nobody serves is copied below it, as an
exact copy (``transfer.import_memory``; ``--merge`` into a used one). Everything else — any file
into a served memory (``--address``/``--backend ray``), or a plain JSON Lines file of episodes —
goes through ``bulk_ingest`` (``episodic_memory.ingest``): large batches, a progress bar, and a
checkpoint beside the file so the same command resumes after a crash. A served memory keeps
what it holds (an import there always merges).
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from episodic_memory.cli.common import (
    Registry,
    attach,
    backend_of,
    config_from,
    connect_ray,
    emit,
    open_memory,
    progress_bar,
    served,
    stderr,
    stdout,
    table,
    with_options,
)
from episodic_memory.config import MemoryConfig
from episodic_memory.core.sanitize import redact
from episodic_memory.ingest import DEFAULT_BATCH_SIZE
from episodic_memory.memory import SelfLearningMemory
from episodic_memory.transfer import export_memory, import_memory, is_export

__all__ = ["register"]


def register(add: Registry) -> None:
    export = add(
        "export",
        "write the whole memory to a JSON Lines file (.gz compresses)",
        "  episodic-memory export backup.jsonl.gz --data-dir ./.episodic-memory\n"
        "  episodic-memory export backup.jsonl --address auto   # flushes the service first",
    )
    with_options(export)
    export.add_argument("path", type=Path, help="file to write (.jsonl or .jsonl.gz)")
    export.set_defaults(run=run_export)
    load = add(
        "import",
        "load an export or a JSON Lines file of episodes (into a served memory: bulk ingest)",
        "  episodic-memory import backup.jsonl.gz --data-dir ./new-memory\n"
        "  episodic-memory import backup.jsonl --merge   # finishes an interrupted offline copy\n"
        "  episodic-memory import history.jsonl --address auto   # bulk ingest, resumable\n"
        "  episodic-memory import history.jsonl --data-dir ./memory --batch-size 5000 --no-learn",
    )
    with_options(load)
    load.add_argument("path", type=Path, help="a file written by export, or one episode per line")
    load.add_argument("--merge", action="store_true", help="keep existing records, add the rest")
    bulk = load.add_argument_group("bulk ingest (a served memory, or a file of episodes)")
    bulk.add_argument(
        "--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="episodes per transaction"
    )
    bulk.add_argument(
        "--checkpoint", type=Path, help="resume file (default: <path>.checkpoint, beside it)"
    )
    bulk.add_argument(
        "--no-checkpoint", action="store_true", help="keep no resume file (reruns skip stored)"
    )
    bulk.add_argument(
        "--no-learn", action="store_true", help="store them learned: no patterns from them"
    )
    load.set_defaults(run=run_import)
    sync = add(
        "sync",
        "flush buffered steps and repair the LMDB cache from libSQL",
        "  episodic-memory sync --data-dir ./.episodic-memory\n"
        "  episodic-memory sync --address auto --json",
    )
    with_options(sync)
    sync.set_defaults(run=run_sync)
    migrate = add(
        "migrate",
        "bring the database schema up to date (safe to re-run)",
        "  episodic-memory migrate --check   # exit 1 when migrations are pending\n"
        "  TURSO_DATABASE_URL=libsql://db.turso.io episodic-memory migrate",
    )
    with_options(migrate, backend=False)
    migrate.add_argument("--check", action="store_true", help="report only; apply nothing")
    migrate.set_defaults(run=run_migrate)


async def run_export(args: argparse.Namespace) -> int:
    config = config_from(args)
    if backend_of(args, config) == "ray":
        async with attach(config) as memory:
            await memory.settle()  # buffered steps and in-flight learning reach storage
            config = memory.config
    with progress_bar(f"exporting to {args.path}") as update:
        report = await export_memory(config, args.path, progress=update)
    emit(
        args,
        {"path": report.path, "counts": report.counts},
        lambda: stdout.print(f"exported {report.counts} to {report.path}"),
    )
    return 0


async def run_import(args: argparse.Namespace) -> int:
    config = config_from(args)
    if backend_of(args, config) == "ray":
        connect_ray(config)
        if served(config):
            async with attach(config) as memory:
                return await _bulk_import(args, memory, served=True)
    if not await asyncio.to_thread(is_export, args.path):
        memory = await SelfLearningMemory.open(config, backend="in_process")
        try:
            return await _bulk_import(args, memory, served=False)
        finally:
            await memory.close()
    with progress_bar(f"importing {args.path}") as update:
        report = await import_memory(config, args.path, merge=args.merge, progress=update)
    emit(
        args,
        {"path": report.path, "added": report.counts, "skipped": report.skipped},
        lambda: stdout.print(f"imported {report.counts} (kept existing: {report.skipped})"),
    )
    return 0


async def _bulk_import(
    args: argparse.Namespace, memory: SelfLearningMemory, *, served: bool
) -> int:
    checkpoint: bool | Path = False if args.no_checkpoint else (args.checkpoint or True)
    with progress_bar(f"ingesting {args.path}") as update:
        report = await memory.import_file(
            args.path,
            batch_size=args.batch_size,
            progress=update,
            checkpoint=checkpoint,
            learn=not args.no_learn,
        )
    data = {"path": str(args.path), **report.to_json()}
    resumed = f" (resumed after line {report.resumed_from})" if report.resumed_from else ""
    later = "the service's learners" if served else "the next time this memory is opened"
    learning = f"; learning continues in {later}" if report.learning == "background" else ""
    emit(
        args,
        data,
        lambda: stdout.print(
            f"ingested {report.episodes} episode(s), {report.steps} step(s); kept "
            f"{report.skipped} already stored{resumed}; {report.episodes_per_s:.0f} "
            f"episodes/s{learning}"
        ),
    )
    return 0


async def run_sync(args: argparse.Namespace) -> int:
    with progress_bar("repairing the cache") as update:
        async with open_memory(args) as memory:
            report = await memory.sync_memories()
        update(1, 1)
    data = {
        **report.model_dump(mode="json", exclude={"schema_version"}),
        "repaired": report.repaired,
    }
    emit(
        args, data, lambda: table("cache repair", ["what", "count"], list(map(list, data.items())))
    )
    return 0


async def _schema_version(config: MemoryConfig) -> int:
    """The database's recorded schema version; 0 when it (or its file) does not exist yet."""
    from episodic_memory.storage.executors import path_from_file_url
    from episodic_memory.storage.libsql_store import make_executor

    url = config.database_url
    if url.startswith("file:") and not await asyncio.to_thread(
        Path(path_from_file_url(url)).exists
    ):
        return 0  # checking must not create the database
    executor = make_executor(config)
    try:
        found = await executor.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
        )
        if not found.rows:
            return 0
        rows = (await executor.execute("SELECT max(version) FROM schema_migrations")).rows
        return int(str(rows[0][0] or 0))
    finally:
        await executor.close()


async def run_migrate(args: argparse.Namespace) -> int:
    from episodic_memory.storage.libsql_store import make_executor
    from episodic_memory.storage.migrate import apply_migrations, latest_version, load_migrations

    config = config_from(args)
    applied: list[int] = []
    if not args.check:
        executor = make_executor(config)
        try:
            applied = await apply_migrations(executor)
        finally:
            await executor.close()
    current, latest = await _schema_version(config), latest_version()
    data = {
        "database": redact(config.database_url),
        "version": current,
        "latest": latest,
        "applied": applied,
        "pending": [m.version for m in load_migrations() if m.version > current],
    }
    if current > latest:
        stderr.print(f"the database is at version {current}, newer than this code ({latest})")
    emit(args, data, lambda: table("schema", ["what", "value"], list(map(list, data.items()))))
    return 1 if data["pending"] or current > latest else 0
