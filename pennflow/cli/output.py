"""What every command prints through: exit codes, one-line messages, JSON, and a rich console on demand.

Messages and JSON are written directly (ANSI colour only on a terminal, as rich decides it), so that
the commands that print no table (validate, compile, graph, errors) never import rich.
"""

from __future__ import annotations

import json
import os
import re
import sys
from typing import IO, Any

import typer
from typer.core import TyperGroup

EXIT_OK, EXIT_RUN_FAILED, EXIT_INVALID = 0, 1, 2

_STYLES = {"bold red": "\x1b[1;31m", "green": "\x1b[32m"}
_RESET = "\x1b[0m"


def colour_enabled(stream: IO[str]) -> bool:
    """Rich's rule: never with NO_COLOR or a dumb terminal; TTY_COMPATIBLE or FORCE_COLOR decide when
    set; otherwise only on a terminal."""
    env = os.environ
    if env.get("NO_COLOR") or env.get("TERM", "").lower() in ("dumb", "unknown"):
        return False
    if env.get("TTY_COMPATIBLE") in ("0", "1"):
        return env["TTY_COMPATIBLE"] == "1"
    if "FORCE_COLOR" in env:
        return env["FORCE_COLOR"] != ""
    try:
        return bool(getattr(stream, "isatty", None) and stream.isatty())
    except ValueError:  # a closed stream
        return False


def echo(text: str = "", *, style: str | None = None, rest: str = "", err: bool = False) -> None:
    """One line: ``text`` in ``style`` (a key of _STYLES) when colour is on, then ``rest`` as is."""
    stream = sys.stderr if err else sys.stdout
    if style and colour_enabled(stream):
        text = f"{_STYLES[style]}{text}{_RESET}"
    stream.write(f"{text}{rest}\n")
    stream.flush()


def fail(message: str, code: int = EXIT_INVALID) -> typer.Exit:
    """Print ``error: message`` to stderr; the caller raises the returned Exit."""
    echo("error:", style="bold red", rest=f" {message}", err=True)
    return typer.Exit(code)


def parse_params(items: list[str]) -> dict[str, str]:
    """``--param KEY=VALUE`` / ``PROCESSOR.KEY=VALUE`` overrides, or exit 2 naming the bad one."""
    from pennflow.workflow.contract import parse_overrides

    try:
        return parse_overrides(items)
    except ValueError as exc:
        raise fail(str(exc)) from None


def print_json(data: Any, *, ensure_ascii: bool = True) -> None:
    """Indented JSON on stdout."""
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=ensure_ascii) + "\n")
    sys.stdout.flush()


class CommandGroup(TyperGroup):
    """Click's plain help, listing each command with its whole summary (click cuts it to the line);
    a group given no command prints its help on stdout (click would use stderr) and exits 2; a
    repeatable option shows the type of one value (``--param <str>``, not ``<list[str]>``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for command in self.commands.values():
            for param in command.params:
                _one_value_metavar(param)

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if not args and self.no_args_is_help and not ctx.resilient_parsing:
            typer.echo(ctx.get_help())
            ctx.exit(EXIT_INVALID)
        return super().parse_args(ctx, args)

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit=sys.maxsize)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def compact_table(
    columns: list[tuple[str, str]], *, wraps: tuple[str, ...] = (), title: str | None = None
) -> Any:
    """A borderless table as ``pennflow runs`` prints it, for 80 columns: ``columns`` are (header,
    justify); only the columns named in ``wraps`` (names, free text) wrap, the others are never cut."""
    from rich import box
    from rich.table import Table

    table = Table(
        title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True
    )
    for header, justify in columns:
        table.add_column(header, justify=justify, no_wrap=header not in wraps, overflow="fold")
    return table


def print_steps(console: Any, steps: Any, **options: Any) -> None:
    """The steps table (``engine.progress.steps_table`` options) fitted to the console's width: a
    reason that does not fit its column is printed under the table, whole on its own line, so that a
    path in it is never cut or broken (the terminal wraps it, copying it gives it back intact)."""
    from pennflow.engine.progress import fitted_steps_table

    console = console.unwrap() if isinstance(console, LazyConsole) else console
    table, reasons = fitted_steps_table(console, steps, **options)
    console.print(table)
    print_lines(console, reasons)


def print_lines(console: Any, lines: Any) -> None:
    """Plain lines as they are (what ``print(line, soft_wrap=True, markup=False, highlight=False)``
    prints), without rich's rendering of each: a run of thousands of processors ends with as many."""
    text = "".join(f"{line}\n" for line in lines)
    if text:
        console.file.write(text)
        console.file.flush()


def _one_value_metavar(param: Any) -> None:
    descriptor = getattr(param, "type_descriptor", None)  # typer's parameters have one
    if param.metavar is None and descriptor is not None and descriptor.is_list and not descriptor.is_choice:
        param.metavar = _LIST_TYPE.sub(r"\1", param.display_type(None))


_LIST_TYPE = re.compile(r"list\[(.*)\]")


def _console_property(name: str) -> property:
    return property(
        lambda self: getattr(self.unwrap(), name), lambda self, value: setattr(self.unwrap(), name, value)
    )


class LazyConsole:
    """A ``rich.console.Console`` made on first use, so that importing a command module costs no rich.

    Attribute reads and writes go to the console (``out.print(...)``, ``out.width = 160``); the
    console's size is a property here too, as on a Console, so that it can be patched and restored.
    """

    width = _console_property("width")
    height = _console_property("height")

    def __init__(self, **options: Any) -> None:
        object.__setattr__(self, "_options", options)
        object.__setattr__(self, "_console", None)

    def unwrap(self) -> Any:
        """The console itself, for rich APIs that take one (Live, progress displays)."""
        if self._console is None:
            from rich.console import Console

            object.__setattr__(self, "_console", Console(**self._options))
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self.unwrap(), name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.unwrap(), name, value)
