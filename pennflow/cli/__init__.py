"""The ``pennflow`` command (typer). Exit codes: 0 ok, 1 run failed, 2 invalid input.

One module per command group: ``definitions`` (validate, compile, graph), ``local`` (run, runs,
status, logs, cancel), ``remote`` (submit, status of a deployed node's run), ``layers``, ``processors``,
``schema``. Each command
imports what it uses when it runs, so that ``pennflow validate`` never pays for the engine, rich or
AWS. Help is click's plain formatter (``rich_markup_mode=None``): typer's rich help would import rich
for every ``--help``.
"""

from __future__ import annotations

import gc

import typer

from pennflow.cli import definitions, local, remote, schema
from pennflow.cli.layers import layers_app
from pennflow.cli.output import CommandGroup
from pennflow.cli.processors import processors_app

app = typer.Typer(
    name="pennflow",
    help="Analysis workflows for Pennsieve datasets: validate, compile, run locally, deploy.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    cls=CommandGroup,
)

app.command()(definitions.validate)
app.command("compile")(definitions.compile_)
app.command()(definitions.graph)
app.command()(local.run)
app.command("runs")(local.runs_)
app.command()(local.status)
app.command()(local.logs)
app.command()(local.cancel)
app.add_typer(layers_app, name="layers")
app.add_typer(processors_app, name="processors")
app.command("submit")(remote.submit_command)
app.command("schema")(schema.schema_command)


def main() -> None:
    try:
        app()
    finally:
        # The command is done. At exit the collector would walk every object typer and pydantic
        # built (about a third of `pennflow validate`'s time); frozen, they are left to the OS.
        gc.freeze()
