"""``pennflow notebook start|stop``: an interactive Jupyter session with layers, run as a run.

Exit codes: 0 done, 1 the server failed to start or stop, 2 invalid input or a refusal (unknown
layer, a layer built for another Python, a run that is not a session). See
``pennflow.notebooks.session`` for what a session sees and how it ends.
"""

from __future__ import annotations

import json

import typer

from pennflow.cli.output import EXIT_INVALID, EXIT_RUN_FAILED, CommandGroup, echo, fail
from pennflow.cli.remote import NodeOption, NodeTarget, NodeUrlOption, RemoteOption, StackOption

notebook_app = typer.Typer(
    name="notebook",
    help="Interactive Jupyter sessions that mount layers read-only (each session is a run).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    cls=CommandGroup,
)


@notebook_app.command("start")
def start(
    layer: list[str] = typer.Option([], "--layer", help="A layer to mount read-only (repeatable)."),
    dataset: str | None = typer.Option(
        None, "--dataset", help="Pennsieve dataset to download into INPUT_DIR."
    ),
    package: list[str] = typer.Option([], "--package", help="Only these packages of --dataset (repeatable)."),
    idle_timeout: int | None = typer.Option(
        None,
        "--idle-timeout",
        help="Stop the session after this many seconds without activity (>= 5; default: "
        "$PENNFLOW_NOTEBOOK_IDLE_SECONDS, else 3600).",
        show_default=False,
    ),
    cpu: float | None = typer.Option(None, "--cpu", help="vCPUs (recorded for the node; local: shared)."),
    memory: int | None = typer.Option(None, "--memory", help="MiB (recorded for the node; local: shared)."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    remote: bool = RemoteOption,
    node: str | None = NodeOption,
    node_url: str | None = NodeUrlOption,
    stack: str | None = StackOption,
):
    """Start a Jupyter server on 127.0.0.1 in a processor's sandbox; prints its URL with the token.
    With --remote, a session on the node (a Fargate task; open it with `pennflow notebook connect`)."""
    from pydantic import ValidationError

    target = NodeTarget(remote, node, node_url, stack)
    if target.chosen:
        from pennflow.cli import notebook_remote

        return notebook_remote.start(
            target, layers=layer, dataset=dataset, packages=package, cpu=cpu, memory=memory, as_json=as_json
        )

    from pennflow.engine.home import PennflowHome
    from pennflow.notebooks.session import (
        NotebookError,
        SessionFailed,
        SessionRequest,
        idle_timeout_setting,
        start_session,
    )

    try:
        idle_timeout = idle_timeout_setting() if idle_timeout is None else idle_timeout
    except NotebookError as exc:
        raise fail(str(exc)) from None
    try:
        request = SessionRequest(
            layers=layer,
            dataset_id=dataset,
            package_ids=package,
            idle_timeout_seconds=idle_timeout,
            cpu=cpu,
            memory_mib=memory,
        )
    except ValidationError as exc:
        raise fail(_validation_message(exc)) from None
    home = PennflowHome.resolve()
    try:
        state = start_session(home, request)
    except NotebookError as exc:
        raise fail(str(exc), EXIT_RUN_FAILED if isinstance(exc, SessionFailed) else EXIT_INVALID) from None
    files = state.files
    if as_json:
        print(json.dumps({"runId": state.run_id, "url": state.url, "workDir": str(files.work)}))
        return
    echo(f"session {state.run_id} STARTED (Python {state.python_version})")
    echo(f"  url:      {state.url}")
    echo(f"  work dir: {files.work}")
    echo(f"  layers:   {', '.join(sorted(state.layers)) or '(none)'}")
    echo(f"  stop:     pennflow notebook stop {state.run_id}  (idle timeout {idle_timeout} s)")


@notebook_app.command("stop")
def stop(
    run_id: str = typer.Argument(..., help="The session's run id.", show_default=False),
    remote: bool = RemoteOption,
    node: str | None = NodeOption,
    node_url: str | None = NodeUrlOption,
    stack: str | None = StackOption,
):
    """Stop a session: kernels shut down, the working area's files are kept."""
    target = NodeTarget(remote, node, node_url, stack)
    if target.chosen:
        from pennflow.cli import notebook_remote

        return notebook_remote.stop(target, run_id)
    from pennflow.engine.home import PennflowHome
    from pennflow.notebooks.session import NotebookError, SessionFailed, find_session, stop_session

    home = PennflowHome.resolve()
    try:
        step = stop_session(home, run_id)
    except NotebookError as exc:
        raise fail(str(exc), EXIT_RUN_FAILED if isinstance(exc, SessionFailed) else EXIT_INVALID) from None
    state = find_session(home, run_id)
    kept = f": files kept in {state.files.work}" if state is not None else ""
    echo(f"session {run_id} {step.status.value} ({step.reason}){kept}")


@notebook_app.command("connect")
def connect(
    run_id: str = typer.Argument(..., help="The session's run id (on the node).", show_default=False),
    port: int | None = typer.Option(
        None, "--port", min=1, max=65535, help="Local port (default: a free one).", show_default=False
    ),
    wait: float = typer.Option(
        120.0, "--wait", min=0.0, help="Seconds to wait for the session's task to run."
    ),
    node: str | None = NodeOption,
    node_url: str | None = NodeUrlOption,
    stack: str | None = StackOption,
):
    """Open a node session through SSM port forwarding and print its local URL with the token."""
    from pennflow.cli import notebook_remote

    code = notebook_remote.connect_session(
        NodeTarget(True, node, node_url, stack), run_id, local_port=port, wait_seconds=wait
    )
    raise typer.Exit(code)


def _validation_message(exc) -> str:
    names = {
        "layers": "--layer",
        "dataset_id": "--dataset",
        "package_ids": "--package",
        "idle_timeout_seconds": "--idle-timeout",
        "memory_mib": "--memory",
    }
    parts = []
    for error in exc.errors():
        loc = [str(p) for p in error["loc"]]
        if not loc:  # a rule across options says which ones itself
            parts.append(error["msg"].removeprefix("Value error, "))
            continue
        option = names.get(loc[0], f"--{loc[0]}") if loc else "value"
        parts.append(f"{option}: {error['msg']}" + (f" (got {error['input']!r})" if "input" in error else ""))
    return "; ".join(parts)
