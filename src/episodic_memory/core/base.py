"""The one pydantic base every record shares, and the translation of its errors.

Models raise our ``ValidationError`` (naming the field and the fix) instead of pydantic's,
whether built with ``Model(...)``, ``model_validate`` or ``model_validate_json``, so callers
catch one error tree. Text fields reject NUL and lone surrogates: both break storage (SQLite
truncates at NUL; UTF-8 cannot encode a surrogate) and neither is ever meaningful agent output.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated

import orjson
from pydantic import AfterValidator, ConfigDict, JsonValue

from episodic_memory.config import DEFAULT_LIMITS
from episodic_memory.validation import ValidatedModel, translate_validation_error

__all__ = [
    "SCHEMA_VERSION",
    "JsonObject",
    "Record",
    "check_json_object",
    "check_text",
    "translate_validation_error",
    "utc_now",
]

SCHEMA_VERSION = 1
"""Version of the stored JSON shapes. Bump only with a migration; old shapes must still load."""


class Record(ValidatedModel):
    """Base of every model: strict about unknown fields, finite numbers, our errors."""

    model_config = ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
        validate_assignment=True,
        populate_by_name=True,
    )


def utc_now() -> datetime:
    return datetime.now(UTC)


def check_text(value: str) -> str:
    """Reject NUL and lone surrogates; everything else (newlines, emoji, any script) is kept."""
    if "\x00" in value:
        raise ValueError("contains a NUL character; remove it")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("is not valid unicode (lone surrogate); send UTF-8 text") from None
    return value


def _depth(value: JsonValue, level: int = 0) -> int:
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level + 1)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level + 1)
    return level


def _check_json_leaf_text(value: JsonValue) -> None:
    if isinstance(value, str):
        check_text(value)
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError("contains NaN or infinity; use finite numbers")
    elif isinstance(value, dict):
        for key, item in value.items():
            check_text(key)
            _check_json_leaf_text(item)
    elif isinstance(value, list):
        for item in value:
            _check_json_leaf_text(item)


def check_json_object(value: dict[str, JsonValue]) -> dict[str, JsonValue]:
    """Bound nesting depth and serialized size of free-form parameters/metadata."""
    if _depth(value) > DEFAULT_LIMITS.max_json_depth:
        raise ValueError(
            f"is nested deeper than {DEFAULT_LIMITS.max_json_depth} levels; flatten it"
        )
    _check_json_leaf_text(value)
    try:
        size = len(orjson.dumps(value))
    except (TypeError, orjson.JSONEncodeError):  # e.g. an integer beyond 64 bits
        raise ValueError("is not JSON-serializable (integers must fit in 64 bits)") from None
    if size > DEFAULT_LIMITS.max_json_bytes:
        raise ValueError(
            f"is {size} bytes serialized; keep it under {DEFAULT_LIMITS.max_json_bytes} bytes"
        )
    return value


JsonObject = Annotated[dict[str, JsonValue], AfterValidator(check_json_object)]
