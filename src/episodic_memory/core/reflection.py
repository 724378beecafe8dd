"""Rule-based reflection: what worked, what to improve, and lessons worth reusing.

No LLM on the write path: each rule reads the steps, the outcome and the reward breakdown and
writes one short sentence. The output is deterministic (same episode → same text, so stored
records do not churn on re-computation) and bounded (``MAX_ITEMS`` sentences per list, each at
most ``MAX_ITEM_CHARS``), because reflections are pasted into agents' prompts.
"""

from __future__ import annotations

from collections.abc import Iterable
from statistics import median
from typing import TypeVar

from episodic_memory.core.models import (
    Episode,
    ExecutionStep,
    Reflection,
    RewardScore,
    TaskOutcome,
)
from episodic_memory.core.reward import EXPECTED_STEPS, Recovery, find_recoveries, outcome_value

__all__ = ["MAX_ITEMS", "MAX_ITEM_CHARS", "reflect"]

MAX_ITEMS = 5
MAX_ITEM_CHARS = 240
MAX_ERROR_CHARS = 80  # an error quoted inside a sentence: its first line, shortened
MAX_CHAIN_TOOLS = 8
SLOW_STEP_MIN_MS = 5_000.0  # below this no step is worth calling slow
SLOW_STEP_FACTOR = 3.0  # ... and it must also be this many times the median step
LONG_EPISODE_FACTOR = 2.0  # steps beyond this multiple of the expected count are "long"
RELIABLE_MIN_CALLS = 3

_T = TypeVar("_T")


def reflect(episode: Episode, reward: RewardScore) -> Reflection:
    """Reflect on a finished episode; raises ValidationError if it has no outcome."""
    outcome_value(episode)  # the same typed error as compute_reward for a missing outcome
    outcome = episode.outcome
    assert outcome is not None  # narrowed for mypy: outcome_value() raised otherwise
    recoveries = find_recoveries(episode.steps)
    recovered = {r.failed_index for r in recoveries}
    return Reflection(
        successes=_bounded(_successes(episode, outcome, reward, recoveries)),
        improvements=_bounded(_improvements(episode, outcome, recovered)),
        insights=_bounded(_insights(episode, outcome, recoveries)),
    )


def _successes(
    episode: Episode, outcome: TaskOutcome, reward: RewardScore, recoveries: list[Recovery]
) -> list[str]:
    steps = episode.steps
    n = len(steps)
    out: list[str] = []
    if outcome.verdict == "success":
        out.append(
            f"Completed the task in {n} step(s) with {_chain(steps)}"
            if n
            else "Completed the task without tool calls"
        )
    elif outcome.verdict == "partial" and outcome.completed:
        done, total = len(outcome.completed), len(outcome.completed) + len(outcome.failed)
        out.append(f"Completed {done} of {total} item(s): {_join(outcome.completed)}")
    if outcome.verdict in ("success", "partial") and n:
        expected = EXPECTED_STEPS[episode.context.complexity]
        if reward.step_efficiency >= 1.0:
            out.append(
                f"Efficient: {n} step(s), within the {expected} expected for a "
                f"{episode.context.complexity} task"
            )
        latency = sum(s.latency_ms for s in steps)
        if latency > 0 and reward.time_efficiency >= 0.8:
            out.append(f"Fast: {latency:.0f} ms of tool time in total")
    for failed_tool, recovered_tool in _unique(
        (r.failed_tool, r.recovered_tool) for r in recoveries
    ):
        how = "a retry" if failed_tool == recovered_tool else recovered_tool
        out.append(f"Recovered from a {failed_tool} failure with {how}")
    for tool, calls in _calls_by_tool(steps).items():
        if len(calls) >= RELIABLE_MIN_CALLS and all(s.success for s in calls):
            out.append(f"{tool} succeeded in all {len(calls)} calls")
    return out


