"""The CLI's commands that talk to a deployed node: ``submit`` and ``status --remote``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from pennflow.cli.output import EXIT_INVALID, EXIT_OK, EXIT_RUN_FAILED, echo, fail, parse_params
from pennflow.node.address import DEFAULT_STACK, ENV_NODE_URL, URL_OUTPUT

if TYPE_CHECKING:
    from pennflow.node.client import NodeClient

NodeUrlOption = typer.Option(
    None,
    "--node-url",
    help=f"The node's API URL (default: ${ENV_NODE_URL}, then the stack's {URL_OUTPUT}).",
    show_default=False,
)
StackOption = typer.Option(DEFAULT_STACK, "--stack", help="The node's CloudFormation stack.")


def submit_command(
    file: Path = typer.Argument(..., help="Workflow definition (YAML or JSON).", show_default=False),
    dataset: str | None = typer.Option(None, "--dataset", help="Pennsieve dataset id.", show_default=False),
    packages: list[str] = typer.Option(
        [], "--package", help="Pennsieve package id within --dataset (repeatable).", show_default=False
    ),
    param: list[str] = typer.Option(
        [],
        "--param",
        help="KEY=VALUE or PROCESSOR.KEY=VALUE over defaultParams (repeatable).",
        show_default=False,
    ),
    layer: list[str] = typer.Option(
        [], "--layer", help="Layer given to every processor (repeatable).", show_default=False
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show the plan; start nothing."),
    watch: bool = typer.Option(
        False, "--watch", help="Follow the run until it ends (exit 1 unless it succeeded)."
    ),
    interval: float = typer.Option(10.0, "--interval", min=1.0, help="Seconds between polls with --watch."),
    node: str | None = NodeUrlOption,
    stack: str = StackOption,
    as_json: bool = typer.Option(False, "--json", help="Machine-readable."),
) -> None:
    """Register a workflow on the deployed node and start a run of it."""
    from pennflow.node.client import NodeClient, RemoteError, node_url
    from pennflow.workflow.definition import DefinitionError

    overrides = parse_params(param)
    if packages and not dataset:
        raise fail("--package: needs --dataset", EXIT_INVALID)
    try:
        client = NodeClient(node_url(node, stack=stack))
        accepted = client.submit(file, dataset, overrides, packages=packages, layers=layer, dry_run=dry_run)
    except DefinitionError as exc:
        lines = [
            f"invalid definition {exc.source}: {len(exc.faults)} fault(s)",
            *(f"  - {f}" for f in exc.faults),
        ]
        raise fail("\n".join(lines), EXIT_INVALID) from None
    except RemoteError as exc:
        raise fail("\n".join(exc.lines()), EXIT_INVALID if exc.is_client_error else EXIT_RUN_FAILED) from None
    if as_json and not watch:
        echo(json.dumps(accepted, indent=2))
        return
    if dry_run:
        echo(accepted.get("plan", ""))
        return
    echo(f"run {accepted['runId']} accepted ({accepted['workflow']})")
    echo(f"execution: {accepted['consoleUrl']}")
    if watch:
        raise typer.Exit(_follow(client, accepted["runId"], interval, as_json))


def remote_status_command(
    run_id: str = typer.Argument(..., help="The run id.", show_default=False),
    watch: bool = typer.Option(
        False, "--watch", help="Follow the run until it ends (exit 1 unless it succeeded)."
    ),
    interval: float = typer.Option(10.0, "--interval", min=1.0, help="Seconds between polls with --watch."),
    node: str | None = NodeUrlOption,
    stack: str = StackOption,
    as_json: bool = typer.Option(False, "--json", help="Machine-readable."),
) -> None:
    """A run on the deployed node and each of its processors; --watch follows it to the end."""
    from pennflow.node.client import NodeClient, RemoteError, node_url

    try:
        client = NodeClient(node_url(node, stack=stack))
        if watch:
            raise typer.Exit(_follow(client, run_id, interval, as_json))
        run = client.get_run(run_id)
    except RemoteError as exc:
        raise fail("\n".join(exc.lines()), EXIT_INVALID if exc.is_client_error else EXIT_RUN_FAILED) from None
    echo(json.dumps(run, indent=2) if as_json else format_run(run))


def _follow(client: NodeClient, run_id: str, interval: float, as_json: bool) -> int:
    from pennflow.node.client import RemoteError

    try:
        run: dict[str, Any] = {}
        for run in client.watch(run_id, interval):
            echo(json.dumps(run) if as_json else format_run(run))
    except RemoteError as exc:
        raise fail("\n".join(exc.lines()), EXIT_INVALID if exc.is_client_error else EXIT_RUN_FAILED) from None
    return EXIT_OK if run.get("status") == "SUCCEEDED" else EXIT_RUN_FAILED


def format_run(run: Mapping[str, Any]) -> str:
    lines = [f"run {run.get('runId')}: {run.get('workflow')} {run.get('status')}"]
    if run.get("reason"):
        lines.append(f"  {run['reason']}")
    for step in run.get("steps", []):
        extra = f" exit {step['exitCode']}" if step.get("exitCode") not in (None, 0) else ""
        lines.append(
            f"  {step.get('processorId', '?'):<24} {step.get('status', '?'):<12} attempts {step.get('attempts', 0)}{extra}"
        )
    from pennflow.workflow.cost import summary_lines

    return "\n".join([*lines, *summary_lines(run.get("cost"))])
