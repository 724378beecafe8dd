"""Episode records: what an agent did on one task, and how it went.

All bounds come from ``config.DEFAULT_LIMITS``. Every stored record carries ``schema_version``;
fields added later are optional with defaults, so older JSON shapes keep loading.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, JsonValue, field_validator, model_validator

from episodic_memory.config import DEFAULT_LIMITS as L
from episodic_memory.core.base import SCHEMA_VERSION, JsonObject, Record, check_text, utc_now

__all__ = [
    "Complexity",
    "Episode",
    "EpisodeStatus",
    "ExecutionStep",
    "Reflection",
    "RewardScore",
    "TaskContext",
    "TaskOutcome",
    "Verdict",
    "new_episode_id",
]

Verdict = Literal["success", "partial", "failure", "abstained"]
Complexity = Literal["simple", "moderate", "complex"]
EpisodeStatus = Literal["active", "completed"]


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("is blank; provide a non-empty value")
    return value


Label = Annotated[
    str,
    Field(min_length=1, max_length=L.max_label_chars),
    AfterValidator(check_text),
    AfterValidator(_not_blank),
]
Tag = Annotated[
    str,
    Field(min_length=1, max_length=L.max_tag_chars),
    AfterValidator(check_text),
    AfterValidator(_not_blank),
]
ShortText = Annotated[str, Field(max_length=L.max_action_chars), AfterValidator(check_text)]
ErrorText = Annotated[str, Field(max_length=L.max_error_chars), AfterValidator(check_text)]


def _as_utc(value: datetime) -> datetime:
    """Naive timestamps are taken as UTC; all stored timestamps are aware."""
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:  # 9999-12-31T23:00-05:00 has no UTC equivalent
        raise ValueError(
            "is out of range in UTC; use a timestamp between years 1 and 9999"
        ) from None


Timestamp = Annotated[datetime, AfterValidator(_as_utc)]


def new_episode_id() -> str:
    return str(uuid.uuid4())


class TaskContext(Record):
    """Where a task happens; drives metadata matching in retrieval and context patterns."""

    language: Label | None = None
    domain: Label = "general"
    tags: Annotated[list[Tag], Field(max_length=L.max_tags)] = Field(default_factory=list)
    framework: Label | None = None
    complexity: Complexity = "moderate"
    task_type: Label | None = None  # optional; derived from the description when absent


class ExecutionStep(Record):
    """One tool call. ``step_number`` is assigned in arrival order when not given."""

    step_number: int | None = Field(default=None, ge=1, le=L.max_steps_per_episode)
    tool: Annotated[
        str,
        Field(min_length=1, max_length=L.max_tool_chars),
        AfterValidator(check_text),
        AfterValidator(_not_blank),
    ]
    action: ShortText = ""
    parameters: JsonObject = Field(default_factory=dict)
    latency_ms: float = Field(default=0.0, ge=0.0, le=L.max_latency_ms)
    tokens: int = Field(default=0, ge=0, le=L.max_tokens)
    success: bool = True
    observation: Annotated[
        str, Field(max_length=L.max_observation_chars), AfterValidator(check_text)
    ] = ""
    error: ErrorText | None = None
    timestamp: Timestamp = Field(default_factory=utc_now)
    metadata: JsonObject = Field(default_factory=dict)


OutcomeItem = Annotated[str, Field(max_length=L.max_action_chars), AfterValidator(check_text)]


class TaskOutcome(Record):
    """How the task ended: use success(), partial(), failure() or abstained()."""

    verdict: Verdict
    summary: ShortText = ""
    completed: Annotated[list[OutcomeItem], Field(max_length=L.max_outcome_items)] = Field(
        default_factory=list
    )
    failed: Annotated[list[OutcomeItem], Field(max_length=L.max_outcome_items)] = Field(
        default_factory=list
    )
    reason: ShortText | None = None
    artifacts: Annotated[list[OutcomeItem], Field(max_length=L.max_outcome_items)] = Field(
        default_factory=list
    )

    @classmethod
    def success(cls, summary: str = "", artifacts: list[str] | None = None) -> TaskOutcome:
        return cls(verdict="success", summary=summary, artifacts=artifacts or [])

    @classmethod
    def partial(cls, completed: list[str], failed: list[str], summary: str = "") -> TaskOutcome:
        return cls(verdict="partial", completed=completed, failed=failed, summary=summary)

    @classmethod
    def failure(cls, reason: str, summary: str = "") -> TaskOutcome:
        return cls(verdict="failure", reason=reason, summary=summary)

    @classmethod
    def abstained(cls, reason: str = "", summary: str = "") -> TaskOutcome:
        return cls(verdict="abstained", reason=reason or None, summary=summary)


class RewardScore(Record):
    """Reward in [0, 1] with every component kept, so the score explains itself."""

    schema_version: int = SCHEMA_VERSION
    total: float = Field(ge=0.0, le=1.0)
    outcome: float
    efficiency: float
    time_efficiency: float
    step_efficiency: float
    complexity_bonus: float
    error_penalty: float
    recovery_bonus: float


Lessons = Annotated[list[OutcomeItem], Field(max_length=L.max_outcome_items)]


class Reflection(Record):
    """Rule-based lessons from one episode (no LLM on the write path)."""

    schema_version: int = SCHEMA_VERSION
    successes: Lessons = Field(default_factory=list)
    improvements: Lessons = Field(default_factory=list)
    insights: Lessons = Field(default_factory=list)


class Episode(Record):
    """A whole task: description, context, ordered steps, outcome and what was learned."""

    schema_version: int = SCHEMA_VERSION
    episode_id: Annotated[str, Field(min_length=1, max_length=200), AfterValidator(check_text)] = (
        Field(default_factory=new_episode_id)
    )
    task_description: Annotated[
        str,
        Field(min_length=1, max_length=L.max_description_chars),
        AfterValidator(check_text),
        AfterValidator(_not_blank),
    ]
    context: TaskContext = Field(default_factory=TaskContext)
    task_type: Label = "general"
    agent_id: Label | None = None
    status: EpisodeStatus = "active"
    steps: Annotated[list[ExecutionStep], Field(max_length=L.max_steps_per_episode)] = Field(
        default_factory=list
    )
    outcome: TaskOutcome | None = None
    reward: RewardScore | None = None
    reflection: Reflection | None = None
    started_at: Timestamp = Field(default_factory=utc_now)
    completed_at: Timestamp | None = None
    metadata: JsonObject = Field(default_factory=dict)
    pattern_ids: list[Annotated[str, AfterValidator(check_text)]] = Field(default_factory=list)
    revision: int = Field(default=0, ge=0)  # bumped by the writer on every header write

    @field_validator("steps")
    @classmethod
    def _steps_numbered_uniquely(cls, steps: list[ExecutionStep]) -> list[ExecutionStep]:
        numbers = [s.step_number for s in steps if s.step_number is not None]
        if len(numbers) != len(set(numbers)):
            raise ValueError("has duplicate step_number values; number steps uniquely")
        return steps

    @model_validator(mode="after")
    def _completed_has_outcome(self) -> Episode:
        if self.status == "completed" and self.outcome is None:
            raise ValueError("a completed episode needs an outcome")
        return self

    @property
    def verdict(self) -> Verdict | None:
        return self.outcome.verdict if self.outcome else None

    @property
    def tools(self) -> list[str]:
        """Tools in step order (repeats kept)."""
        return [s.tool for s in self.steps]

    def summary_json(self) -> dict[str, JsonValue]:
        """A small view for listings: no steps."""
        return {
            "episode_id": self.episode_id,
            "task_description": self.task_description,
            "task_type": self.task_type,
            "domain": self.context.domain,
            "status": self.status,
            "verdict": self.verdict,
            "reward": self.reward.total if self.reward else None,
            "steps": len(self.steps),
            "started_at": self.started_at.isoformat(),
        }
