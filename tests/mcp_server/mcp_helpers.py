"""Helpers for driving the MCP server as a host runs it: a subprocess, the SDK's own client."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from mcp import Client, StdioServerParameters
from mcp_types import CallToolResult

from episodic_memory.mcp_tools import ERROR_META_KEY

START_TIMEOUT_S = 90.0
CALL_TIMEOUT_S = 60.0

Connect = Callable[..., Awaitable[Client]]
"""Opens an SDK client to a server (stdio parameters or an HTTP URL) for one test."""


def server_env(data_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "EPISODIC_MEMORY_DATA_DIR": str(data_dir),
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    }


def stdio_params(data_dir: Path, *flags: str) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "episodic_memory.mcp_server", "--backend", "in_process", *flags],
        env=server_env(data_dir),
        cwd=data_dir,
    )


def error_of(result: CallToolResult) -> dict[str, Any]:
    """The typed error a tool call came back with (and its text is our message, not a trace)."""
    assert result.is_error, f"expected a tool error, got {result.structured_content}"
    text = result.content[0].text  # type: ignore[union-attr]
    assert "Traceback" not in text
    assert result.meta is not None
    details: dict[str, Any] = result.meta[ERROR_META_KEY]
    assert text == f"{details['type']}: {details['message']}"
    return details


def ok(result: CallToolResult) -> dict[str, Any]:
    """The structured result of a successful tool call."""
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
