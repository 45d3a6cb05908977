"""The CLI's commands that talk to a deployed node, and the one helper every remote form goes through.

``submit`` and ``status --remote`` live here; the remote forms of ``runs``, ``logs``, ``cancel``,
``rerun`` and ``results`` are in ``remote_runs``, of ``layers`` in ``remote_layers``. Each takes the
same options (``--remote``, ``--node NAME``, ``--node-url URL``, ``--stack``), gathered in a
:class:`NodeTarget`, and calls the node through :func:`call_node`: the node is resolved, the request
signed, and any failure (no credentials, no region, no such node, unreachable, refused) is one line
on stderr and exit 2 (1 when the node itself failed), never a traceback.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer

from pennflow.cli.output import EXIT_INVALID, EXIT_OK, EXIT_RUN_FAILED, echo, fail, parse_params
from pennflow.node.address import DEFAULT_NODE, ENV_NODE, ENV_NODE_URL, URL_OUTPUT

if TYPE_CHECKING:
    from pennflow.node.client import NodeClient

T = TypeVar("T")

RemoteOption = typer.Option(
    False, "--remote", help="Ask the deployed node (SigV4-signed) instead of this machine."
)
NodeOption = typer.Option(
    None,
    "--node",
    help=f"The deployed node's name (its nodeName; default ${ENV_NODE}, then {DEFAULT_NODE}): its stack's "
    f"{URL_OUTPUT} is the API. Implies --remote.",
    show_default=False,
)
NodeUrlOption = typer.Option(
    None,
    "--node-url",
    help=f"The node's API URL (default: ${ENV_NODE_URL}, then the node's stack). Implies --remote.",
    show_default=False,
)
StackOption = typer.Option(
    None, "--stack", help="The node's CloudFormation stack (default: <node>-node).", show_default=False
)


@dataclass(frozen=True)
class NodeTarget:
    """Which node a command asks: ``--remote``, ``--node``, ``--node-url``, ``--stack`` as given."""

    remote: bool = False
    node: str | None = None
    url: str | None = None
    stack: str | None = None

    @property
    def chosen(self) -> bool:
        return self.remote or bool(self.node or self.url or self.stack)


@contextlib.contextmanager
def remote_errors() -> Iterator[None]:
    """A RemoteError becomes its message on stderr: exit 2 for the caller's fault, 1 for the node's."""
    from pennflow.node.client import RemoteError

    try:
        yield
    except RemoteError as exc:
        status = exc.status
        code = EXIT_RUN_FAILED if status is not None and status >= 500 else EXIT_INVALID
        raise fail("\n".join(exc.lines()), code) from None


def connect(target: NodeTarget) -> NodeClient:
    """The client of the node ``target`` names (inside :func:`remote_errors`)."""
    from pennflow.node.client import NodeClient, node_url

    return NodeClient(node_url(target.url, node=target.node, stack=target.stack))


def call_node(target: NodeTarget, call: Callable[[NodeClient], T]) -> T:
    """Resolve the node, make the signed call, and turn any failure into one line and an exit code."""
    with remote_errors():
        return call(connect(target))


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
    node_url: str | None = NodeUrlOption,
    stack: str | None = StackOption,
    as_json: bool = typer.Option(False, "--json", help="Machine-readable."),
    node: str | None = NodeOption,
) -> None:
    """Register a workflow on the deployed node and start a run of it."""
    from pennflow.workflow.definition import DefinitionError

    overrides = parse_params(param)
    if packages and not dataset:
        raise fail("--package: needs --dataset", EXIT_INVALID)
    try:
        with remote_errors():
            client = connect(NodeTarget(True, node, node_url, stack))
            accepted = client.submit(
                file, dataset, overrides, packages=packages, layers=layer, dry_run=dry_run
            )
    except DefinitionError as exc:
        lines = [
            f"invalid definition {exc.source}: {len(exc.faults)} fault(s)",
            *(f"  - {f}" for f in exc.faults),
        ]
        raise fail("\n".join(lines), EXIT_INVALID) from None
    if as_json and not watch:
        echo(json.dumps(accepted, indent=2))
        return
    if dry_run:
        echo(accepted.get("plan", ""))
        return
    echo(f"run {accepted['runId']} accepted ({accepted['workflow']})")
    echo(f"execution: {accepted['consoleUrl']}")
    if watch:
        raise typer.Exit(follow_run(client, accepted["runId"], interval, as_json))


def remote_status_command(
    run_id: str = typer.Argument(..., help="The run id.", show_default=False),
    watch: bool = typer.Option(
        False, "--watch", help="Follow the run until it ends (exit 1 unless it succeeded)."
    ),
    interval: float = typer.Option(10.0, "--interval", min=1.0, help="Seconds between polls with --watch."),
    node_url: str | None = NodeUrlOption,
    stack: str | None = StackOption,
    as_json: bool = typer.Option(False, "--json", help="Machine-readable."),
    node: str | None = NodeOption,
) -> None:
    """A run on the deployed node and each of its processors; --watch follows it to the end."""
    show_remote_status(NodeTarget(True, node, node_url, stack), run_id, watch, interval, as_json)


def show_remote_status(target: NodeTarget, run_id: str, watch: bool, interval: float, as_json: bool) -> None:
    with remote_errors():
        client = connect(target)
        if watch:
            raise typer.Exit(follow_run(client, run_id, interval, as_json))
        run = client.get_run(run_id)
    echo(json.dumps(run, indent=2) if as_json else format_run(run))


def follow_run(client: NodeClient, run_id: str, interval: float, as_json: bool) -> int:
    """Print the run each time it changes until it ends; exit 0 if it SUCCEEDED, else 1."""
    with remote_errors():
        run: dict[str, Any] = {}
        for run in client.watch(run_id, interval):
            echo(json.dumps(run) if as_json else format_run(run))
    return EXIT_OK if run.get("status") == "SUCCEEDED" else EXIT_RUN_FAILED


def format_run(run: Mapping[str, Any]) -> str:
    rerun = f", a rerun of {run['rerunOf']}" if run.get("rerunOf") else ""
    lines = [f"run {run.get('runId')}: {run.get('workflow')} {run.get('status')}{rerun}"]
    if run.get("reason"):
        lines.append(f"  {run['reason']}")
    if run.get("resumeUntil"):
        lines.append(f"  kept until {run['resumeUntil']}: pennflow resume {run.get('runId')} --remote")
    history = run.get("history") or []
    for earlier in history:  # a resumed run: the attempts before this one, as `pennflow status` lists them
        ended = f": {earlier['reason']}" if earlier.get("reason") else ""
        lines.append(f"  attempt {earlier.get('attempt')}: {earlier.get('status')}{ended}")
    if history:
        reused = ", ".join(step["processorId"] for step in run.get("steps", []) if step.get("reused"))
        lines.append(f"  attempt {run.get('attempt')} (now): reused {reused or 'nothing'}")
    for step in run.get("steps", []):
        extra = f" exit {step['exitCode']}" if step.get("exitCode") not in (None, 0) else ""
        extra += " (reused)" if step.get("reused") else ""
        lines.append(
            f"  {step.get('processorId', '?'):<24} {step.get('status', '?'):<12} attempts {step.get('attempts', 0)}{extra}"
        )
    from pennflow.workflow.cost import summary_lines

    return "\n".join([*lines, *summary_lines(run.get("cost"))])
