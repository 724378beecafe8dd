"""The MCP tools: thin calls into ``SelfLearningMemory``, per-client rate limits, typed errors.

Every tool goes through the public memory API, so MCP input gets the same bounds, validation
and secret redaction as Python callers. Failures come back as tool errors (``isError``) whose
text is ``<ErrorType>: <field>: <problem> (fix: ...)``; the same facts, machine-readable, sit
in the result's ``_meta["episodic-memory/error"]``. Anything else is a bug: the SDK logs its
traceback on the server's stderr and the client only sees that the tool failed.
"""

# No ``from __future__ import annotations``: the tool signatures carry bounds read from the
# configuration when the tools are registered, and the SDK evaluates them from the function.

import inspect
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, TypeVar

import pydantic
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp_types import CallToolResult, InputRequiredResult, TextContent, ToolAnnotations
from pydantic import Field

from episodic_memory.actors.episode_state import CompletionResult
from episodic_memory.config import MemoryConfig
from episodic_memory.core.models import ExecutionStep, TaskContext, TaskOutcome, Verdict
from episodic_memory.errors import (
    EpisodeAlreadyCompleted,
    EpisodeNotFound,
    EpisodicMemoryError,
    RateLimitExceeded,
    ServiceError,
    ValidationError,
)
from episodic_memory.mcp_limits import Bucket, ClientRateLimiter
from episodic_memory.mcp_schemas import (
    EpisodeListing,
    EpisodeStarted,
    EpisodeView,
    RetrievalResult,
    StepsLogged,
    ToolSuggestions,
    record_list_schema,
    record_schema,
)
from episodic_memory.memory import SelfLearningMemory
from episodic_memory.validation import translate_validation_error

__all__ = [
    "ERROR_META_KEY",
    "MemoryHandle",
    "MemoryMCPServer",
    "client_key",
    "error_result",
    "register_tools",
]

ERROR_META_KEY = "episodic-memory/error"

_Fn = TypeVar("_Fn", bound=Callable[..., Any])


class MemoryHandle:
    """The memory the server opened at start-up; tools find it here."""

    def __init__(self) -> None:
        self.memory: SelfLearningMemory | None = None

    def get(self) -> SelfLearningMemory:
        if self.memory is None:
            raise ServiceError("the memory is not open: the MCP server is starting or stopping")
        return self.memory


def error_result(error: EpisodicMemoryError) -> CallToolResult:
    """Our typed error as an MCP tool error: the message for the model, the facts in _meta."""
    details: dict[str, Any] = {"type": type(error).__name__, "message": str(error)}
    if isinstance(error, ValidationError):
        details.update(field=error.field, problem=error.problem, fix=error.fix)
    elif isinstance(error, EpisodeNotFound | EpisodeAlreadyCompleted):
        details["episode_id"] = error.episode_id
    elif isinstance(error, RateLimitExceeded):
        details["retry_after_s"] = round(error.retry_after_s, 3)
    return CallToolResult(
        content=[TextContent(type="text", text=f"{type(error).__name__}: {error}")],
        is_error=True,
        _meta={ERROR_META_KEY: details},
    )


def _ours(exc: ToolError) -> EpisodicMemoryError | None:
    """The typed error behind an SDK tool error, if the failure was the caller's input or ours."""
    cause = exc.__cause__
    if isinstance(cause, EpisodicMemoryError):
        return cause
    if not isinstance(exc, UnexpectedToolError) and isinstance(cause, pydantic.ValidationError):
        # The SDK checked the arguments against the tool's signature before calling it.
        translated = translate_validation_error(cause, "arguments")
        field = translated.field.removeprefix("arguments.")
        return ValidationError(field, translated.problem, translated.fix)
    return None


class MemoryMCPServer(MCPServer[Any]):
    """``MCPServer`` whose tool failures carry our typed errors instead of the SDK's texts."""

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[Any, Any] | None = None
    ) -> CallToolResult | InputRequiredResult:
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            ours = _ours(exc)
            if ours is None:
                raise
            return error_result(ours)


