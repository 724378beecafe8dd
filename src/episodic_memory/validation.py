"""Translation of pydantic's validation errors into ours: the field path, the problem, a fix.

Shared by the records (``core.base.Record``) and the configuration models, so every rejected
input, wherever it enters, raises ``errors.ValidationError`` naming the field.
"""

from __future__ import annotations

from typing import Any, Self

import pydantic
from pydantic import BaseModel

from episodic_memory.errors import ValidationError

__all__ = ["ValidatedModel", "translate_validation_error"]

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


class ValidatedModel(BaseModel):
    """A pydantic model whose every way in raises our ``ValidationError``.

    pydantic calls a custom ``__init__`` during ``model_validate`` too; nested models translate
    first and the outer model extends the field path (see ``translate_validation_error``).
    """

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except pydantic.ValidationError as exc:
            raise translate_validation_error(exc, type(self).__name__) from None

    def __setattr__(self, name: str, value: Any) -> None:
        """Assignment (validated where ``validate_assignment`` is on) raises ours too."""
        try:
            super().__setattr__(name, value)
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
