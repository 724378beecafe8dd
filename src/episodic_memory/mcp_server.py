"""MCP server: any MCP-capable agent (Claude Desktop, IDE agents, custom hosts) uses the memory.

::

    episodic-memory mcp                                   # stdio, Ray backend, ./.episodic-memory
    python -m episodic_memory.mcp_server --backend in_process --data-dir ~/agent-memory
    python -m episodic_memory.mcp_server --transport http --port 8765   # 127.0.0.1 only

One process opens the configured memory once, at start-up, and serves the tools in
``mcp_tools.py`` over stdio (the default: the host starts the server and owns its lifetime) or
streamable HTTP (several clients; bound to 127.0.0.1 unless told otherwise, with the SDK's DNS
rebinding protection on loopback). On stdio the memory is opened after the SDK has moved the
process's stdout away from the wire, so nothing Ray or a library prints can corrupt it.
Configuration comes from ``MemoryConfig`` (``MemoryConfig.from_env()`` in ``main``); see
``docs/mcp.md`` for host set-up.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal, get_args

from episodic_memory import __version__
from episodic_memory.backends import BackendKind
from episodic_memory.config import MemoryConfig, RateLimitConfig
from episodic_memory.errors import ConfigurationError, EpisodicMemoryError

try:
    from mcp.server.mcpserver import MCPServer
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ConfigurationError(
        "the MCP server needs the optional 'mcp' extra: pip install 'episodic-memory[mcp]'"
    ) from exc

from episodic_memory.mcp_limits import ClientRateLimiter
from episodic_memory.mcp_tools import MemoryHandle, MemoryMCPServer, register_tools
from episodic_memory.memory import SelfLearningMemory

__all__ = ["DEFAULT_HTTP_PORT", "Transport", "build_server", "main", "run_mcp_server"]

Transport = Literal["stdio", "http", "streamable-http"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
DEFAULT_HTTP_PORT = 8765
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})

log = logging.getLogger(__name__)

INSTRUCTIONS = """\
Episodic memory: learn from your own past tasks.
1. Before a task, call retrieve_relevant_context (or suggest_tools) with a plain description.
2. start_episode with that description; keep the episode_id.
3. As you work, record the tool calls you make with log_steps (several at once).
4. Finish with complete_episode and an honest verdict: the memory learns from failures too.
Secrets in steps are redacted before storage."""


def build_server(
    config: MemoryConfig, *, backend: BackendKind = "ray", log_level: LogLevel = "WARNING"
) -> MCPServer[Any]:
    """The MCP server over the memory ``config`` names; the memory opens when serving starts."""
    handle = MemoryHandle()

    @asynccontextmanager
    async def lifespan(_server: MCPServer[Any]) -> AsyncIterator[None]:
        memory = await SelfLearningMemory.open(config, backend=backend)
        handle.memory = memory
        log.info("memory open: backend=%s, data=%s", backend, config.data_dir.resolve())
        try:
            yield None
        finally:
            handle.memory = None
            await memory.close()

    server = MemoryMCPServer(
        "episodic-memory",
        title="Episodic memory",
        instructions=INSTRUCTIONS,
        version=__version__,
        lifespan=lifespan,
        log_level=log_level,
    )
    limiter = ClientRateLimiter(config.rate_limit) if config.rate_limit.enabled else None
    register_tools(server, config, handle, limiter)
    return server


def run_mcp_server(
    config: MemoryConfig,
    *,
    transport: str = "stdio",
    host: str = "127.0.0.1",
    port: int = DEFAULT_HTTP_PORT,
    backend: BackendKind = "ray",
    log_level: LogLevel = "WARNING",
) -> None:
    """Serve until the client disconnects (stdio) or the process is interrupted (HTTP)."""
    if transport not in get_args(Transport):
        raise ConfigurationError(
            f"unknown MCP transport {transport!r}: use 'stdio' or 'http' (streamable HTTP)"
        )
    if backend not in get_args(BackendKind):
        raise ConfigurationError(f"unknown backend {backend!r}: use 'ray' or 'in_process'")
    server = build_server(config, backend=backend, log_level=log_level)
    if transport == "stdio":
        server.run("stdio")
        return
    if host not in _LOOPBACK:
        log.warning(
            "serving MCP on %s:%d without authentication: whoever reaches it can read and "
            "write this memory",
            host,
            port,
        )
    server.run("streamable-http", host=host, port=port)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="episodic-memory mcp",
        description="Serve the episodic memory to MCP clients (stdio by default).",
    )
    parser.add_argument("--transport", choices=["stdio", "http"], default="stdio")
    parser.add_argument("--host", default="127.0.0.1", help="HTTP only (default: loopback)")
    parser.add_argument("--port", type=int, default=DEFAULT_HTTP_PORT, help="HTTP only")
    parser.add_argument(
        "--backend",
        choices=list(get_args(BackendKind)),
        default="ray",
        help="ray (default; shared with Ray agents) or in_process (no Ray, lightweight hosts)",
    )
    parser.add_argument("--data-dir", type=Path, help="memory folder (EPISODIC_MEMORY_DATA_DIR)")
    parser.add_argument(
        "--rate-limit", action="store_true", help="per-client token buckets (config.rate_limit)"
    )
    for name, kind in (
        ("episodes-per-s", float),
        ("episodes-burst", int),
        ("steps-per-s", float),
        ("steps-burst", int),
    ):
        parser.add_argument(f"--{name}", type=kind, help="rate limit knob (implies --rate-limit)")
    parser.add_argument(
        "--log-level", choices=list(get_args(LogLevel)), default="WARNING", help="stderr logging"
    )
    return parser


def config_from_args(args: argparse.Namespace) -> MemoryConfig:
    """The environment's configuration (``MemoryConfig.from_env``) with the flags on top."""
    overrides: dict[str, object] = {}
    if args.data_dir is not None:
        overrides["data_dir"] = args.data_dir
    config = MemoryConfig.from_env(None, **overrides)
    knobs = {
        key: value
        for key in ("episodes_per_s", "episodes_burst", "steps_per_s", "steps_burst")
        if (value := getattr(args, key)) is not None
    }
    if args.rate_limit or knobs:
        limits = {**config.rate_limit.model_dump(), **knobs, "enabled": True}
        config = config.model_copy(update={"rate_limit": RateLimitConfig(**limits)})
    return config


def _ours(exc: BaseException) -> EpisodicMemoryError | None:
    """Our error, possibly inside the exception groups of the SDK's task groups."""
    if isinstance(exc, EpisodicMemoryError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            if (found := _ours(inner)) is not None:
                return found
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m episodic_memory.mcp_server``; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        config = config_from_args(args)
        logging.basicConfig(level=args.log_level, stream=sys.stderr, format="%(name)s: %(message)s")
        run_mcp_server(
            config,
            transport=args.transport,
            host=args.host,
            port=args.port,
            backend=args.backend,
            log_level=args.log_level,
        )
    except KeyboardInterrupt:
        return 130
    except BaseException as exc:
        ours = _ours(exc)
        if ours is None:
            raise
        print(f"episodic-memory mcp: {type(ours).__name__}: {ours}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