def _improvements(episode: Episode, outcome: TaskOutcome, recovered: set[int]) -> list[str]:
    steps = episode.steps
    out: list[str] = []
    reason = _short(outcome.reason or outcome.summary)
    if outcome.verdict == "failure":
        out.append(f"Failed: {reason}" if reason else "Failed without a stated reason")
    elif outcome.verdict == "abstained":
        why = f" ({reason})" if reason else ""
        out.append(
            f"Abstained{why}: gather the missing information or tools earlier, or hand off sooner"
        )
    elif outcome.verdict == "partial" and outcome.failed:
        out.append(f"Not completed: {_join(outcome.failed)}")
    reported: set[str] = set()
    for tool, calls in _calls_by_tool(steps).items():
        failures = [s for s in calls if not s.success]
        if len(failures) >= 2:
            reported.add(tool)
            last = _short(failures[-1].error) or "no error message"
            out.append(
                f"{tool} failed {len(failures)} times (last error: {last}); "
                "check its inputs before retrying"
            )
    for i, step in enumerate(steps):
        if not step.success and i not in recovered and step.tool not in reported:
            reported.add(step.tool)
            err = _short(step.error) or "no error message"
            out.append(f"{step.tool} failed ({err}) and nothing recovered it")
    out.extend(_slow_steps(steps))
    expected = EXPECTED_STEPS[episode.context.complexity]
    if len(steps) > LONG_EPISODE_FACTOR * expected:
        out.append(
            f"Took {len(steps)} steps where about {expected} are expected for a "
            f"{episode.context.complexity} task: look for a shorter tool chain"
        )
    return out


def _insights(episode: Episode, outcome: TaskOutcome, recoveries: list[Recovery]) -> list[str]:
    steps = episode.steps
    where = f"{episode.task_type} tasks in {episode.context.domain}"
    out: list[str] = []
    seen = _unique((r.failed_tool, _short(r.error), r.recovered_tool) for r in recoveries)
    for failed_tool, error, recovered_tool in seen:
        cause = f" with {error}" if error else ""
        out.append(f"When {failed_tool} fails{cause}, {recovered_tool} recovered")
    if outcome.verdict == "success" and steps:
        out.append(f"For {where}, the chain {_chain(steps)} worked")
    elif outcome.verdict in ("failure", "abstained"):
        failed = [s for s in steps if not s.success]
        if failed:
            last = failed[-1]
            err = _short(last.error)
            cause = f" ({err})" if err else ""
            out.append(f"For {where}, {last.tool} failing{cause} ended the attempt")
    for tool, calls in _calls_by_tool(steps).items():
        failures = sum(1 for s in calls if not s.success)
        if len(calls) >= RELIABLE_MIN_CALLS and failures * 2 >= len(calls):
            out.append(f"{tool} is unreliable here: {failures} of {len(calls)} calls failed")
    return out


def _slow_steps(steps: list[ExecutionStep]) -> list[str]:
    """The slowest step, if it stands out from the episode's typical step."""
    if len(steps) < 2:
        return []
    typical = median(s.latency_ms for s in steps)
    index, slowest = max(enumerate(steps), key=lambda pair: pair[1].latency_ms)
    threshold = max(SLOW_STEP_MIN_MS, SLOW_STEP_FACTOR * typical)
    if slowest.latency_ms < threshold:
        return []
    number = slowest.step_number or index + 1
    return [
        f"Step {number} ({slowest.tool}) took {slowest.latency_ms:.0f} ms against a median of "
        f"{typical:.0f} ms: cache, narrow or parallelise it"
    ]


def _calls_by_tool(steps: list[ExecutionStep]) -> dict[str, list[ExecutionStep]]:
    calls: dict[str, list[ExecutionStep]] = {}
    for step in steps:
        calls.setdefault(step.tool, []).append(step)
    return calls


def _chain(steps: list[ExecutionStep]) -> str:
    """Tools in order, consecutive repeats collapsed, the middle elided when long."""
    tools: list[str] = []
    for step in steps:
        if not tools or tools[-1] != step.tool:
            tools.append(step.tool)
    if len(tools) > MAX_CHAIN_TOOLS:
        half = MAX_CHAIN_TOOLS // 2
        tools = [*tools[:half], "…", *tools[-(MAX_CHAIN_TOOLS - half - 1) :]]
    return " → ".join(tools)


def _short(text: str | None) -> str:
    """First non-empty line, whitespace collapsed, cut to ``MAX_ERROR_CHARS``."""
    if not text:
        return ""
    line = next((ln for ln in text.splitlines() if ln.strip()), "")
    line = " ".join(line.split())
    return line if len(line) <= MAX_ERROR_CHARS else line[: MAX_ERROR_CHARS - 1] + "…"


def _join(items: list[str], limit: int = 3) -> str:
    shown = [_short(item) for item in items[:limit]]
    more = len(items) - limit
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def _unique(items: Iterable[_T]) -> list[_T]:
    return list(dict.fromkeys(items))


def _bounded(sentences: list[str]) -> list[str]:
    """Unique sentences, at most ``MAX_ITEMS``, each at most ``MAX_ITEM_CHARS``."""
    clipped = (s if len(s) <= MAX_ITEM_CHARS else s[: MAX_ITEM_CHARS - 1] + "…" for s in sentences)
    return _unique(clipped)[:MAX_ITEMS]