def client_key(ctx: Context[Any, Any]) -> str:
    """Who is calling, for rate limits: the HTTP session, else the peer address, else stdio."""
    headers = ctx.headers
    if headers and (session := headers.get("mcp-session-id")):
        return f"session:{session}"
    client = getattr(ctx.request_context.request, "client", None)
    host = getattr(client, "host", None)
    return f"address:{host}" if host else "stdio"


def _without(summary: dict[str, Any], key: str) -> dict[str, Any]:
    return {name: value for name, value in summary.items() if name != key}


_WRITE = ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=False)
_READ = ToolAnnotations(read_only_hint=True, open_world_hint=False)


def register_tools(
    server: MCPServer[Any],
    config: MemoryConfig,
    handle: MemoryHandle,
    limiter: ClientRateLimiter | None,
) -> None:
    """Add the memory's tools to ``server``; input bounds in the schemas come from ``config``."""
    limits = config.limits

    def admit(ctx: Context[Any, Any], bucket: Bucket, cost: int = 1) -> SelfLearningMemory:
        if limiter is not None:
            limiter.admit(client_key(ctx), bucket, cost)
        return handle.get()

    def tool(annotations: ToolAnnotations) -> Callable[[_Fn], _Fn]:
        """Register with the docstring dedented: it is the description the model reads."""

        def register(fn: _Fn) -> _Fn:
            description = inspect.cleandoc(fn.__doc__ or "")
            server.add_tool(
                fn, description=description, annotations=annotations, structured_output=True
            )
            return fn

        return register

    task = Field(
        min_length=1,
        max_length=limits.max_description_chars,
        description="The task in plain words, e.g. 'fix the failing login test in auth/'.",
    )
    episode_ref = Field(min_length=1, max_length=200, description="The id start_episode returned.")
    where = record_schema(TaskContext, "Where the task happens (optional; improves matching).")
    step_schema = record_schema(ExecutionStep, "The tool call to record.")
    steps_schema = record_list_schema(
        ExecutionStep, "The tool calls to record, in the order made.", limits.max_steps_per_call
    )
    outcome_schema = record_schema(TaskOutcome, "How the task ended.")
    top_k = Field(
        ge=1, le=limits.max_retrieve_limit, description="How many past episodes to use, best first."
    )

    @tool(_WRITE)
    async def start_episode(
        ctx: Context[Any, Any],
        description: Annotated[str, task],
        context: Annotated[dict[str, Any] | None, where] = None,
        agent_id: Annotated[
            str | None,
            Field(max_length=limits.max_label_chars, description="Who is working (optional)."),
        ] = None,
    ) -> EpisodeStarted:
        """Start recording a task you are about to work on. Returns the episode_id to pass to
        log_steps and complete_episode. Call retrieve_relevant_context first to learn from
        similar past tasks."""
        memory = admit(ctx, "episodes")
        episode_id = await memory.start_episode(description, context, agent_id=agent_id)
        return EpisodeStarted(episode_id=episode_id)

    @tool(_WRITE)
    async def log_step(
        ctx: Context[Any, Any],
        episode_id: Annotated[str, episode_ref],
        step: Annotated[dict[str, Any], step_schema],
    ) -> StepsLogged:
        """Record one tool call you made in an active episode. Prefer log_steps to record
        several calls at once."""
        memory = admit(ctx, "steps")
        numbers = await memory.log_steps(episode_id, [step])
        return StepsLogged(episode_id=episode_id, step_numbers=numbers)

    @tool(_WRITE)
    async def log_steps(
        ctx: Context[Any, Any],
        episode_id: Annotated[str, episode_ref],
        steps: Annotated[list[dict[str, Any]], steps_schema],
    ) -> StepsLogged:
        """Record the tool calls you made in an active episode, in order, in one call.
        Returns their step numbers."""
        memory = admit(ctx, "steps", max(len(steps), 1))
        numbers = await memory.log_steps(episode_id, steps)
        return StepsLogged(episode_id=episode_id, step_numbers=numbers)

    @tool(_WRITE)
    async def complete_episode(
        ctx: Context[Any, Any],
        episode_id: Annotated[str, episode_ref],
        outcome: Annotated[dict[str, Any], outcome_schema],
    ) -> CompletionResult:
        """Finish an episode with its outcome. The memory scores it (reward), reflects on it
        and learns patterns from it; it is retrievable as soon as this returns. No more steps
        can be logged afterwards."""
        memory = admit(ctx, "episodes")
        return await memory.complete_episode(episode_id, outcome)

    @tool(_READ)
    async def retrieve_relevant_context(
        ctx: Context[Any, Any],
        description: Annotated[str, task],
        context: Annotated[dict[str, Any] | None, where] = None,
        limit: Annotated[int, top_k] = 5,
        max_tokens: Annotated[
            int, Field(ge=50, le=8_000, description="Budget for the text briefing, in tokens.")
        ] = 800,
    ) -> Annotated[CallToolResult, RetrievalResult]:
        """Before starting a task: what worked (and failed) on similar past tasks, the rules
        and patterns learned from them, and which tools to call in what order. The text is a
        briefing to read; the structured result has every score."""
        memory = admit(ctx, "episodes")
        found = await memory.retrieve_relevant_context(description, context, limit)
        prompt = found.to_prompt(max_tokens=max_tokens)
        result = RetrievalResult(**dict(found), prompt=prompt)
        return CallToolResult(
            content=[TextContent(type="text", text=prompt)],
            structured_content=result.model_dump(mode="json"),
        )

    @tool(_READ)
    async def suggest_tools(
        ctx: Context[Any, Any],
        description: Annotated[str, task],
        context: Annotated[dict[str, Any] | None, where] = None,
        limit: Annotated[
            int, Field(ge=1, le=50, description="How many tools to suggest at most.")
        ] = 5,
    ) -> ToolSuggestions:
        """Which tools to call for a task, in suggested order, with a confidence each, learned
        from past episodes."""
        memory = admit(ctx, "episodes")
        found = await memory.retrieve_relevant_context(description, context)
        return ToolSuggestions(
            query=description, tools=found.suggested_tools[:limit], explanation=found.explanation
        )

    @tool(_READ)
    async def get_episode(
        ctx: Context[Any, Any],
        episode_id: Annotated[str, episode_ref],
        max_steps: Annotated[
            int,
            Field(
                ge=0,
                le=limits.max_steps_per_episode,
                description="Return at most this many steps, the most recent ones.",
            ),
        ] = 100,
    ) -> EpisodeView:
        """One episode: task, context, steps, outcome, reward and reflection. Works for active
        episodes too."""
        memory = admit(ctx, "episodes")
        episode = await memory.get_episode(episode_id)
        total = len(episode.steps)
        kept = episode.steps[total - max_steps :] if max_steps < total else episode.steps
        return EpisodeView(
            episode=episode.model_copy(update={"steps": kept}),
            steps_total=total,
            steps_omitted=total - len(kept),
        )

    @tool(_READ)
    async def list_episodes(
        ctx: Context[Any, Any],
        domain: Annotated[
            str | None, Field(max_length=limits.max_label_chars, description="Only this domain.")
        ] = None,
        task_type: Annotated[
            str | None,
            Field(max_length=limits.max_label_chars, description="Only this kind of task."),
        ] = None,
        verdict: Annotated[Verdict | None, Field(description="Only this outcome.")] = None,
        since: Annotated[
            datetime | None, Field(description="Only episodes started at or after (ISO-8601).")
        ] = None,
        until: Annotated[
            datetime | None, Field(description="Only episodes started before (ISO-8601).")
        ] = None,
        limit: Annotated[int, Field(ge=1, le=1_000, description="At most this many.")] = 20,
    ) -> EpisodeListing:
        """Recorded episodes, newest first, as short summaries (no steps)."""
        memory = admit(ctx, "episodes")
        found = await memory.list_episodes(
            domain=domain,
            task_type=task_type,
            verdict=verdict,
            since=since,
            until=until,
            limit=limit,
        )
        # Listed headers carry no steps, so summary_json's step count would always read 0.
        summaries = [episode.summary_json() for episode in found]
        return EpisodeListing(episodes=[_without(summary, "steps") for summary in summaries])
