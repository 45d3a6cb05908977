"""The ``pennflow`` command (typer). Exit codes: 0 ok, 1 run failed, 2 invalid input.

One module per command group: ``definitions`` (validate, compile, graph), ``local`` (run, runs,
status, logs, cancel, rerun), ``resume``, ``results``, ``remote`` (submit, and the helper every
``--remote`` form calls), ``layers``, ``processors``, ``schema``, ``report`` (a run's HTML report). Each command
imports what it uses when it runs, so that ``pennflow validate`` never pays for the engine, rich or
AWS. Help is click's plain formatter (``rich_markup_mode=None``): typer's rich help would import rich
for every ``--help``. Shell completion is typer's own (``--install-completion``, ``--show-completion``).
"""

from __future__ import annotations

import gc

import typer

from pennflow.cli import definitions, local, remote, report, results, resume, schema
from pennflow.cli.layers import layers_app
from pennflow.cli.notebook import notebook_app
from pennflow.cli.output import CommandGroup
from pennflow.cli.processors import processors_app
from pennflow.cli.startup import defer_pydantic_plugin_search, pause_gc_during_startup

app = typer.Typer(
    name="pennflow",
    help="Analysis workflows for Pennsieve datasets: validate, compile, run locally, deploy.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    cls=CommandGroup,
)


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"pennflow {version('pennflow')}")
        except PackageNotFoundError:  # run from a source tree that was never installed
            typer.echo("pennflow (not installed: `make demo` or `pip install -e .` records its version)")
        raise typer.Exit()


@app.callback()
def _root(
    _version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    pass  # the options above only; each command is its own


app.command()(definitions.validate)
app.command("compile")(definitions.compile_)
app.command()(definitions.graph)
app.command()(local.run)
app.command("runs")(local.runs_)
app.command()(local.status)
app.command()(local.logs)
app.command()(local.cancel)
app.command("resume")(resume.resume_command)
app.command()(local.rerun)
app.command("results")(results.results)
app.add_typer(layers_app, name="layers")
app.add_typer(processors_app, name="processors")
app.add_typer(notebook_app, name="notebook")
app.command("submit")(remote.submit_command)
app.command("schema")(schema.schema_command)
app.command("report")(report.report_command)


def main() -> None:
    defer_pydantic_plugin_search()
    resume_gc = pause_gc_during_startup()
    try:
        app()
    finally:
        resume_gc.cancel()
        # The command is done. At exit the collector would walk every object typer and pydantic
        # built (about a third of `pennflow validate`'s time); frozen, they are left to the OS.
        gc.freeze()
