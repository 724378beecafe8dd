"""Demo: a fleet of agents on Ray shares one memory, then a new task asks it for advice.

``scripts/demo`` runs this. Agents work concurrently inside Ray tasks (``--workers`` tasks,
``--agents`` agents spread over them), each through realistic episodes in several domains —
tool sequences with failures and the recoveries that fix them — from a seeded generator, so a
run is reproducible. Every agent holds the memory handle it received as a task argument; the
handle reconnects to the named actors in the worker. Then one retrieval for a task the fleet
has not seen is printed: ranked episodes with their score breakdown, the patterns and
heuristics that apply, and the tools to try. Data lives in ``./.episodic-memory/`` (or
``--data-dir``) and survives runs: a second run adds to what the first one learned.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from episodic_memory.config import MemoryConfig, RayConfig
from episodic_memory.core.context import RetrievedContext
from episodic_memory.core.models import ExecutionStep, TaskContext, TaskOutcome
from episodic_memory.core.patterns import DecisionPoint, ErrorRecovery, Pattern, ToolSequence
from episodic_memory.memory import SelfLearningMemory

__all__ = ["WORKFLOWS", "Workflow", "generate_episode", "main"]


@dataclass(frozen=True)
class Workflow:
    """One domain's kind of work: task templates, the usual tools, how they fail and recover."""

    domain: str
    language: str
    tasks: tuple[str, ...]
    subjects: tuple[str, ...]
    tools: tuple[str, ...]
    failures: dict[str, tuple[float, str, tuple[str, ...]]] = field(default_factory=dict)
    framework: str | None = None


WORKFLOWS = (
    Workflow(
        "web",
        "python",
        ("fix the failing {x} test", "add pagination to the {x} endpoint", "speed up the {x} view"),
        ("login", "checkout", "search", "profile", "orders"),
        ("read_file", "run_tests", "edit_file", "run_tests", "git_commit"),
        {"run_tests": (0.35, "AssertionError: expected 200, got 500", ("read_logs", "edit_file"))},
        "django",
    ),
    Workflow(
        "data",
        "python",
        ("repair the {x} ETL job", "backfill {x} for last week", "deduplicate the {x} table"),
        ("orders", "clickstream", "invoices", "users"),
        ("inspect_schema", "run_query", "write_transform", "run_pipeline", "validate_counts"),
        {
            "run_pipeline": (0.3, "SchemaMismatch: column amount is string", ("cast_columns",)),
            "run_query": (0.15, "Timeout after 30s", ("add_index",)),
        },
        "airflow",
    ),
    Workflow(
        "devops",
        "yaml",
        ("roll back the {x} deployment", "fix the crash-looping {x} pod", "renew TLS for {x}"),
        ("api", "worker", "gateway", "scheduler"),
        ("kubectl_get", "read_logs", "kubectl_describe", "helm_upgrade", "check_health"),
        {
            "helm_upgrade": (0.3, "ImagePullBackOff: tag not found", ("fix_image_tag",)),
            "check_health": (0.2, "503 Service Unavailable", ("rollout_restart",)),
        },
        "kubernetes",
    ),
    Workflow(
        "payments",
        "go",
        ("reconcile {x} payouts with the ledger", "refund disputed {x} charges"),
        ("stripe", "adyen", "paypal"),
        ("fetch_payouts", "load_ledger", "diff_ledger", "post_adjustment", "send_report"),
        {"diff_ledger": (0.35, "KeyError: currency", ("normalize_currency",))},
    ),
    Workflow(
        "docs",
        "markdown",
        ("write the {x} migration guide", "update the {x} API reference"),
        ("v2", "auth", "billing"),
        ("search_docs", "read_file", "write_doc", "lint_markdown", "open_pr"),
        {"lint_markdown": (0.25, "MD013 line length", ("reflow_text",))},
    ),
)


