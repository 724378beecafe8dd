"""Reading the memory: ``episodes list|show``, ``retrieve``, ``patterns list``,
``heuristics list`` and ``stats``."""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any

from episodic_memory.cli.common import (
    Registry,
    emit,
    open_memory,
    open_reader,
    stdout,
    table,
    with_options,
)
from episodic_memory.core.models import Episode, TaskContext
from episodic_memory.core.patterns import (
    ContextPattern,
    DecisionPoint,
    ErrorRecovery,
    Pattern,
    ToolSequence,
)
from episodic_memory.errors import EpisodeNotFound, ValidationError
from episodic_memory.storage.base import EpisodeQuery

__all__ = ["register"]


def _clip(text: str, width: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _when(value: str) -> datetime:
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an ISO-8601 time") from None


def register(add: Registry) -> None:
    episodes = add("episodes", "list or show stored episodes", "  episodic-memory episodes list")
    verbs = episodes.add_subparsers(dest="verb", required=True, metavar="{list,show}")
    listing = add(
        "episodes list",
        "episode headers, newest first, filtered",
        "  episodic-memory episodes list --domain web --verdict failure --limit 10\n"
        "  episodic-memory episodes list --since 2026-01-01 --json",
        verbs,
    )
    with_options(listing)
    listing.add_argument("--domain", help="only this context domain")
    listing.add_argument("--task-type", help="only this task type (e.g. debugging)")
    listing.add_argument(
        "--verdict",
        choices=["success", "partial", "failure", "abstained"],
        help="only this outcome",
    )
    listing.add_argument("--status", choices=["active", "completed"], help="only this status")
    listing.add_argument("--since", type=_when, help="started at or after (ISO-8601)")
    listing.add_argument("--until", type=_when, help="started before (ISO-8601)")
    listing.add_argument("--limit", type=int, default=20, help="at most this many (default 20)")
    listing.set_defaults(run=run_list)
    show = add(
        "episodes show",
        "one episode with its steps, outcome, reward and reflection",
        "  episodic-memory episodes show 0c6f2a9e-...\n  episodic-memory episodes show ID --json",
        verbs,
    )
    with_options(show)
    show.add_argument("episode_id", help="as printed by 'episodes list'")
    show.set_defaults(run=run_show)

    retrieve = add(
        "retrieve",
        "the most useful past experience for a task",
        '  episodic-memory retrieve "fix the failing login test" --domain web --limit 3\n'
        '  episodic-memory retrieve "renew TLS for the gateway" --prompt',
    )
    with_options(retrieve)
    retrieve.add_argument("task", help="the new task, in words")
    retrieve.add_argument("--domain", help="the task's domain (web, data, ...)")
    retrieve.add_argument("--language", help="the task's programming language")
    retrieve.add_argument("--tag", action="append", default=[], help="a context tag; repeatable")
    retrieve.add_argument("--limit", type=int, default=5, help="episodes to return (default 5)")
    retrieve.add_argument("--prompt", action="store_true", help="print the agent briefing")
    retrieve.set_defaults(run=run_retrieve)

    kinds = (
        ("patterns", "learned patterns (tool sequences, decisions, recoveries)"),
        ("heuristics", "learned heuristics (condition → action rules)"),
    )
    for kind, what in kinds:
        group = add(kind, f"list {what}", f"  episodic-memory {kind} list")
        sub = group.add_subparsers(dest="verb", required=True, metavar="{list}")
        lister = add(
            f"{kind} list",
            f"{what}, most confident first",
            f"  episodic-memory {kind} list --domain devops --limit 10\n"
            f"  episodic-memory {kind} list --json",
            sub,
        )
        with_options(lister)
        lister.add_argument("--domain", help="only this domain")
        lister.add_argument("--limit", type=int, default=20, help="at most this many (default 20)")
        lister.set_defaults(run=run_patterns if kind == "patterns" else run_heuristics)

    stats = add(
        "stats",
        "counts per component: tables, cache, index, episode hosts, learners",
        "  episodic-memory stats --data-dir ./.episodic-memory\n"
        "  episodic-memory stats --address auto --json",
    )
    with_options(stats)
    stats.set_defaults(run=run_stats)


async def run_list(args: argparse.Namespace) -> int:
    if not 1 <= args.limit <= 10_000:
        raise ValidationError("--limit", f"is {args.limit}", "use 1 to 10000")
    query = EpisodeQuery(
        domain=args.domain,
        task_type=args.task_type,
        verdict=args.verdict,
        status=args.status,
        started_after=args.since,
        started_before=args.until,
        limit=args.limit,
    )
    async with open_reader(args) as reader:
        found = await reader.list_episodes(query)
    rows = [e.summary_json() for e in found]
    emit(
        args,
        rows,
        lambda: table(
            f"{len(rows)} episode(s)",
            ["id", "started", "status", "verdict", "reward", "type", "domain", "task"],
            [
                [
                    e.episode_id,
                    e.started_at.strftime("%Y-%m-%d %H:%M"),
                    e.status,
                    e.verdict,
                    e.reward.total if e.reward else None,
                    e.task_type,
                    e.context.domain,
                    _clip(e.task_description),
                ]
                for e in found
            ],
        ),
    )
    return 0


def _show(episode: Episode) -> None:
    outcome = episode.outcome
    stdout.print(f"[bold]{episode.task_description}[/bold]")
    fields = {
        "id": episode.episode_id,
        "status": episode.status,
        "verdict": episode.verdict,
        "reward": f"{episode.reward.total:.3f}" if episode.reward else None,
        "task type": episode.task_type,
        "context": episode.context.model_dump_json(exclude_defaults=True),
        "agent": episode.agent_id,
        "started": episode.started_at.isoformat(),
        "completed": episode.completed_at.isoformat() if episode.completed_at else None,
        "outcome": outcome.summary if outcome else None,
    }
    table(None, ["field", "value"], [[k, v] for k, v in fields.items() if v is not None])
    table(
        "steps",
        ["#", "tool", "ok", "ms", "action / error"],
        [
            [
                s.step_number,
                s.tool,
                "yes" if s.success else "no",
                s.latency_ms,
                _clip(s.error or s.action or "", 80),
            ]
            for s in episode.steps
        ],
    )
    if episode.reflection is not None:
        lessons = episode.reflection.model_dump(exclude={"schema_version"})
        for heading, items in lessons.items():
            for item in items:
                stdout.print(f"{heading}: {item}")


async def run_show(args: argparse.Namespace) -> int:
    async with open_reader(args) as reader:
        found = await reader.get_episodes([args.episode_id])
    if not found:
        raise EpisodeNotFound(args.episode_id)
    emit(args, found[0].model_dump(mode="json"), lambda: _show(found[0]))
    return 0


async def run_retrieve(args: argparse.Namespace) -> int:
    context = TaskContext(
        **{k: v for k, v in (("domain", args.domain), ("language", args.language)) if v},
        tags=args.tag,
    )
    async with open_memory(args) as memory:
        found = await memory.retrieve_relevant_context(args.task, context, limit=args.limit)

    def human() -> None:
        if args.prompt:
            stdout.print(found.to_prompt(), markup=False)
            return
        table(
            f"past experience for: {found.query}",
            ["#", "score", "verdict", "task", "tools"],
            [
                [i, e.score, e.verdict, _clip(e.task_description, 50), " → ".join(e.tools)]
                for i, e in enumerate(found.episodes, start=1)
            ],
        )
        if found.suggested_tools:
            tools = ", ".join(f"{s.tool} ({s.confidence:.2f})" for s in found.suggested_tools)
            stdout.print(f"suggested tools: {tools}")
        if found.explanation:
            stdout.print(found.explanation)

    emit(args, found.model_dump(mode="json"), human)
    return 0


def describe(pattern: Pattern) -> str:
    if isinstance(pattern, ToolSequence):
        return " → ".join(pattern.tools)
    if isinstance(pattern, DecisionPoint):
        return f"after {' → '.join(pattern.after_tools) or 'start'}: {pattern.chosen_tool}"
    if isinstance(pattern, ErrorRecovery):
        return f"{pattern.failed_tool} fails: {' → '.join(pattern.recovery_tools)}"
    assert isinstance(pattern, ContextPattern)
    return f"{', '.join(pattern.tools)} where {pattern.features}"


async def run_patterns(args: argparse.Namespace) -> int:
    async with open_reader(args) as reader:
        found = await reader.patterns(args.domain, args.limit)
    rows = [[p.kind, p.domain, p.confidence, p.occurrences, describe(p)] for p in found]
    emit(
        args,
        [p.model_dump(mode="json") for p in found],
        lambda: table(
            f"{len(found)} pattern(s)", ["kind", "domain", "confidence", "seen", "what"], rows
        ),
    )
    return 0


async def run_heuristics(args: argparse.Namespace) -> int:
    async with open_reader(args) as reader:
        found = await reader.heuristics(args.domain, args.limit)
    rows = [
        [h.domain, h.confidence, h.evidence_count, f"if {h.condition}: {h.action}"] for h in found
    ]
    emit(
        args,
        [h.model_dump(mode="json") for h in found],
        lambda: table(
            f"{len(found)} heuristic(s)", ["domain", "confidence", "episodes", "rule"], rows
        ),
    )
    return 0


def _flat(prefix: str, value: Any) -> list[list[Any]]:
    if isinstance(value, dict):
        return [row for k, v in value.items() for row in _flat(f"{prefix}.{k}" if prefix else k, v)]
    if isinstance(value, list):
        return [row for i, v in enumerate(value) for row in _flat(f"{prefix}.{i}", v)]
    return [[prefix, value]]


async def run_stats(args: argparse.Namespace) -> int:
    async with open_memory(args) as memory:
        stats = await memory.stats()
    emit(args, stats, lambda: table("stats", ["what", "value"], _flat("", stats)))
    return 0
