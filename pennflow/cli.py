"""The ``pennflow`` command (typer + rich). Exit codes: 0 ok, 1 run failed, 2 invalid input."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.console import Console

from pennflow.definition import DefinitionError, Workflow, load_definition

app = typer.Typer(
    name="pennflow",
    help="Analysis workflows for Pennsieve datasets: validate, compile, run locally, deploy.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True, soft_wrap=True)

EXIT_OK, EXIT_RUN_FAILED, EXIT_INVALID = 0, 1, 2

FileArg = typer.Argument(..., help="Workflow definition (YAML or JSON).", show_default=False)


def load_or_exit(path: Path) -> Workflow:
    """Load a definition, or print every fault and exit 2."""
    try:
        return load_definition(path)
    except DefinitionError as exc:
        err.print(
            f"[bold red]invalid definition[/] {exc.source}: {len(exc.faults)} fault(s)", highlight=False
        )
        for fault in exc.faults:
            err.print(f"  - {fault}", highlight=False, markup=False)
        raise typer.Exit(EXIT_INVALID) from None


def fail(message: str, code: int = EXIT_INVALID) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


@app.command()
def validate(file: Path = FileArg, as_json: bool = typer.Option(False, "--json", help="Machine-readable.")):
    """Check a definition; list every fault (exit 2) or confirm it is valid (exit 0)."""
    try:
        workflow = load_definition(file)
    except DefinitionError as exc:
        if as_json:
            faults = [{"processor": f.processor, "field": f.field, "message": f.message} for f in exc.faults]
            out.print_json(json.dumps({"valid": False, "faults": faults}))
            raise typer.Exit(EXIT_INVALID) from None
        load_or_exit(file)
        return
    if as_json:
        out.print_json(
            json.dumps({"valid": True, "name": workflow.name, "processors": len(workflow.processors)})
        )
    else:
        out.print(f"[green]valid[/] {workflow.name}: {len(workflow.processors)} processors", highlight=False)


@app.command("compile")
def compile_(
    file: Path = FileArg,
    explain: bool = typer.Option(False, "--explain", help="Print the structure and ordering added instead."),
    pretty: bool = typer.Option(False, "--pretty", help="Indent the JSON."),
):
    """Print the Step Functions definition (ASL JSON) the workflow compiles to."""
    from pennflow.asl import CompileError, compile_to_json, compile_workflow

    workflow = load_or_exit(file)
    try:
        if explain:
            from pennflow.explain import explain as explain_workflow

            compile_workflow(workflow)
            sys.stdout.write(explain_workflow(workflow) + "\n")
        elif pretty:
            sys.stdout.write(json.dumps(compile_workflow(workflow), indent=2) + "\n")
        else:
            sys.stdout.write(compile_to_json(workflow) + "\n")
    except CompileError as exc:
        raise fail(str(exc)) from None


@app.command()
def graph(file: Path = FileArg):
    """Print the workflow as a mermaid flowchart."""
    from pennflow.explain import mermaid

    sys.stdout.write(mermaid(load_or_exit(file)))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