def _step(rng: random.Random, tool: str, action: str, error: str | None = None) -> ExecutionStep:
    return ExecutionStep(
        tool=tool,
        action=action,
        latency_ms=round(rng.uniform(20, 900), 1),
        tokens=rng.randint(50, 1500),
        success=error is None,
        error=error,
        observation=f"{tool} failed: {error}" if error else f"{tool} ok",
    )


def generate_episode(
    seed: int,
) -> tuple[str, TaskContext, list[ExecutionStep], TaskOutcome]:
    """A deterministic episode for ``seed``: task, context, steps, outcome."""
    rng = random.Random(seed)
    flow = WORKFLOWS[rng.randrange(len(WORKFLOWS))]
    subject = rng.choice(flow.subjects)
    task = rng.choice(flow.tasks).format(x=subject)
    context = TaskContext(
        domain=flow.domain, language=flow.language, framework=flow.framework, tags=[subject]
    )
    steps: list[ExecutionStep] = []
    for i, tool in enumerate(flow.tools):
        chance, error, recovery = flow.failures.get(tool, (0.05, "transient error", ()))
        if rng.random() >= chance:
            steps.append(_step(rng, tool, f"{tool} for {subject}"))
            continue
        steps.append(_step(rng, tool, f"{tool} for {subject}", error))
        if rng.random() < 0.2:  # the agent gives up here
            done = list(dict.fromkeys(flow.tools[:i]))
            if i >= len(flow.tools) // 2:
                outcome = TaskOutcome.partial(done, [tool], summary=f"stuck at {tool}")
            else:
                outcome = TaskOutcome.failure(error, summary=f"could not get past {tool}")
            return task, context, steps, outcome
        steps += [_step(rng, fix, f"{fix} to recover from {error}") for fix in recovery]
        steps.append(_step(rng, tool, f"retry {tool} for {subject}"))
    return task, context, steps, TaskOutcome.success(f"{task}: done")


async def _agent(memory: SelfLearningMemory, agent: int, seeds: list[int]) -> Counter[str]:
    verdicts: Counter[str] = Counter()
    for seed in seeds:
        task, context, steps, outcome = generate_episode(seed)
        episode_id = await memory.start_episode(task, context, agent_id=f"agent-{agent}")
        half = len(steps) // 2
        for step in steps[:half]:  # some steps one by one, the rest as a burst
            await memory.log_step(episode_id, step)
        await memory.log_steps(episode_id, steps[half:])
        result = await memory.complete_episode(episode_id, outcome)
        verdicts[result.verdict] += 1
    return verdicts


def _worker(memory: SelfLearningMemory, work: dict[int, list[int]]) -> dict[str, int]:
    """A Ray task running several agents concurrently on its own event loop."""

    async def run() -> Counter[str]:
        counts = await asyncio.gather(*(_agent(memory, a, s) for a, s in work.items()))
        return sum(counts, Counter())

    return dict(asyncio.run(run()))


def _describe(pattern: Pattern) -> str:
    if isinstance(pattern, ToolSequence):
        what = " → ".join(pattern.tools)
    elif isinstance(pattern, DecisionPoint):
        what = f"after {' → '.join(pattern.after_tools) or 'the start'}, use {pattern.chosen_tool}"
    elif isinstance(pattern, ErrorRecovery):
        what = f"when {pattern.failed_tool} fails: {' → '.join(pattern.recovery_tools)}"
    else:
        what = f"{', '.join(pattern.tools)} where {pattern.features}"
    return f"{pattern.kind}: {what} (confidence {pattern.confidence:.2f}, {pattern.occurrences}×)"


