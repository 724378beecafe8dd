"""Shapes of the MCP tools: input schemas from our records, with texts an LLM can follow, and
the tools' structured results.

The bounds, types and required fields come from ``core/models.py`` (one source of truth); the
descriptions live here, because they are written for a model calling a tool rather than for a
Python caller. Parameters that carry a record are typed as plain JSON objects for the SDK and
shown with the record's schema (``Annotated[dict[str, Any], record_schema(...)]``): the memory
API is then the one validator (and sanitizer) of their contents, exactly as for Python callers,
and its errors name the field and the fix.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel, JsonValue, WithJsonSchema

from episodic_memory.core.base import Record
from episodic_memory.core.context import RetrievedContext, SuggestedTool
from episodic_memory.core.models import Episode, ExecutionStep, TaskContext, TaskOutcome

__all__ = [
    "FIELD_DESCRIPTIONS",
    "MODEL_DESCRIPTIONS",
    "EpisodeListing",
    "EpisodeStarted",
    "EpisodeView",
    "RetrievalResult",
    "StepsLogged",
    "ToolSuggestions",
    "described_schema",
    "record_list_schema",
    "record_schema",
]

MODEL_DESCRIPTIONS: dict[type[BaseModel], str] = {
    TaskContext: (
        "Where the task happens. Retrieval ranks past episodes with a matching domain, "
        "language, framework and tags higher. Every field is optional."
    ),
    ExecutionStep: (
        "One tool call the agent made while working on the task. Only 'tool' is required; "
        "log what actually happened, including failed calls."
    ),
    TaskOutcome: (
        "How the task ended. Only 'verdict' is required; add 'reason' for failure or "
        "abstained, 'completed'/'failed' for partial."
    ),
}

FIELD_DESCRIPTIONS: dict[type[BaseModel], dict[str, str]] = {
    TaskContext: {
        "language": "Programming language of the task, e.g. 'python'. Omit when there is none.",
        "domain": "Area of work, e.g. 'web', 'data', 'devops'. Defaults to 'general'.",
        "tags": "Short free-form labels, e.g. ['auth', 'flaky-test'].",
        "framework": "Main framework or library involved, e.g. 'django'.",
        "complexity": "How hard the task is: 'simple', 'moderate' (default) or 'complex'.",
        "task_type": (
            "Kind of task, e.g. 'debugging', 'refactoring', 'testing'. Derived from the "
            "description when omitted."
        ),
    },
    ExecutionStep: {
        "step_number": (
            "Position of the step in the episode, from 1. Omit it: steps are numbered in the "
            "order they arrive. Re-sending a numbered step is harmless."
        ),
        "tool": "Name of the tool or command that was called, e.g. 'run_tests' or 'read_file'.",
        "action": "What the call did, in one line, e.g. 'ran tests/test_login.py'.",
        "parameters": (
            "Arguments passed to the tool, as a JSON object. Secrets (API keys, tokens, "
            "passwords) are redacted before anything is stored."
        ),
        "latency_ms": "How long the call took, in milliseconds (0 when unknown).",
        "tokens": "Tokens the call consumed (0 when unknown).",
        "success": "Whether the call did what it was meant to do (default true).",
        "observation": (
            "What came back: the key lines of the output or result. Secrets are redacted "
            "before storage."
        ),
        "error": "The error message, when the call failed.",
        "timestamp": "When the call happened, ISO-8601. Defaults to the time it is logged.",
        "metadata": "Any other facts worth keeping about the call, as a JSON object.",
    },
    TaskOutcome: {
        "verdict": (
            "'success' (the task is done), 'partial' (some goals met), 'failure' (not done) "
            "or 'abstained' (deliberately not attempted)."
        ),
        "summary": "One or two sentences on the result.",
        "completed": "For 'partial': the goals that were met.",
        "failed": "For 'partial': the goals that were not met.",
        "reason": "For 'failure' or 'abstained': why, in one sentence.",
        "artifacts": "Files, URLs or ids the task produced, e.g. ['src/login.py'].",
    },
}


def _inline_refs(node: Any, defs: dict[str, Any]) -> Any:
    """Replace local ``$ref``s by their definitions: a parameter's schema must stand alone."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline_refs(copy.deepcopy(defs[ref.removeprefix("#/$defs/")]), defs)
        return {key: _inline_refs(value, defs) for key, value in node.items() if key != "$defs"}
    if isinstance(node, list):
        return [_inline_refs(item, defs) for item in node]
    return node


def described_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The record's JSON schema, self-contained, titles dropped, our descriptions added."""
    raw = model.model_json_schema()
    schema: dict[str, Any] = _inline_refs(raw, raw.get("$defs", {}))
    schema.pop("title", None)
    schema["description"] = MODEL_DESCRIPTIONS[model]
    texts = FIELD_DESCRIPTIONS[model]
    for name, prop in schema["properties"].items():
        prop.pop("title", None)
        if name in texts:
            prop["description"] = texts[name]
    return schema


def record_schema(model: type[BaseModel], description: str) -> WithJsonSchema:
    """How a parameter that takes one record (a JSON object) is shown to the client."""
    return WithJsonSchema({**described_schema(model), "description": description})


def record_list_schema(model: type[BaseModel], description: str, max_items: int) -> WithJsonSchema:
    """How a parameter that takes a non-empty list of records is shown to the client."""
    return WithJsonSchema(
        {
            "type": "array",
            "items": described_schema(model),
            "minItems": 1,
            "maxItems": max_items,
            "description": description,
        }
    )


class EpisodeStarted(Record):
    episode_id: str


class StepsLogged(Record):
    episode_id: str
    step_numbers: list[int]


class RetrievalResult(RetrievedContext):
    """The retrieved context plus its prompt rendering (also the result's text content)."""

    prompt: str


class EpisodeView(Record):
    episode: Episode
    steps_total: int
    steps_omitted: int


class EpisodeListing(Record):
    episodes: list[dict[str, JsonValue]]


class ToolSuggestions(Record):
    query: str
    tools: list[SuggestedTool]
    explanation: str | None = None
