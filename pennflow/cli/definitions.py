"""``pennflow validate | compile | graph``: commands on a definition file, no run store and no AWS.

They import only the workflow core (and typer): the fastest commands of the CLI.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from pennflow.cli.output import EXIT_INVALID, echo, fail, print_json

if TYPE_CHECKING:
    from pennflow.workflow.definition import DefinitionError, Workflow

FileArg = typer.Argument(..., help="Workflow definition (YAML or JSON).", show_default=False)


def load(path: Path) -> Workflow:
    """``load_definition``, with pydantic's plugins off while the definition models are first built.

    pennflow's models use no pydantic plugin, and looking for one reads the metadata of every
    installed distribution (about 20 ms of each command in a development environment); typer turns
    them off the same way for its own validators.
    """
    from pennflow.workflow.definition import load_definition

    with pydantic_plugins_off():
        return load_definition(path)


@contextlib.contextmanager
def pydantic_plugins_off() -> Iterator[None]:
    """pydantic's plugins off while pennflow's own models are built (they use none; see ``load``)."""
    previous = os.environ.get("PYDANTIC_DISABLE_PLUGINS")
    os.environ["PYDANTIC_DISABLE_PLUGINS"] = "1"
    try:
        yield
    finally:
        if previous is None:
            del os.environ["PYDANTIC_DISABLE_PLUGINS"]
        else:
            os.environ["PYDANTIC_DISABLE_PLUGINS"] = previous


def load_or_exit(path: Path) -> Workflow:
    """Load a definition, or print every fault and exit 2."""
    from pennflow.workflow.definition import DefinitionError

    try:
        return load(path)
    except DefinitionError as exc:
        print_faults(exc)
        raise typer.Exit(EXIT_INVALID) from None


def print_faults(exc: DefinitionError) -> None:
    echo("invalid definition", style="bold red", rest=f" {exc.source}: {len(exc.faults)} fault(s)", err=True)
    for fault in exc.faults:
        echo(f"  - {fault}", err=True)


def validate(file: Path = FileArg, as_json: bool = typer.Option(False, "--json", help="Machine-readable.")):
    """Check a definition; list every fault (exit 2) or confirm it is valid (exit 0)."""
    from pennflow.workflow.definition import DefinitionError

    try:
        workflow = load(file)
    except DefinitionError as exc:
        if not as_json:
            print_faults(exc)
            raise typer.Exit(EXIT_INVALID) from None
        faults = [{"processor": f.processor, "field": f.field, "message": f.message} for f in exc.faults]
        print_json({"valid": False, "faults": faults}, ensure_ascii=False)
        raise typer.Exit(EXIT_INVALID) from None
    from pennflow.workflow.asl import CompileError, compile_workflow, interactive_problem

    notes = list(workflow.notes)
    session = interactive_problem(workflow)
    try:  # valid means it also fits Step Functions' limits once compiled (a session is never compiled)
        if session is None:
            compile_workflow(workflow)
        else:
            notes.append(session)
    except CompileError as exc:
        if not as_json:
            raise fail(str(exc)) from None
        fault = {"processor": None, "field": "processors", "message": str(exc)}
        print_json({"valid": False, "faults": [fault]}, ensure_ascii=False)
        raise typer.Exit(EXIT_INVALID) from None
    if as_json:
        summary = {"valid": True, "name": workflow.name, "processors": len(workflow.processors)}
        print_json({**summary, "displayName": workflow.title, "notes": notes}, ensure_ascii=False)
    else:
        echo("valid", style="green", rest=f" {workflow.name}: {len(workflow.processors)} processors")
        for note in notes:
            echo(f"  note: {note}")


def compile_(
    file: Path = FileArg,
    explain: bool = typer.Option(False, "--explain", help="Print the structure and ordering added instead."),
    pretty: bool = typer.Option(False, "--pretty", help="Indent the JSON."),
):
    """Print the Step Functions definition (ASL JSON) the workflow compiles to.

    A workflow split into child machines prints {"definition": parent, "parts": [child, ...]}, the
    parent naming child k as ${Partk}."""
    import json

    from pennflow.workflow.asl import CompileError, compile_machines

    workflow = load_or_exit(file)
    try:
        compiled = compile_machines(workflow)
        if explain:
            from pennflow.workflow.explain import explain as explain_workflow

            sys.stdout.write(explain_workflow(workflow) + "\n")
            return
        output: dict = compiled.definition
        if compiled.parts:
            output = {"definition": compiled.definition, "parts": [p.definition for p in compiled.parts]}
        if pretty:
            sys.stdout.write(json.dumps(output, indent=2) + "\n")
        else:
            sys.stdout.write(json.dumps(output, separators=(",", ":")) + "\n")
    except CompileError as exc:
        raise fail(str(exc)) from None


def graph(file: Path = FileArg):
    """Print the workflow as a mermaid flowchart."""
    from pennflow.workflow.explain import mermaid

    sys.stdout.write(mermaid(load_or_exit(file)))
