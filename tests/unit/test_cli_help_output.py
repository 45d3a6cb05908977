"""The CLI's plain help lists every command (whole summaries) and option; its output helpers behave as
the rich console they replace for messages."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pennflow.cli import app
from pennflow.cli.definitions import load
from pennflow.cli.output import LazyConsole, colour_enabled, echo

EXAMPLE = Path(__file__).parents[2] / "workflows" / "eeg-quality.yaml"
COMMANDS = (
    "validate",
    "compile",
    "graph",
    "run",
    "runs",
    "status",
    "logs",
    "cancel",
    "resume",
    "rerun",
    "results",
    "submit",
    "schema",
    "report",
    "layers",
    "processors",
    "notebook",
)


def raw_help(*args: str) -> str:
    result = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.output
    return result.stdout


def help_of(*args: str) -> str:
    return " ".join(raw_help(*args).split())  # the formatter's line breaks do not matter


def test_root_help_lists_every_command_with_its_whole_summary() -> None:
    rows = raw_help().split("Commands:\n")[1].splitlines()
    assert [row.split()[0] for row in rows if row.startswith("  ") and row[2] != " "] == list(COMMANDS)
    listed = help_of().split("Commands:")[1]
    assert "..." not in listed, "a summary was cut"
    assert "validate Check a definition; list every fault (exit 2) or confirm it is valid (exit 0)." in listed
    assert (
        "run Run a workflow on this machine: exit 0 when it succeeded, 1 when it failed or was canceled."
        in listed
    )


@pytest.mark.parametrize(
    ("args", "options"),
    [
        (("validate",), ["--json"]),
        (("compile",), ["--explain", "--pretty"]),
        (
            ("runs",),
            ["--workflow", "--status", "not_started|started|succeeded|failed|canceling|canceled", "--limit"],
        ),
        (
            ("status",),
            [
                "--watch",
                "--interval",
                "--remote",
                "--node-url",
                "$PENNFLOW_NODE_URL",
                "--node",
                "$PENNFLOW_NODE",
            ],
        ),
        (("logs",), ["--follow", "--interval", "--remote", "--node", "--node-url"]),
        (("results",), ["--to", "--json", "--remote", "--node"]),
        (("rerun",), ["--max-parallel", "--json", "--remote", "--node"]),
        (("layers", "populate"), ["--from", "--dataset", "--package", "--remote"]),
        (("layers",), ["list", "create", "build", "populate", "show", "delete"]),
        (("layers", "create"), ["--type", "--requirements", "--description", "--build / --no-build"]),
    ],
)
def test_each_help_lists_every_option(args: tuple[str, ...], options: list[str]) -> None:
    text = help_of(*args)
    for option in options:
        assert option in text, option


def test_messages_are_coloured_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    for name in ("FORCE_COLOR", "NO_COLOR", "TERM", "TTY_COMPATIBLE"):
        monkeypatch.delenv(name, raising=False)
    assert colour_enabled(Terminal()) and not colour_enabled(io.StringIO())
    monkeypatch.setenv("FORCE_COLOR", "1")
    assert colour_enabled(io.StringIO())
    monkeypatch.setenv("NO_COLOR", "1")  # wins over FORCE_COLOR, as in rich
    assert not colour_enabled(Terminal())
    monkeypatch.delenv("NO_COLOR")
    monkeypatch.setenv("TERM", "dumb")
    assert not colour_enabled(Terminal())

    monkeypatch.delenv("FORCE_COLOR")
    monkeypatch.delenv("TERM")
    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    echo("error:", style="bold red", rest=" [not markup]", err=True)
    assert terminal.getvalue() == "\x1b[1;31merror:\x1b[0m [not markup]\n"


def test_the_lazy_console_is_made_on_first_use_and_its_width_can_be_patched(monkeypatch) -> None:
    console = LazyConsole(width=40)
    assert console._console is None
    monkeypatch.setattr(console, "width", 120)
    assert console._console is not None and console.unwrap().width == 120
    monkeypatch.undo()
    assert console.width == 40


@pytest.mark.parametrize("previous", [None, "logfire"])
def test_loading_restores_the_pydantic_plugin_setting(previous: str | None, monkeypatch) -> None:
    if previous is None:
        monkeypatch.delenv("PYDANTIC_DISABLE_PLUGINS", raising=False)
    else:
        monkeypatch.setenv("PYDANTIC_DISABLE_PLUGINS", previous)
    assert load(EXAMPLE).name == "eeg-quality"
    assert os.environ.get("PYDANTIC_DISABLE_PLUGINS") == previous


@pytest.mark.parametrize("args", [[], ["layers"]], ids=["pennflow", "pennflow layers"])
def test_a_group_given_no_command_prints_its_help_on_stdout_and_exits_2(args: list[str]) -> None:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert result.stdout.startswith(f"Usage: pennflow {' '.join(args)}".rstrip() + " [OPTIONS] COMMAND")
    assert "Commands:" in result.stdout and result.stderr == ""
