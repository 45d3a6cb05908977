"""``pennflow run | runs | status | logs | cancel``: runs on this machine, in the local run store.

The engine, the store and rich are imported by the command that uses them, not by this module.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from pathlib import Path

import typer

from pennflow.cli.definitions import FileArg, load_or_exit
from pennflow.cli.output import (
    EXIT_INVALID,
    EXIT_OK,
    EXIT_RUN_FAILED,
    LazyConsole,
    echo,
    fail,
    parse_params,
    print_json,
)
from pennflow.cli.remote import NodeUrlOption, StackOption
from pennflow.node.address import ENV_NODE_URL
from pennflow.workflow.status import Status

out = LazyConsole()

RunArg = typer.Argument(..., help="Run id (see `pennflow runs`).", show_default=False)


def run(
    file: Path = FileArg,
    input_dir: Path | None = typer.Option(
        None, "--input", help="Folder whose files the data source(s) receive.", show_default=False
    ),
    dataset: str | None = typer.Option(
        None,
        "--dataset",
        help="Pennsieve dataset id whose files the data source(s) download (credentials: "
        "PENNSIEVE_API_KEY/PENNSIEVE_API_SECRET or ~/.pennsieve/config.ini).",
        show_default=False,
    ),
    packages: list[str] = typer.Option(
        [],
        "--package",
        help="Only this package (or folder) of --dataset (repeatable).",
        show_default=False,
    ),
    publish: bool = typer.Option(
        False,
        "--publish",
        help="Data targets also publish their results: s3 to $PENNFLOW_RESULTS_BUCKET, "
        "Pennsieve Dataset through the upload service.",
    ),
    param: list[str] = typer.Option(
        [],
        "--param",
        help="KEY=VALUE or PROCESSOR.KEY=VALUE over defaultParams (repeatable).",
        show_default=False,
    ),
    layer: list[str] = typer.Option(
        [],
        "--layer",
        help="A READY layer (see `pennflow layers list`) mounted read-only into every processor (repeatable).",
        show_default=False,
    ),
    max_parallel: int | None = typer.Option(
        None,
        "--max-parallel",
        min=1,
        help="Most processes at once (default: the CPU count).",
        show_default=False,
    ),
    containers: bool | None = typer.Option(
        None,
        "--containers/--no-containers",
        help="Run processors with an image in docker (default: when `docker info` works), or their command.",
        show_default=False,
    ),
    as_json: bool = typer.Option(False, "--json", help="No progress; print the final run as JSON."),
    notify: str | None = typer.Option(
        None,
        "--notify",
        help="A shell command run when the run ends, given the run's end as JSON on stdin (the fields a "
        "node's notifications carry).",
        show_default=False,
    ),
):
    """Run a workflow on this machine: exit 0 when it succeeded, 1 when it failed or was canceled."""
    import sqlite3

    from pennflow.engine.home import PennflowHome
    from pennflow.engine.local import InvalidRunInput, result_dirs, run_workflow
    from pennflow.engine.progress import RUN_SUMMARY_ROWS, format_seconds, make_progress, steps_table

    workflow = load_or_exit(file)
    overrides = parse_params(param)
    home = PennflowHome.resolve()
    store = _open_store(home)
    cancel_event = threading.Event()
    reporter = None if as_json else make_progress(out.unwrap(), workflow)
    try:
        with _cancel_on_signals(cancel_event):
            record = run_workflow(
                workflow,
                definition_dir=file.resolve().parent,
                input_dir=input_dir,
                params=overrides,
                layers=layer,
                max_parallel=max_parallel,
                home=home,
                store=store,
                reporter=reporter,
                cancel_event=cancel_event,
                docker=containers,
                dataset_id=dataset,
                package_ids=packages,
                publish=publish,
            )
        record, steps = _with_estimate(store, workflow, record, home)
    except InvalidRunInput as exc:
        echo("error:", style="bold red", rest=" the run cannot start:", err=True)
        for problem in exc.problems:
            echo(f"  - {problem}", err=True)
        raise typer.Exit(EXIT_INVALID) from None
    except (sqlite3.Error, OSError) as exc:  # the run store or PENNFLOW_HOME, not the workflow
        raise fail(f"the run stopped: {exc}", EXIT_RUN_FAILED) from None
    finally:
        if reporter is not None:
            reporter.close()
        store.close()
    results = [str(path) for path in result_dirs(workflow, home.run_dir(record.run_id))]
    code = EXIT_OK if record.status is Status.SUCCEEDED else EXIT_RUN_FAILED
    if notify:
        _notify(notify, record)
    if as_json:
        print_json({**_run_json(record, steps), "results": results})
        raise typer.Exit(code)
    out.print(
        steps_table(
            steps, title=f"{record.workflow}  {record.run_id}", rows=RUN_SUMMARY_ROWS, resource_use=True
        )
    )
    _print_cost(record)
    duration = format_seconds(_seconds(record.started_at, record.finished_at))
    if code == EXIT_OK:
        out.print(f"[green]SUCCEEDED[/] run {record.run_id} in {duration}", highlight=False)
        for path in results:
            out.print(f"results: {path}", highlight=False, markup=False, soft_wrap=True)
    else:
        out.print(f"[bold red]{record.status.value}[/] run {record.run_id} after {duration}", highlight=False)
        out.print(record.reason or "", highlight=False, markup=False, soft_wrap=True)
        target = f" {record.failed_processor}" if record.failed_processor else ""
        out.print(
            f"logs: pennflow logs {record.run_id}{target}", highlight=False, markup=False, soft_wrap=True
        )
    raise typer.Exit(code)


def runs_(
    workflow: str | None = typer.Option(
        None, "--workflow", help="Only this workflow's runs.", show_default=False
    ),
    status: Status | None = typer.Option(
        None, "--status", case_sensitive=False, help="Only runs in this status."
    ),
    limit: int = typer.Option(20, "--limit", min=1, max=1000, help="Runs per page."),
    cursor: str | None = typer.Option(
        None, "--cursor", help="Next page: the cursor a --json page gave.", show_default=False
    ),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable, with the next page's cursor."),
):
    """List local runs, newest first."""
    from pennflow.engine.home import PennflowHome
    from pennflow.engine.orphans import settled_runs
    from pennflow.engine.progress import runs_table

    store = _open_store(PennflowHome.resolve())
    try:
        page = store.list_runs(workflow=workflow, status=status, limit=limit, cursor=cursor)
        page = type(page)(settled_runs(store, page.runs), page.cursor)  # runs whose engine is gone end
    except ValueError as exc:
        raise fail(f"--cursor: {exc}") from None
    finally:
        store.close()
    if as_json:
        print_json({"runs": [r.model_dump(mode="json") for r in page.runs], "cursor": page.cursor})
        return
    if not page.runs:
        echo("no runs" + (" match" if workflow or status or cursor else " yet"))
        return
    out.print(runs_table(page.runs))
    if page.cursor:
        out.print(
            f"more: pennflow runs --limit {limit} --cursor {page.cursor}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )


def status(
    run_id: str = RunArg,
    as_json: bool = typer.Option(False, "--json", help="Machine-readable."),
    watch: bool = typer.Option(
        False, "--watch", help="Follow the run until it ends (exit 1 unless it succeeded)."
    ),
    interval: float = typer.Option(2.0, "--interval", min=0.2, help="Seconds between polls with --watch."),
    remote: bool = typer.Option(False, "--remote", help="Ask the deployed node (SigV4-signed)."),
    node: str | None = NodeUrlOption,
    stack: str = StackOption,
):
    """A run and each of its processors: status, attempts, exit code, start, duration, reason.

    Runs started here are read from the local store; with --remote or --node-url (or when the run is
    not local and PENNFLOW_NODE_URL is set) the deployed node is asked.
    """
    import os
    import time

    from pennflow.cli.remote import remote_status_command
    from pennflow.engine.home import PennflowHome

    store = _open_store(PennflowHome.resolve())
    try:
        local = None if (remote or node) else store.get_run(run_id)
        if local is None and (remote or node or os.environ.get(ENV_NODE_URL)):
            store.close()
            remote_status_command(run_id, watch, max(interval, 1.0), node, stack, as_json)
            return
        record = _run_or_exit(store, run_id)
        while True:
            _show_status(record, store.list_steps(run_id), as_json)
            if not watch or record.status.is_terminal:
                break
            time.sleep(interval)
            record = _run_or_exit(store, run_id)
    finally:
        store.close()
    if watch and record.status is not Status.SUCCEEDED:
        raise typer.Exit(EXIT_RUN_FAILED)


def _show_status(record, steps, as_json: bool) -> None:
    from rich.text import Text

    from pennflow.engine.progress import format_seconds, format_time, status_text, steps_table

    if as_json:
        print_json(_run_json(record, steps))
        return
    duration = format_seconds(_seconds(record.started_at, record.finished_at))
    header = Text.assemble(
        f"run {record.run_id}: {record.workflow} ",
        status_text(record.status),
        f", created {format_time(record.created_at)}, duration {duration}",
    )
    out.print(header, highlight=False, soft_wrap=True)
    if record.reason:
        out.print(record.reason, highlight=False, markup=False, soft_wrap=True)
    out.print(steps_table(steps, resource_use=True))
    _print_cost(record)


def _with_estimate(store, workflow, record, home):
    """Keep, in the run's record, what the run would cost on a node (labelled an estimate), and the
    definition beside its files (what `pennflow report` draws)."""
    from pennflow.engine.resource_use import estimate_on_node
    from pennflow.report.data import keep_definition

    steps = store.list_steps(record.run_id)
    run_dir = home.run_dir(record.run_id)
    keep_definition(workflow, run_dir)
    estimate = estimate_on_node(workflow, steps, run_dir)
    cost = estimate.model_dump(mode="json", by_alias=True)
    store.update_run(record.run_id, cost=cost)
    return record.model_copy(update={"cost": cost}), steps


def _notify(command: str, record) -> None:
    """Run the --notify command with the run's end on stdin; its failure is said, never the run's."""
    import subprocess

    from pennflow.workflow.run_end import RunEnded

    body = RunEnded.of(record).model_dump_json(by_alias=True)
    try:
        done = subprocess.run(command, shell=True, input=body, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        echo(f"warning: the --notify command did not finish: {exc}", err=True)
        return
    if done.returncode != 0:
        echo(f"warning: the --notify command exited {done.returncode}", err=True)


def _print_cost(record) -> None:
    from pennflow.workflow.cost import summary_lines

    for line in summary_lines(record.cost, indent="  "):
        out.print(line, highlight=False, markup=False, soft_wrap=True)


def logs(
    run_id: str = RunArg,
    processor: str | None = typer.Argument(None, help="Only this processor's log.", show_default=False),
):
    """Print the log of each processor of a run (every attempt, each after a header line)."""
    from pennflow.engine.home import PennflowHome

    home = PennflowHome.resolve()
    store = _open_store(home)
    try:
        _run_or_exit(store, run_id)
        steps = store.list_steps(run_id)
    finally:
        store.close()
    if processor is not None:
        chosen = [step for step in steps if step.processor_id == processor]
        if not chosen:
            names = ", ".join(step.processor_id for step in steps)
            raise fail(f"run {run_id} has no processor {processor!r} (processors: {names})")
        steps = chosen
    for step in steps:
        if len(steps) > 1:
            sys.stdout.write(f"==> {step.processor_id} ({step.status.value}) <==\n")
        path = Path(step.log_path) if step.log_path else home.log_path(run_id, step.processor_id)
        if not path.is_file():
            sys.stdout.write("(no log: the processor did not start)\n")
            continue
        with open(path, encoding="utf-8", errors="replace") as log:
            for chunk in iter(lambda log=log: log.read(1 << 16), ""):
                sys.stdout.write(chunk)
    sys.stdout.flush()


def cancel(run_id: str = RunArg):
    """Ask a running run to stop: its engine terminates the processors and ends it CANCELED."""
    from pennflow.engine.home import PennflowHome

    store = _open_store(PennflowHome.resolve())
    try:
        _run_or_exit(store, run_id, settle=False)
        if store.update_run(run_id, Status.CANCELING):
            ended = _run_or_exit(store, run_id)
            if ended.status.is_terminal:  # its engine was gone: nothing else would end it
                echo(f"run {run_id} {ended.status.value} at once: {ended.reason}")
                return
            echo(f"cancel requested: run {run_id} stops within a second or so")
            return
        current = store.get_run(run_id)
    finally:
        store.close()
    if current is not None and current.status is Status.CANCELING:
        echo(f"cancel already requested for run {run_id}")
        return
    state = current.status.value if current else "gone"
    raise fail(f"run {run_id} has already ended ({state}): nothing to cancel", EXIT_RUN_FAILED)


def _open_store(home):
    import sqlite3

    from pennflow.stores.sqlite import SqliteRunStore

    try:
        return SqliteRunStore(home.db_path)
    except (sqlite3.Error, OSError) as exc:
        raise fail(f"cannot open the run store {home.db_path}: {exc}") from None


def _run_or_exit(store, run_id: str, settle: bool = True):
    from pennflow.engine.orphans import settled

    record = store.get_run(run_id)
    if record is None:
        raise fail(f"no run {run_id!r} here (see `pennflow runs`)")
    return settled(store, record) if settle else record  # a run whose engine is gone ends first


def _run_json(record, steps) -> dict:
    processors = [
        {**step.model_dump(mode="json"), "duration_seconds": step.duration_seconds} for step in steps
    ]
    return {"run": record.model_dump(mode="json"), "processors": processors}


def _seconds(started, finished) -> float | None:
    return (finished - started).total_seconds() if started and finished else None


@contextlib.contextmanager
def _cancel_on_signals(cancel_event: threading.Event):
    """Ctrl-C (or SIGTERM, or closing the terminal) cancels the run cleanly: processors are terminated."""

    def request_cancel(signum, frame):
        if not cancel_event.is_set():
            echo("canceling the run: terminating its processors", err=True)
        cancel_event.set()

    previous = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            previous[sig] = signal.signal(sig, request_cancel)
    except ValueError:  # not the main thread: no signal handling, the caller cancels
        pass
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