def _show(console: Console, context: RetrievedContext) -> None:
    console.rule(f"[bold]Advice for a new task:[/bold] {context.query}")
    for rank, ep in enumerate(context.episodes, start=1):
        b = ep.breakdown
        reward = f" · reward {ep.reward:.2f}" if ep.reward is not None else ""
        console.print(
            f"[bold]{rank}. {escape(ep.task_description)}[/bold]  \\[{ep.verdict}{reward}]"
            f"  score [bold]{ep.score:.2f}[/bold]"
        )
        console.print(f"   tools: {' → '.join(ep.tools)}", highlight=False)
        console.print(
            f"   semantic {b.semantic:.2f} · keyword {b.keyword:.2f} · context {b.context:.2f}"
            f" · outcome {b.outcome:.2f} · recency {b.recency:.2f} · tools {b.tool_overlap:.2f}",
            style="dim",
        )
    if context.explanation:
        console.print(f"[yellow]{context.explanation}[/yellow]")
    if context.suggested_tools:
        tools = ", ".join(f"{s.tool} ({s.confidence:.2f})" for s in context.suggested_tools)
        console.print(f"\n[bold]Suggested tools, in order:[/bold] {tools}")
    sections = (
        (
            "Heuristics",
            [f"if {h.condition}: {h.action} ({h.confidence:.2f})" for h in context.heuristics],
        ),
        ("Patterns", [_describe(p) for p in context.patterns]),
    )
    for heading, lines in sections:
        if lines:
            console.print(f"\n[bold]{heading}:[/bold]")
            for line in lines:
                console.print(f"  - {line}", highlight=False)


async def _run(args: argparse.Namespace, console: Console) -> None:
    import ray

    ray_config = RayConfig(placement=args.placement, num_cpus=args.num_cpus)
    config = MemoryConfig.from_env(data_dir=Path(args.data_dir), ray=ray_config)
    console.print(f"Opening the memory in [bold]{config.data_dir.resolve()}[/bold] ...")
    memory = await SelfLearningMemory.open(config)
    try:
        total = args.agents * args.episodes
        seeds = {
            a: [args.seed * 1_000_003 + a * 1000 + e for e in range(args.episodes)]
            for a in range(args.agents)
        }
        shares = [dict(list(seeds.items())[w :: args.workers]) for w in range(args.workers)]
        task = ray.remote(num_cpus=0)(_worker)
        started = time.perf_counter()
        pending = [task.remote(memory, share) for share in shares if share]
        done_counts: list[dict[str, int]] = []
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        ) as bar:
            job = bar.add_task(f"{args.agents} agents in {len(pending)} Ray tasks", total=total)
            while pending:
                ready, pending = ray.wait(pending, num_returns=len(pending), timeout=0.25)
                done_counts += [await ref for ref in ready]
                stats = await memory.stats()
                bar.update(job, completed=stats["episodes"].get("episodes_completed", 0))
            bar.update(job, completed=total)
        elapsed = time.perf_counter() - started
        verdicts = sum((Counter(c) for c in done_counts), Counter())
        console.print(f"{total} episodes in {elapsed:.1f}s: {dict(verdicts)}")
        await memory.settle()
        stats = await memory.stats()
        tables = stats["storage"]["tables"]
        held = ", ".join(f"{tables.get(k, 0)} {k}" for k in ("episodes", "patterns", "heuristics"))
        console.print(f"The memory now holds {held}.\n")
        query = TaskContext(domain="web", language="python", framework="django")
        context = await memory.retrieve_relevant_context(args.query, query, limit=args.limit)
        _show(console, context)
    finally:
        await memory.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="scripts/demo", description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=".episodic-memory")
    parser.add_argument("--agents", type=int, default=32)
    parser.add_argument("--episodes", type=int, default=4, help="episodes per agent")
    parser.add_argument("--workers", type=int, default=4, help="Ray tasks the agents run in")
    parser.add_argument("--placement", choices=["hosted", "dedicated"], default="hosted")
    parser.add_argument("--num-cpus", type=int, default=None)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--limit", type=int, default=5)
    parser.add_argument("--query", default="fix the failing payment form test")
    args = parser.parse_args(argv)
    asyncio.run(_run(args, Console()))


if __name__ == "__main__":
    main()
