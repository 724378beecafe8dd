"""Deterministic, realistic episodes at any count, grown from the 624 real tasks in evaldata.

Templated generators repeat a few dozen descriptions, which flatters every index at a million
episodes (ties everywhere, tiny vocabularies). Real agent tasks are mostly unique in their
details and repetitive in their kinds, so episode ``n`` takes real task ``n mod 624``'s
description, context and gold tools, and re-draws its details: every number (order ids, zip
codes, amounts, dates) gets fresh digits of the same length and every known person name is
swapped for another. Around one run in eight has a failing call that is retried, and some end
in partial success or failure, as in the reward model's examples. ``episode(n)`` is a pure
function of ``n``, so runs are reproducible and can resume at any offset.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import orjson

from episodic_memory.core.models import Episode, ExecutionStep, TaskContext, TaskOutcome

__all__ = ["EVALDATA", "episode", "episodes", "query"]

EVALDATA = Path(__file__).resolve().parents[2] / "shared" / "evaldata" / "tau_dev.jsonl"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
_DIGITS = re.compile(r"\d+")
FIRST = [
    "Yusuf", "Mia", "Chen", "Olga", "Raj", "Amara", "Lucas", "Sofia", "Ivan", "Noor", "Aarav",
    "Ethan", "Fatima", "Harper", "Isabella", "Juan", "Lei", "Mohamed", "Omar", "Sara", "Yara",
]  # fmt: skip
LAST = [
    "Rossi", "Garcia", "Kim", "Novak", "Patel", "Okafor", "Silva", "Berg", "Haddad", "Ahmed",
    "Brown", "Davis", "Ito", "Jensen", "Khan", "Lopez", "Moreau", "Nguyen", "Santos", "Wilson",
]  # fmt: skip


@cache
def _tasks() -> list[dict[str, Any]]:
    rows = [orjson.loads(line) for line in EVALDATA.read_bytes().splitlines() if line.strip()]
    names = re.compile(r"\b(" + "|".join(FIRST + LAST) + r")\b")
    for row in rows:
        row["_names"] = names
    return rows


def _redraw(text: str, rng: random.Random) -> str:
    text = _DIGITS.sub(lambda m: "".join(rng.choices("0123456789", k=len(m.group()))), text)
    names: re.Pattern[str] = _tasks()[0]["_names"]
    return names.sub(lambda m: rng.choice(FIRST if m.group() in FIRST else LAST), text)


def _steps(tools: list[str], rng: random.Random) -> tuple[list[ExecutionStep], bool]:
    """Gold tools in order; maybe one failing call retried; ``False`` when the run gives up."""
    steps: list[ExecutionStep] = []
    failing = rng.randrange(len(tools)) if tools and rng.random() < 0.125 else -1
    for i, tool in enumerate(tools):
        latency = round(rng.uniform(20, 900), 1)
        tokens = rng.randint(40, 600)
        if i == failing:
            steps.append(
                ExecutionStep(
                    tool=tool,
                    action=f"call {tool}",
                    latency_ms=latency,
                    tokens=tokens,
                    success=False,
                    error=rng.choice(["timeout after 30s", "404 not found", "invalid argument"]),
                )
            )
            if rng.random() < 0.25:
                return steps, False
        steps.append(
            ExecutionStep(
                tool=tool,
                action=f"call {tool}",
                latency_ms=latency,
                tokens=tokens,
                observation=f"{tool} ok",
            )
        )
    return steps, True


def episode(n: int) -> Episode:
    """Completed episode number ``n`` (any non-negative int)."""
    tasks = _tasks()
    row = tasks[n % len(tasks)]
    rng = random.Random(n * 7919 + 17)
    description = _redraw(row["task_description"], rng)
    tools = [step["tool"] for step in row["steps"]]
    steps, finished = _steps(tools, rng)
    if not finished:
        outcome = TaskOutcome.failure("gave up after a failing call", summary="gave up")
    elif rng.random() < 0.08:
        outcome = TaskOutcome.partial(tools[:1], tools[1:2], summary="partly done")
    else:
        outcome = TaskOutcome.success("done")
    started = T0 + timedelta(seconds=n * 13 % (180 * 86400))
    return Episode(
        episode_id=f"scale-{n:08d}",
        task_description=description,
        context=TaskContext.model_validate(row["context"]),
        status="completed",
        outcome=outcome,
        steps=[step.model_copy(update={"step_number": i + 1}) for i, step in enumerate(steps)],
        started_at=started,
        completed_at=started + timedelta(seconds=sum(s.latency_ms for s in steps) / 1000 + 1),
    )


def episodes(count: int, start: int = 0) -> Iterator[Episode]:
    for n in range(start, count):
        yield episode(n)


def query(n: int) -> tuple[str, TaskContext]:
    """A new task (never stored: drawn from a disjoint seed range) and its context."""
    stored = episode(10**9 + n)
    return stored.task_description, stored.context
