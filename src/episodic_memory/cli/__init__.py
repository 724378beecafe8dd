"""The ``episodic-memory`` command line.

::

    episodic-memory serve --address auto            # the memory as detached actors on Ray
    episodic-memory status                          # nodes, actors, counts, hit rate, queues
    episodic-memory retrieve "fix the login test" --domain web
    episodic-memory export backup.jsonl.gz          # and: import, sync, migrate, stats, ...
    episodic-memory stop

Every command has ``--help`` with examples, prints tables for people and ``--json`` for
programs, and reports our errors in one line: exit status 2 for bad input (validation,
configuration, usage), 1 for anything else that failed, 0 for success. ``demo`` and ``mcp`` hand
their arguments to ``episodic_memory.demo`` and ``episodic_memory.mcp_server``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence
from typing import Any

from episodic_memory import __version__
from episodic_memory.cli import maintenance, records, service
from episodic_memory.errors import ConfigurationError, EpisodicMemoryError, ValidationError

__all__ = ["build_parser", "main"]

PROG = "episodic-memory"
BAD_INPUT = 2
FAILED = 1
DELEGATES: dict[str, tuple[str, str]] = {
    "demo": (
        "run the demo agent fleet on local Ray (options: episodic-memory demo --help)",
        "  episodic-memory demo --agents 8 --episodes 2\n"
        "  episodic-memory demo --data-dir /tmp/demo-memory --placement dedicated",
    ),
    "mcp": (
        "serve the memory to MCP clients over stdio or HTTP (options: episodic-memory mcp --help)",
        "  episodic-memory mcp --backend in_process --data-dir ~/agent-memory\n"
        "  episodic-memory mcp --transport http --port 8765",
    ),
}


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples' line breaks."""


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The parser, and every command's parser by its full name (``"episodes list"``)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Self-learning episodic memory for AI agents, on Ray.",
        epilog="Examples:\n  episodic-memory serve --address auto\n  episodic-memory status",
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    top = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands: dict[str, argparse.ArgumentParser] = {}

    def add(name: str, summary: str, example: str, group: Any = None) -> argparse.ArgumentParser:
        command = (group or top).add_parser(
            name.split()[-1],
            help=summary,
            description=summary[0].upper() + summary[1:] + ".",
            epilog=f"Examples:\n{example}",
            formatter_class=_Formatter,
        )
        commands[name] = command
        return command

    service.register(add)
    records.register(add)
    maintenance.register(add)
    for name, (summary, example) in DELEGATES.items():
        add(name, summary, example).add_argument("args", nargs="*", help="passed through")
    return parser, commands


def _delegate(name: str, rest: list[str]) -> int:
    """``demo``/``mcp``: our help first when asked, then theirs; otherwise just theirs."""
    if {"-h", "--help"} & set(rest):
        build_parser()[1][name].print_help()
        print()
        rest = ["--help"]
    try:
        if name == "demo":
            from episodic_memory.demo import main as demo_main

            demo_main(rest)
            return 0
        from episodic_memory.mcp_server import main as mcp_main

        return mcp_main(rest)
    except SystemExit as exc:  # their argparse: --help, or a usage error
        return exc.code if isinstance(exc.code, int) else FAILED


def _fail(exc: BaseException) -> int:
    bad_input = isinstance(exc, ValidationError | ConfigurationError)
    message = " ".join(str(exc).split())  # one line, whatever the terminal width
    sys.stderr.write(f"{PROG}: error: {type(exc).__name__}: {message}\n")
    return BAD_INPUT if bad_input else FAILED


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit status (the console script exits with it)."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    try:
        if args_list[:1] and args_list[0] in DELEGATES:
            return _delegate(args_list[0], args_list[1:])
        parser, _ = build_parser()
        try:
            args = parser.parse_args(args_list)
        except SystemExit as exc:
            return exc.code if isinstance(exc.code, int) else BAD_INPUT
        run: Callable[[argparse.Namespace], Any] = args.run
        return int(asyncio.run(run(args)))
    except KeyboardInterrupt:
        return 130
    except (EpisodicMemoryError, OSError) as exc:  # OSError: the files named on the line
        return _fail(exc)


if __name__ == "__main__":
    sys.exit(main())
