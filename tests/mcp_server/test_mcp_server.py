"""The MCP server end to end, through the SDK's client, as an MCP host would use it."""

from __future__ import annotations

import asyncio
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp_helpers import (
    START_TIMEOUT_S,
    Connect,
    error_of,
    free_port,
    ok,
    server_env,
    stdio_params,
)

from episodic_memory.core.models import ExecutionStep, TaskContext, TaskOutcome
from episodic_memory.mcp_schemas import FIELD_DESCRIPTIONS
from episodic_memory.mcp_server import main

TOOLS = {
    "start_episode",
    "log_step",
    "log_steps",
    "complete_episode",
    "retrieve_relevant_context",
    "get_episode",
    "list_episodes",
    "suggest_tools",
}
FIX = [
    {"tool": "read_file", "action": "read tests/test_login.py", "latency_ms": 12.5},
    {"tool": "run_tests", "success": False, "error": "AssertionError: expected 200"},
    {"tool": "edit_file", "parameters": {"path": "auth/login.py"}},
    {"tool": "run_tests", "observation": "3 passed"},
]
GITHUB_TOKEN = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def start(client: Client, description: str, **context: Any) -> str:
    result = ok(
        await client.call_tool("start_episode", {"description": description, "context": context})
    )
    episode_id: str = result["episode_id"]
    return episode_id


async def record(client: Client, description: str, domain: str, verdict: str = "success") -> str:
    episode_id = await start(client, description, domain=domain, language="python")
    ok(await client.call_tool("log_steps", {"episode_id": episode_id, "steps": FIX}))
    outcome = {"verdict": verdict, "reason": None if verdict == "success" else "gave up"}
    ok(await client.call_tool("complete_episode", {"episode_id": episode_id, "outcome": outcome}))
    return episode_id


def undescribed(schema: dict[str, Any], path: str = "") -> list[str]:
    """Paths of properties (at any depth) an LLM would see without a description."""
    missing = []
    for name, prop in schema.get("properties", {}).items():
        here = f"{path}.{name}".lstrip(".")
        if not prop.get("description", "").strip():
            missing.append(here)
        missing += undescribed(prop, here)
        missing += undescribed(prop.get("items", {}), f"{here}[]")
    return missing


def test_every_field_of_the_records_has_a_description_for_llms() -> None:
    for model in (TaskContext, ExecutionStep, TaskOutcome):
        assert set(FIELD_DESCRIPTIONS[model]) == set(model.model_fields), model.__name__


async def test_every_tool_is_listed_with_a_described_input_schema(mcp_client: Client) -> None:
    tools = {tool.name: tool for tool in (await mcp_client.list_tools()).tools}
    assert set(tools) == TOOLS
    for tool in tools.values():
        assert tool.description is not None, tool.name
        assert tool.description.strip(), tool.name
        assert not any(line.startswith(" ") for line in tool.description.splitlines()), tool.name
        assert undescribed(tool.input_schema) == [], tool.name
        assert "$ref" not in str(tool.input_schema), tool.name
    steps = tools["log_steps"].input_schema["properties"]["steps"]
    assert tools["log_steps"].input_schema["required"] == ["episode_id", "steps"]
    assert steps["items"]["required"] == ["tool"]
    assert steps["items"]["properties"]["latency_ms"]["minimum"] == 0
    assert tools["start_episode"].input_schema["required"] == ["description"]
    outcome = tools["complete_episode"].input_schema["properties"]["outcome"]
    assert outcome["properties"]["verdict"]["enum"] == [
        "success",
        "partial",
        "failure",
        "abstained",
    ]
    assert tools["retrieve_relevant_context"].annotations.read_only_hint is True  # type: ignore[union-attr]


