"""``pennflow report RUN [--remote] [-o FILE]``: one self-contained HTML report of a run."""

from __future__ import annotations

from pathlib import Path

import typer

from pennflow.cli.output import EXIT_INVALID, EXIT_RUN_FAILED, echo, fail
from pennflow.cli.remote import NodeUrlOption, StackOption

LAST = "last"


def report_command(
    run_id: str = typer.Argument(
        ..., help="Run id (see `pennflow runs`); `last` is the latest local run.", show_default=False
    ),
    output: Path | None = typer.Option(
        None,
        "-o",
        "--output",
        help="Where to write the HTML (default: report-<run id>.html here).",
        show_default=False,
    ),
    remote: bool = typer.Option(False, "--remote", help="A run of the deployed node (SigV4-signed)."),
    node: str | None = NodeUrlOption,
    stack: str = StackOption,
) -> None:
    """Write a run's report: one HTML file to open anywhere or send to a colleague.

    Its DAG coloured by status, a timeline of every attempt, durations, exit codes, CPU, peak memory
    and cost per processor, failures with log tails, provenance and the cost breakdown.
    """
    from pennflow.report.render import render_html

    report = _remote_report(run_id, node, stack) if (remote or node) else _local_report(run_id)
    target = output or Path(f"report-{report.run_id}.html")
    try:
        target.write_text(render_html(report), encoding="utf-8")
    except OSError as exc:
        raise fail(f"cannot write {target}: {exc.strerror or exc}", EXIT_INVALID) from None
    echo(f"report: {target}")


def _local_report(run_id: str):
    from pennflow.cli.local import _open_store, _run_or_exit
    from pennflow.engine.home import PennflowHome
    from pennflow.report.data import from_local, kept_definition, log_tail

    home = PennflowHome.resolve()
    store = _open_store(home)
    try:
        if run_id == LAST:
            latest = store.list_runs(limit=1).runs
            if not latest:
                raise fail("no local runs yet: `pennflow run` one first", EXIT_INVALID)
            run_id = latest[0].run_id
        run = _run_or_exit(store, run_id)
        steps = store.list_steps(run_id)
    finally:
        store.close()

    def tail_of(processor_id: str) -> tuple[list[str], str | None]:
        path = home.log_path(run_id, processor_id)
        return log_tail(path), str(path)

    return from_local(run, steps, kept_definition(home.run_dir(run_id)), tail_of)


def _remote_report(run_id: str, node: str | None, stack: str):
    from pennflow.node.client import NodeClient, RemoteError, node_url
    from pennflow.report.data import from_remote

    try:
        client = NodeClient(node_url(node, stack=stack))
        run = client.get_run(run_id)
    except RemoteError as exc:
        raise fail("\n".join(exc.lines()), EXIT_INVALID if exc.is_client_error else EXIT_RUN_FAILED) from None
    try:
        definition = client.request("GET", f"/workflows/{run['workflow']}")
    except RemoteError:
        definition = None  # unregistered since: the report draws the steps alone
    return from_remote(run, definition)
