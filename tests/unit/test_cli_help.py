"""Every command documents itself: a description, and ``--help`` with a worked example.

A command added without docs fails here (the sqlite-utils rule).
"""

from __future__ import annotations

import argparse

import pytest

from episodic_memory.cli import DELEGATES, build_parser, main

PARSER, COMMANDS = build_parser()
LEAVES = sorted(
    name
    for name, parser in COMMANDS.items()
    if not any(isinstance(a, argparse._SubParsersAction) for a in parser._actions)
)


def test_every_documented_command_is_reachable_from_the_top_level_help() -> None:
    expected = {
        "serve", "stop", "status", "episodes list", "episodes show", "retrieve",
        "patterns list", "heuristics list", "export", "import", "sync", "migrate", "stats",
        "demo", "mcp",
    }  # fmt: skip
    assert expected <= set(LEAVES)
    top = PARSER.format_help()
    assert all(name.split()[0] in top for name in COMMANDS)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_command_has_a_description_and_an_example(name: str) -> None:
    parser = COMMANDS[name]
    assert parser.description
    assert len(parser.description) > 20
    assert parser.epilog
    assert parser.epilog.startswith("Examples:\n  episodic-memory ")


@pytest.mark.parametrize("name", [leaf for leaf in LEAVES if leaf not in DELEGATES])
def test_help_prints_the_example_and_exits_zero(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*name.split(), "--help"]) == 0
    out = capsys.readouterr().out
    assert "Examples:" in out
    assert f"episodic-memory {name}" in out


def test_every_option_and_argument_says_what_it_is_for() -> None:
    for name in LEAVES:
        for action in COMMANDS[name]._actions:
            assert action.help, f"{name}: {action.option_strings or action.dest} has no help"


@pytest.mark.parametrize("name", sorted(DELEGATES))
def test_delegated_commands_show_our_example_then_their_own_options(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([name, "--help"]) == 0
    out = capsys.readouterr().out
    assert f"Examples:\n  episodic-memory {name}" in out
    assert "--data-dir" in out  # from the delegate's own parser


def test_an_unknown_command_is_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["frobnicate"]) == 2
    assert "invalid choice" in capsys.readouterr().err