async def test_a_whole_episode_is_recorded_scored_and_retrieved(mcp_client: Client) -> None:
    domain = unique("web")
    episode_id = await start(mcp_client, "fix the failing login test", domain=domain)

    logged = ok(await mcp_client.call_tool("log_steps", {"episode_id": episode_id, "steps": FIX}))
    assert logged["step_numbers"] == [1, 2, 3, 4]
    done = ok(
        await mcp_client.call_tool(
            "complete_episode",
            {"episode_id": episode_id, "outcome": {"verdict": "success", "summary": "green"}},
        )
    )
    assert done["verdict"] == "success"
    assert done["steps"] == 4
    assert 0 < done["reward"]["total"] <= 1
    assert done["already_completed"] is False

    found = await mcp_client.call_tool(
        "retrieve_relevant_context",
        {"description": "fix the failing signup test", "context": {"domain": domain}, "limit": 3},
    )
    context = ok(found)
    assert context["episodes"][0]["episode_id"] == episode_id
    assert context["episodes"][0]["breakdown"]["total"] > 0
    prompt = found.content[0].text  # type: ignore[union-attr]
    assert prompt == context["prompt"]
    assert "fix the failing login test" in prompt
    assert "read_file" in prompt


async def test_completing_again_with_the_same_outcome_returns_the_first_result(
    mcp_client: Client,
) -> None:
    episode_id = await start(mcp_client, "rotate the staging certificates")
    args = {"episode_id": episode_id, "outcome": {"verdict": "failure", "reason": "no access"}}
    first = ok(await mcp_client.call_tool("complete_episode", args))
    again = ok(await mcp_client.call_tool("complete_episode", args))
    assert again["already_completed"] is True
    assert again["reward"] == first["reward"]


async def test_log_step_appends_one_step_after_the_earlier_ones(mcp_client: Client) -> None:
    episode_id = await start(mcp_client, "profile the slow report query")
    ok(await mcp_client.call_tool("log_steps", {"episode_id": episode_id, "steps": FIX[:2]}))
    one = ok(
        await mcp_client.call_tool(
            "log_step", {"episode_id": episode_id, "step": {"tool": "explain_query"}}
        )
    )
    assert one["step_numbers"] == [3]


async def test_suggest_tools_proposes_the_tools_that_worked_on_similar_tasks(
    mcp_client: Client,
) -> None:
    domain = unique("payments")
    for n in range(3):
        await record(mcp_client, f"fix the failing refund test {n}", domain)
    suggested = ok(
        await mcp_client.call_tool(
            "suggest_tools",
            {"description": "fix the failing invoice test", "context": {"domain": domain}},
        )
    )
    tools = [tool["tool"] for tool in suggested["tools"]]
    assert tools
    assert set(tools) <= {"read_file", "run_tests", "edit_file"}
    assert all(0 <= tool["confidence"] <= 1 for tool in suggested["tools"])
    assert (
        len(
            ok(await mcp_client.call_tool("suggest_tools", {"description": "x", "limit": 1}))[
                "tools"
            ]
        )
        <= 1
    )


async def test_get_episode_returns_its_steps_with_secrets_redacted(mcp_client: Client) -> None:
    episode_id = await start(mcp_client, f"deploy with token {GITHUB_TOKEN}")
    step = {
        "tool": "http_get",
        "parameters": {"headers": {"Authorization": f"token {GITHUB_TOKEN}"}},
        "observation": f"used {GITHUB_TOKEN}",
    }
    ok(await mcp_client.call_tool("log_step", {"episode_id": episode_id, "step": step}))
    view = await mcp_client.call_tool("get_episode", {"episode_id": episode_id})
    episode = ok(view)["episode"]
    assert episode["status"] == "active"
    assert [s["tool"] for s in episode["steps"]] == ["http_get"]
    assert GITHUB_TOKEN not in str(view.structured_content)
    assert GITHUB_TOKEN not in view.content[0].text  # type: ignore[union-attr]
    assert "[REDACTED:" in episode["steps"][0]["observation"]
    assert "[REDACTED:" in episode["task_description"]


async def test_get_episode_keeps_only_the_most_recent_steps_when_asked(mcp_client: Client) -> None:
    episode_id = await record(mcp_client, "tidy the import order", unique("lint"))
    view = ok(await mcp_client.call_tool("get_episode", {"episode_id": episode_id, "max_steps": 1}))
    assert [s["step_number"] for s in view["episode"]["steps"]] == [4]
    assert (view["steps_total"], view["steps_omitted"]) == (4, 3)
    assert view["episode"]["outcome"]["verdict"] == "success"


