"""The one pydantic base every record shares, and the translation of its errors.

Models raise our ``ValidationError`` (naming the field and the fix) instead of pydantic's,
whether built with ``Model(...)``, ``model_validate`` or ``model_validate_json``, so callers
catch one error tree. Text fields reject NUL and lone surrogates: both break storage (SQLite
truncates at NUL; UTF-8 cannot encode a surrogate) and neither is ever meaningful agent output.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Any, Self

import orjson
import pydantic
from pydantic import AfterValidator, BaseModel, ConfigDict, JsonValue

from episodic_memory.config import DEFAULT_LIMITS
from episodic_memory.errors import ValidationError

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

_FIXES: dict[str, str] = {
    "missing": "provide this field",
    "extra_forbidden": "remove it; check its spelling against the model's fields",
    "string_too_short": "provide a non-empty value",
    "string_too_long": "shorten it to at most {max_length} characters",
    "too_long": "send at most {max_length} items",
    "too_short": "send at least {min_length} items",
    "greater_than_equal": "use a value >= {ge}",
    "greater_than": "use a value > {gt}",
    "less_than_equal": "use a value <= {le}",
    "less_than": "use a value < {lt}",
    "finite_number": "use a finite number, not NaN or infinity",
    "literal_error": "use one of {expected}",
    "int_parsing": "use a whole number",
    "int_type": "use a whole number",
    "int_from_float": "use a whole number",
    "float_parsing": "use a number",
    "float_type": "use a number",
    "bool_parsing": "use true or false",
    "bool_type": "use true or false",
    "string_type": "use a string",
    "list_type": "use a list",
    "dict_type": "use an object / dict",
    "datetime_parsing": "use an ISO-8601 timestamp",
    "datetime_type": "use an ISO-8601 timestamp or datetime",
    "json_invalid": "send valid JSON",
}


_UNION_TAGS = frozenset({"str", "int", "float", "bool", "list", "dict", "none"})


def _field_path(loc: tuple[int | str, ...]) -> list[str]:
    """The loc as strings, without pydantic's trailing union-branch tags (``x.float``)."""
    parts = [str(part) for part in loc]
    while parts and (parts[-1] in _UNION_TAGS or parts[-1].startswith("function-")):
        parts.pop()
    return parts


def translate_validation_error(exc: pydantic.ValidationError, model: str) -> ValidationError:
    """Turn pydantic's error into ours: the first problem, its field path and a fix."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    inner = (first.get("ctx") or {}).get("error")
    if isinstance(inner, ValidationError):
        # A nested model's own __init__ already translated it (pydantic calls a custom
        # __init__ during validation): keep its problem, but give the full path from here.
        outer = _field_path(first.get("loc", ()))
        inner_path = inner.field.split(".")[1:]
        return ValidationError(".".join([model, *outer, *inner_path]), inner.problem, inner.fix)
    loc = ".".join(_field_path(first.get("loc", ()))) or model
    problem = str(first.get("msg", "invalid value"))
    if problem.startswith("Value error, "):
        problem = problem[len("Value error, ") :]
    template = _FIXES.get(str(first.get("type")), "")
    ctx = first.get("ctx") or {}
    try:
        fix = template.format(**ctx)
    except (KeyError, IndexError):
        fix = template
    if len(errors) > 1:
        problem += f" (and {len(errors) - 1} more problem(s))"
    return ValidationError(f"{model}.{loc}" if loc != model else model, problem, fix)


class Record(BaseModel):
    """Base of every model: strict about unknown fields, finite numbers, our errors."""

    model_config = ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
        validate_assignment=True,
        populate_by_name=True,
    )

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except pydantic.ValidationError as exc:
            raise translate_validation_error(exc, type(self).__name__) from None

    @classmethod
    def model_validate(
        cls,
        obj: Any,
        *,
        strict: bool | None = None,
        extra: Any = None,
        from_attributes: bool | None = None,
        context: Any | None = None,
        by_alias: bool | None = None,
        by_name: bool | None = None,
    ) -> Self:
        try:
            return super().model_validate(
                obj,
                strict=strict,
                extra=extra,
                from_attributes=from_attributes,
                context=context,
                by_alias=by_alias,
                by_name=by_name,
            )
        except pydantic.ValidationError as exc:
            raise translate_validation_error(exc, cls.__name__) from None

    @classmethod
    def model_validate_json(
        cls,
        json_data: str | bytes | bytearray,
        *,
        strict: bool | None = None,
        extra: Any = None,
        context: Any | None = None,
        by_alias: bool | None = None,
        by_name: bool | None = None,
    ) -> Self:
        try:
            return super().model_validate_json(
                json_data,
                strict=strict,
                extra=extra,
                context=context,
                by_alias=by_alias,
                by_name=by_name,
            )
        except pydantic.ValidationError as exc:
            raise translate_validation_error(exc, cls.__name__) from None


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
    size = len(orjson.dumps(value))
    if size > DEFAULT_LIMITS.max_json_bytes:
        raise ValueError(
            f"is {size} bytes serialized; keep it under {DEFAULT_LIMITS.max_json_bytes} bytes"
        )
    return value


JsonObject = Annotated[dict[str, JsonValue], AfterValidator(check_json_object)]
