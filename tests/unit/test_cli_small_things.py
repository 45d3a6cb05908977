"""What users notice first: ``--version``, shell completion, help without typer's type jargon."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import click
import pytest
from typer.main import get_command
from typer.testing import CliRunner

from pennflow.cli import app

ROOT = Path(__file__).parents[2]
ENTRY = "import sys; sys.argv[0] = 'pennflow'; from pennflow.cli import main; main()"


def every_command(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [prefix]
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found += every_command(command, (*prefix, name))
        else:
            found.append((*prefix, name))
    return found


COMMANDS = every_command(get_command(app))  # type: ignore[arg-type]


def test_version_prints_the_installed_version_and_exits_0() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout == f"pennflow {version('pennflow')}\n"


@pytest.mark.parametrize("args", COMMANDS, ids=[" ".join(c) or "pennflow" for c in COMMANDS])
def test_help_names_value_types_plainly(args: tuple[str, ...]) -> None:
    result = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.stdout
    assert "list[" not in result.stdout  # a repeatable option shows the type of one value


def test_a_repeatable_option_shows_one_value() -> None:
    text = CliRunner().invoke(app, ["run", "--help"], env={"COLUMNS": "100"}).stdout
    assert "--param <str>" in text and "--package <str>" in text and "--layer <str>" in text


def test_the_root_help_offers_version_and_completion() -> None:
    text = CliRunner().invoke(app, ["--help"]).stdout
    for option in ("--version", "--install-completion", "--show-completion"):
        assert option in text, option


def complete(words: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """What the shell's completion function asks a real ``pennflow`` process."""
    return subprocess.run(
        [sys.executable, "-c", ENTRY],
        cwd=ROOT,
        env={**os.environ, **env, "COMP_WORDS": words, "COMP_CWORD": str(len(words.split()) - 1)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_bash_completion_completes_commands_and_options() -> None:
    done = complete("pennflow va", {"_PENNFLOW_COMPLETE": "complete_bash"})
    assert (done.returncode, done.stdout.split()) == (0, ["validate"])
    done = complete("pennflow run --max", {"_PENNFLOW_COMPLETE": "complete_bash"})
    assert done.stdout.split() == ["--max-parallel"]
    done = complete("pennflow layers cr", {"_PENNFLOW_COMPLETE": "complete_bash"})
    assert done.stdout.split() == ["create"]


def test_show_completion_prints_the_script_the_shell_sources() -> None:
    result = CliRunner().invoke(app, ["--show-completion", "bash"])
    assert result.exit_code == 0
    assert "_pennflow_completion()" in result.stdout and "_PENNFLOW_COMPLETE=complete_bash" in result.stdout


def test_install_completion_writes_the_script_and_sources_it_from_bashrc(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", ENTRY, "--install-completion", "bash"],
        cwd=ROOT,
        env={**os.environ, "HOME": str(tmp_path), "SHELL": "/bin/bash"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    script = tmp_path / ".bash_completions" / "pennflow.sh"
    assert "_PENNFLOW_COMPLETE=complete_bash" in script.read_text()
    assert f"source '{script}'" in (tmp_path / ".bashrc").read_text()


def test_the_collector_is_off_during_start_up_and_back_for_a_command_that_goes_on() -> None:
    from pennflow.cli.startup import pause_gc_during_startup

    assert gc.isenabled()
    try:
        resume = pause_gc_during_startup(0.05)
        assert not gc.isenabled()
        resume.join(timeout=10)
        assert gc.isenabled() and gc.get_freeze_count() > 0  # start-up objects frozen out of its way
        cancelled = pause_gc_during_startup(60)
        cancelled.cancel()  # a short command ends first: main cancels the timer
        cancelled.join(timeout=10)
        assert not gc.isenabled()
    finally:
        gc.unfreeze()
        gc.enable()