async def test_list_episodes_filters_by_domain_and_verdict_newest_first(mcp_client: Client) -> None:
    domain = unique("data")
    first = await record(mcp_client, "repair the nightly ETL job", domain)
    failed = await record(mcp_client, "backfill the orders table", domain, verdict="failure")
    await record(mcp_client, "repair the ETL job elsewhere", unique("other"))

    listed = ok(await mcp_client.call_tool("list_episodes", {"domain": domain}))["episodes"]
    assert [e["episode_id"] for e in listed] == [failed, first]
    assert {e["verdict"] for e in listed} == {"success", "failure"}
    assert all("steps" not in e for e in listed)  # headers only: no misleading step count
    failures = ok(
        await mcp_client.call_tool("list_episodes", {"domain": domain, "verdict": "failure"})
    )
    assert [e["episode_id"] for e in failures["episodes"]] == [failed]


async def test_an_unknown_episode_id_is_a_tool_error_naming_the_episode(
    mcp_client: Client,
) -> None:
    calls = {
        "get_episode": {},
        "log_steps": {"steps": FIX},
        "log_step": {"step": {"tool": "x"}},
        "complete_episode": {"outcome": {"verdict": "success"}},
    }
    for tool, args in calls.items():
        error = error_of(
            await mcp_client.call_tool(tool, {"episode_id": "no-such-episode", **args})
        )
        assert error["type"] == "EpisodeNotFound", tool
        assert error["episode_id"] == "no-such-episode"
        assert "start_episode" in error["message"]


async def test_a_bad_step_value_is_refused_naming_the_field_and_nothing_is_written(
    mcp_client: Client,
) -> None:
    episode_id = await start(mcp_client, "bump the parser dependency")
    bad = [{"tool": "pip"}, {"tool": "pytest", "latency_ms": -5}]
    error = error_of(
        await mcp_client.call_tool("log_steps", {"episode_id": episode_id, "steps": bad})
    )
    assert error["type"] == "ValidationError"
    assert error["field"] == "steps.1.latency_ms"
    assert error["fix"]
    for steps, field in (
        ([{"action": "no tool"}], "steps.0.tool"),
        ([{"tool": "pytest", "colour": "red"}], "steps.0.colour"),
        ([{"tool": "pytest", "tokens": "many"}], "steps.0.tokens"),
    ):
        error = error_of(
            await mcp_client.call_tool("log_steps", {"episode_id": episode_id, "steps": steps})
        )
        assert error["field"] == field
    view = ok(await mcp_client.call_tool("get_episode", {"episode_id": episode_id}))
    assert view["episode"]["steps"] == []


async def test_missing_or_mistyped_arguments_are_refused_naming_the_argument(
    mcp_client: Client,
) -> None:
    cases = [
        ("get_episode", {}, "episode_id"),
        ("start_episode", {"description": ""}, "description"),
        ("start_episode", {"description": "x", "context": {"domain": ""}}, "context.domain"),
        ("retrieve_relevant_context", {"description": "x", "limit": 0}, "limit"),
        ("list_episodes", {"verdict": "great"}, "verdict"),
        ("log_steps", {"episode_id": "e", "steps": {"tool": "x"}}, "steps"),
        ("complete_episode", {"episode_id": "e", "outcome": {"verdict": "meh"}}, "outcome.verdict"),
    ]
    for tool, args, field in cases:
        error = error_of(await mcp_client.call_tool(tool, args))
        assert (error["type"], error["field"]) == ("ValidationError", field), (tool, args)
        assert error["fix"], (tool, args)


