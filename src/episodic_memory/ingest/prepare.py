"""Preparing an ingest batch: records in, validated and redacted episodes and their rows out.

Pure CPU work, no I/O, run on a worker thread of the caller (``ingest.run``). What it does to
each record is what the live path does across ``start_episode``/``log_steps``/
``complete_episode``: steps numbered in order (given numbers kept), every text redacted
(``core.sanitize``), the task type classified when none was given, and for completed episodes
lacking them, reward (``core.reward``) and reflection (``core.reflection``). ``pattern_ids`` stay
as given — learning finds the patterns. Records without an ``episode_id`` get one derived from
their content and position, so rerunning the same input writes nothing twice.

The first bad record raises ``ValidationError`` whose field starts with the record's position
(``episodes[17].steps.3.tool``, ``backup.jsonl:42.context.domain``); its batch is not written.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from episodic_memory.config import InputLimits
from episodic_memory.core.models import Episode, ExecutionStep
from episodic_memory.core.reflection import reflect
from episodic_memory.core.reward import compute_reward
from episodic_memory.core.sanitize import sanitize_episode
from episodic_memory.core.task_type import classify_task
from episodic_memory.errors import ValidationError
from episodic_memory.storage.bulk import EpisodeRows, episode_rows

__all__ = ["IngestItem", "Prepared", "prepare_batch", "prepare_episode"]

_ID_NAMESPACE = uuid.UUID("5b0f7a4e-3d1c-4d8e-9a61-1f2e3c4b5a69")

IngestItem = Episode | Mapping[str, Any]
"""An ``Episode``, its JSON as a dict, or an export line ``{"type": "episode", "record": ...}``."""


@dataclass(frozen=True, slots=True)
class Prepared:
    """A validated batch: episodes (first occurrence of each id) and their rows."""

    episodes: list[Episode]
    rows: list[EpisodeRows]
    repeats: int = 0  # records whose id came earlier in the batch


def _rerooted(label: str, exc: ValidationError) -> ValidationError:
    inner = exc.field.split(".", 1)[1] if "." in exc.field else ""
    return ValidationError(f"{label}.{inner}" if inner else label, exc.problem, exc.fix)


def _content_id(record: Mapping[str, Any], position: str) -> str:
    """A stable id for a record that has none: same content at the same place, same id."""
    try:
        body = orjson.dumps(record, option=orjson.OPT_SORT_KEYS, default=str)
    except (TypeError, orjson.JSONEncodeError):
        body = repr(sorted(record.items(), key=lambda kv: str(kv[0]))).encode()
    return str(uuid.uuid5(_ID_NAMESPACE, position + "\n" + hashlib.sha256(body).hexdigest()))


def _episode(label: str, item: object) -> tuple[Episode, bool]:
    """The record as an Episode, and whether its source marked it learned (an export line)."""
    if isinstance(item, Episode):
        return item, False
    if not isinstance(item, Mapping):
        raise ValidationError(
            label, f"is a {type(item).__name__}", "pass an Episode or a dict of its fields"
        )
    learned = False
    record: Mapping[str, Any] = item
    if item.get("type") == "episode" and isinstance(item.get("record"), Mapping):
        record, learned = item["record"], item.get("learned") is True
    if "episode_id" not in record:
        record = {**record, "episode_id": _content_id(record, label)}
    try:
        return Episode.model_validate(dict(record)), learned
    except ValidationError as exc:
        raise _rerooted(label, exc) from None


def _numbered(label: str, steps: list[ExecutionStep], limit: int) -> list[ExecutionStep]:
    """Steps numbered in list order as the episode actor numbers them; given numbers kept."""
    if len(steps) > limit:
        raise ValidationError(
            f"{label}.steps", f"has {len(steps)} steps", f"send at most {limit} per episode"
        )
    if all(s.step_number is not None for s in steps):
        numbered = steps
    else:
        numbered, next_number = [], 1
        for step in steps:
            number = step.step_number if step.step_number is not None else next_number
            next_number = max(next_number, number + 1)
            numbered.append(step.model_copy(update={"step_number": number}))
    numbers = [s.step_number or 0 for s in numbered]
    if len(set(numbers)) != len(numbers):
        raise ValidationError(
            f"{label}.steps", "has colliding step numbers once numbered in order",
            "number every step or none",
        )  # fmt: skip
    if numbers and max(numbers) > limit:
        raise ValidationError(
            f"{label}.steps", f"numbers a step {max(numbers)}, beyond {limit}", "number from 1"
        )
    return numbered


def prepare_episode(
    label: str, item: object, *, learn: bool, limits: InputLimits
) -> tuple[Episode, bool]:
    """Validate, number, redact and complete one record; returns it and its learned mark."""
    episode, learned = _episode(label, item)
    typed = "task_type" in episode.model_fields_set
    steps = _numbered(label, episode.steps, limits.max_steps_per_episode)
    if steps is not episode.steps:
        episode = episode.model_copy(update={"steps": steps})
    try:
        episode = sanitize_episode(episode)
    except ValidationError as exc:
        raise _rerooted(label, exc) from None
    updates: dict[str, Any] = {"revision": episode.revision + 1}  # a header write bumps it
    if not typed:
        updates["task_type"] = classify_task(episode.task_description, episode.context)
    if episode.status == "completed":
        if episode.completed_at is None:
            stamps = [episode.started_at, *(s.timestamp for s in episode.steps)]
            updates["completed_at"] = max(stamps)
        if episode.reward is None or episode.reflection is None:
            reward = episode.reward or compute_reward(episode)
            updates["reward"] = reward
            updates["reflection"] = episode.reflection or reflect(episode, reward)
    # Marks apply to completed episodes only: an active one is learned when it completes.
    mark = (learned or not learn) and episode.status == "completed"
    return episode.model_copy(update=updates), mark


def prepare_batch(
    items: Sequence[tuple[str, object]], *, learn: bool, limits: InputLimits
) -> Prepared:
    """Every record of a batch prepared (the first error raises: nothing of it is written)."""
    episodes: list[Episode] = []
    rows: list[EpisodeRows] = []
    seen: set[str] = set()
    for label, item in items:
        episode, learned = prepare_episode(label, item, learn=learn, limits=limits)
        if episode.episode_id in seen:
            continue
        seen.add(episode.episode_id)
        episodes.append(episode)
        rows.append(episode_rows(episode, learned=learned))
    return Prepared(episodes, rows, repeats=len(items) - len(episodes))
