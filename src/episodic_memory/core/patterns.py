"""Learned records: the four pattern kinds (one discriminated union) and heuristics.

A pattern's identity is its canonical ``key`` (kind + domain + what it describes), so a new
occurrence merges into the existing record instead of duplicating it. Statistics are running
sums, so merging is associative and re-deriving from stored episodes gives the same answer.
``confidence`` is a bounded score in [0, 1] maintained by ``core.learning``.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Annotated, Any, Literal

import pydantic
from pydantic import Field, TypeAdapter, field_validator

from episodic_memory.core.base import SCHEMA_VERSION, Record, check_text, utc_now
from episodic_memory.validation import translate_validation_error

__all__ = [
    "ContextPattern",
    "DecisionPoint",
    "ErrorRecovery",
    "Heuristic",
    "Pattern",
    "PatternKind",
    "ToolSequence",
    "parse_pattern",
    "stable_id",
]

PatternKind = Literal["tool_sequence", "decision_point", "error_recovery", "context_pattern"]

MAX_EVIDENCE_IDS = 50
"""Supporting episode ids kept per record (most recent); counts keep the full total."""


def stable_id(*parts: str) -> str:
    """Deterministic id from a canonical key: the same key always maps to the same record."""
    digest = hashlib.blake2b("\x1f".join(parts).encode("utf-8"), digest_size=12)
    return digest.hexdigest()


def _clean_texts(value: Any) -> Any:
    """Every string inside ``value`` (lists and dict keys/values too) passes ``check_text``."""
    if isinstance(value, str):
        check_text(value)
    elif isinstance(value, list):
        for item in value:
            _clean_texts(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            _clean_texts(key)
            _clean_texts(item)
    return value


class _PatternBase(Record):
    schema_version: int = SCHEMA_VERSION
    pattern_id: str
    key: str
    domain: str = "general"
    task_type: str | None = None
    occurrences: int = Field(default=0, ge=0)
    successes: int = Field(default=0, ge=0)
    total_latency_ms: float = Field(default=0.0, ge=0.0)
    total_tokens: int = Field(default=0, ge=0)
    confidence: float = Field(default=0.0, ge=0.0, le=1.0)
    episode_ids: list[str] = Field(default_factory=list)
    first_seen: datetime = Field(default_factory=utc_now)
    last_seen: datetime = Field(default_factory=utc_now)
    # Exponentially decayed counts, referenced to ``last_seen`` (core.learning keeps them);
    # 0.0 in older shapes, which the merger rebuilds from the raw counts.
    weighted_occurrences: float = Field(default=0.0, ge=0.0)
    weighted_successes: float = Field(default=0.0, ge=0.0)

    @field_validator("*")
    @classmethod
    def reject_nul_and_surrogates(cls, value: Any) -> Any:
        return _clean_texts(value)

    @property
    def success_rate(self) -> float:
        return self.successes / self.occurrences if self.occurrences else 0.0

    @property
    def avg_latency_ms(self) -> float:
        return self.total_latency_ms / self.occurrences if self.occurrences else 0.0

    @property
    def avg_tokens(self) -> float:
        return self.total_tokens / self.occurrences if self.occurrences else 0.0


class ToolSequence(_PatternBase):
    """The ordered tools of an episode, consecutive repeats collapsed."""

    kind: Literal["tool_sequence"] = "tool_sequence"
    tools: list[str]


class DecisionPoint(_PatternBase):
    """After ``after_tools`` the episode chose ``chosen_tool``; counts say how that went."""

    kind: Literal["decision_point"] = "decision_point"
    after_tools: list[str]
    chosen_tool: str


class ErrorRecovery(_PatternBase):
    """``failed_tool`` failed with ``error_signature``; ``recovery_tools`` made it succeed."""

    kind: Literal["error_recovery"] = "error_recovery"
    failed_tool: str
    error_signature: str
    recovery_tools: list[str]


class ContextPattern(_PatternBase):
    """Context features (domain, language, tags) → the tools that worked there."""

    kind: Literal["context_pattern"] = "context_pattern"
    features: dict[str, str]
    tools: list[str]


Pattern = Annotated[
    ToolSequence | DecisionPoint | ErrorRecovery | ContextPattern,
    Field(discriminator="kind"),
]
_PATTERN: TypeAdapter[Pattern] = TypeAdapter(Pattern)


def parse_pattern(data: str | bytes | dict[str, Any]) -> Pattern:
    """A pattern of any kind from JSON text or a dict; raises our ``ValidationError``."""
    try:
        if isinstance(data, dict):
            return _PATTERN.validate_python(data)
        return _PATTERN.validate_json(data)
    except pydantic.ValidationError as exc:
        raise translate_validation_error(exc, "Pattern") from None


class Heuristic(Record):
    """A condition → action rule learned across episodes, with its evidence."""

    schema_version: int = SCHEMA_VERSION
    heuristic_id: str
    condition: str
    action: str
    domain: str = "general"
    trigger: Literal["task_start", "after_tool", "after_error", "context"] = "task_start"
    tool: str | None = None
    confidence: float = Field(default=0.0, ge=0.0, le=1.0)
    evidence_count: int = Field(default=0, ge=0)
    success_count: int = Field(default=0, ge=0)
    episode_ids: list[str] = Field(default_factory=list)
    created_at: datetime = Field(default_factory=utc_now)
    updated_at: datetime = Field(default_factory=utc_now)
    # Time of the newest evidence and decayed counts referenced to it (see core.learning);
    # absent in older shapes, which the merger rebuilds from the raw counts.
    last_evidence_at: datetime | None = None
    weighted_evidence: float = Field(default=0.0, ge=0.0)
    weighted_successes: float = Field(default=0.0, ge=0.0)

    @field_validator("*")
    @classmethod
    def reject_nul_and_surrogates(cls, value: Any) -> Any:
        return _clean_texts(value)