async def test_steps_after_completion_are_refused_as_already_completed(mcp_client: Client) -> None:
    episode_id = await record(mcp_client, "rename the billing module", unique("refactor"))
    for tool, args in (
        ("log_steps", {"steps": [{"tool": "git"}]}),
        ("log_step", {"step": {"tool": "git"}}),
        ("complete_episode", {"outcome": {"verdict": "failure", "reason": "changed my mind"}}),
    ):
        error = error_of(await mcp_client.call_tool(tool, {"episode_id": episode_id, **args}))
        assert error["type"] == "EpisodeAlreadyCompleted", tool
        assert error["episode_id"] == episode_id


async def test_an_unknown_tool_is_a_tool_error(mcp_client: Client) -> None:
    result = await mcp_client.call_tool("forget_everything", {})
    assert result.is_error
    assert "forget_everything" in result.content[0].text  # type: ignore[union-attr]


async def test_the_rate_limit_refuses_with_retry_after_and_a_refused_call_costs_nothing(
    connect: Connect, tmp_path: Path
) -> None:
    limits = ["--episodes-burst", "3", "--episodes-per-s", "0.001"]
    limits += ["--steps-burst", "4", "--steps-per-s", "0.001"]
    client = await connect(stdio_params(tmp_path, *limits), mode="auto")  # the modern protocol too

    episode_id = await start(client, "drain the job queue")  # 1 of 3 episode-level calls
    ok(await client.call_tool("log_steps", {"episode_id": episode_id, "steps": FIX[:3]}))
    refused = error_of(
        await client.call_tool("log_steps", {"episode_id": episode_id, "steps": FIX[:2]})
    )
    assert refused["type"] == "RateLimitExceeded"
    assert 900 < refused["retry_after_s"] <= 1000  # one step short at 0.001 steps/s
    assert "retry after" in refused["message"]
    assert ok(await client.call_tool("log_step", {"episode_id": episode_id, "step": FIX[3]}))[
        "step_numbers"
    ] == [4]

    too_big = error_of(
        await client.call_tool("log_steps", {"episode_id": episode_id, "steps": FIX * 2})
    )
    assert (too_big["type"], too_big["field"]) == ("ValidationError", "steps")

    ok(await client.call_tool("list_episodes", {}))
    ok(await client.call_tool("get_episode", {"episode_id": episode_id}))
    error = error_of(await client.call_tool("list_episodes", {}))
    assert error["type"] == "RateLimitExceeded"
    assert error["retry_after_s"] > 0


async def test_streamable_http_serves_the_same_tools_on_loopback(
    connect: Connect, tmp_path: Path
) -> None:
    port = free_port()
    server = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "episodic_memory.mcp_server", "--backend", "in_process"),
        *("--transport", "http", "--port", str(port)),
        env=server_env(tmp_path),
        cwd=tmp_path,
    )
    try:
        await _wait_until_listening(port, server)
        client = await connect(f"http://127.0.0.1:{port}/mcp")
        assert {tool.name for tool in (await client.list_tools()).tools} == TOOLS
        episode_id = await start(client, "answer the on-call page")
        view = ok(await client.call_tool("get_episode", {"episode_id": episode_id}))
        assert view["episode"]["task_description"] == "answer the on-call page"
    finally:
        server.terminate()
        try:
            await asyncio.wait_for(server.wait(), START_TIMEOUT_S)
        except TimeoutError:
            server.kill()
            await asyncio.wait_for(server.wait(), START_TIMEOUT_S)


async def _wait_until_listening(port: int, server: asyncio.subprocess.Process) -> None:
    """Poll (bounded) until the HTTP server accepts connections on the loopback port."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + START_TIMEOUT_S
    while True:
        assert server.returncode is None, "the HTTP server exited"
        try:
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            assert loop.time() < deadline, f"nothing listened on port {port} in {START_TIMEOUT_S}s"
            await asyncio.sleep(0.1)
            continue
        writer.close()
        await writer.wait_closed()
        return


def test_a_bad_configuration_exits_with_our_message_not_a_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--backend", "in_process", "--episodes-burst", "0"]) == 2
    err = capsys.readouterr().err
    assert "ValidationError" in err
    assert "episodes_burst" in err
    assert "Traceback" not in err
