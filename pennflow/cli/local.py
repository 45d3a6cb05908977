"""``pennflow run | runs | status | logs | cancel | rerun``: runs on this machine, in the local run store.

The engine, the store and rich are imported by the command that uses them, not by this module. With
``--remote`` (or ``--node``/``--node-url``) each command hands over to its remote form in
``cli.remote_runs`` before opening anything here.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from pathlib import Path

import typer

from pennflow.cli.definitions import FileArg, load_or_exit, pydantic_plugins_off
from pennflow.cli.output import (
    EXIT_INVALID,
    EXIT_OK,
    EXIT_RUN_FAILED,
    LazyConsole,
    echo,
    fail,
    parse_params,
    print_json,
    print_lines,
    print_steps,
)
from pennflow.cli.remote import NodeOption, NodeTarget, NodeUrlOption, RemoteOption, StackOption
from pennflow.cli.sessions import sessions_of_runs, with_session
from pennflow.node.address import ENV_NODE_URL
from pennflow.workflow.status import Status

out = LazyConsole(emoji=False)  # paths and reasons as they are (a ":name:" in one is no emoji)

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
        help="Run processors with an image in docker or podman (default: when `docker info`, else "
        "`podman info`, works), or their command.",
        show_default=False,
    ),
    allow_cpu: bool = typer.Option(
        False,
        "--allow-cpu",
        help="Run computeType gpu processors on the CPU when this machine cannot give them a GPU "
        "(no NVIDIA GPU, or no container runtime); without it such a run is refused.",
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
    workflow = load_or_exit(file)
    overrides = parse_params(param)
    _execute(
        workflow,
        as_json,
        definition_dir=file.resolve().parent,
        input_dir=input_dir,
        params=overrides,
        layers=layer,
        max_parallel=max_parallel,
        docker=containers,
        allow_cpu=allow_cpu,
        dataset_id=dataset,
        package_ids=packages,
        publish=publish,
        notify=notify,
    )


def _execute(workflow, as_json: bool, notify: str | None = None, **arguments) -> None:
    """Run ``workflow`` with ``run_workflow``'s ``arguments``, showing progress, then the summary; exit."""
    import sqlite3

    # pennflow's models use no pydantic plugin (``definitions.load``): none is looked for while the run
    # builds them (the engine's, as it is imported; the store's, on first use).
    with pydantic_plugins_off():
        from pennflow.engine.home import PennflowHome
        from pennflow.engine.local import InvalidRunInput, result_dirs, run_workflow
        from pennflow.engine.progress import RUN_SUMMARY_ROWS, format_seconds, make_progress

        home = PennflowHome.resolve()
        store = _open_store(home)
        cancel_event = threading.Event()
        reporter = None if as_json else make_progress(out.unwrap(), workflow)
        reporter = with_session(workflow, home, reporter, arguments.get("layers", ()), out)
        try:
            with _cancel_on_signals(cancel_event):
                record = run_workflow(
                    workflow,
                    home=home,
                    store=store,
                    reporter=reporter,
                    cancel_event=cancel_event,
                    **arguments,
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
    print_steps(
        out, steps, title=f"{record.workflow}  {record.run_id}", rows=RUN_SUMMARY_ROWS, resource_use=True
    )
    _print_cost(record)
    duration = format_seconds(_seconds(record.started_at, record.finished_at))
    if code == EXIT_OK:
        out.print(f"[green]SUCCEEDED[/] run {record.run_id} in {duration}", highlight=False)
        print_lines(out, [f"results: {path}" for path in results])
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
    remote: bool = RemoteOption,
    node: str | None = NodeOption,
    node_url: str | None = NodeUrlOption,
    stack: str | None = StackOption,
):
    """List runs, newest first (local ones; the deployed node's with --remote)."""
    target = NodeTarget(remote, node, node_url, stack)
    if target.chosen:
        from pennflow.cli.remote_runs import remote_runs

        return remote_runs(target, workflow, status, limit, cursor, as_json)
    from pennflow.engine.home import PennflowHome
    from pennflow.engine.orphans import settled_runs
    from pennflow.engine.progress import runs_table

    home = PennflowHome.resolve()
    store = _open_store(home)
    try:
        page = store.list_runs(workflow=workflow, status=status, limit=limit, cursor=cursor)
        page = type(page)(settled_runs(store, page.runs), page.cursor)  # runs whose engine is gone end
    except ValueError as exc:
        raise fail(f"--cursor: {exc}") from None
    finally:
        store.close()
    sessions = sessions_of_runs(home, page.runs)
    if as_json:
        runs = [{**r.model_dump(mode="json"), **sessions.get(r.run_id, {})} for r in page.runs]
        print_json({"runs": runs, "cursor": page.cursor})
        return
    if not page.runs:
        echo("no runs" + (" match" if workflow or status or cursor else " yet") + f" in {_home_named(home)}")
        return
    out.print(runs_table(page.runs, {run_id: session["kind"] for run_id, session in sessions.items()}))
    for run_id, session in sessions.items():
        if session.get("sessionUrl"):
            out.print(
                f"session {run_id}: {session['sessionUrl']}", highlight=False, markup=False, soft_wrap=True
            )
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
    remote: bool = RemoteOption,
    node: str | None = NodeOption,
    node_url: str | None = NodeUrlOption,
    stack: str | None = StackOption,
):
    """A run and each of its processors: status, attempts, exit code, start, duration, reason.

    Runs started here are read from the local store; with --remote, --node or --node-url (or when the
    run is not local and PENNFLOW_NODE_URL is set) the deployed node is asked.
    """
    import os
    import time

    from pennflow.cli.remote import show_remote_status
    from pennflow.engine.home import PennflowHome

    target = NodeTarget(remote, node, node_url, stack)
    store = _open_store(PennflowHome.resolve())
    try:
        local = None if target.chosen else store.get_run(run_id)
        if local is None and (target.chosen or os.environ.get(ENV_NODE_URL)):
            store.close()
            show_remote_status(target, run_id, watch, max(interval, 1.0), as_json)
            return
        record = _run_or_exit(store, run_id)
        home = PennflowHome.resolve()
        while True:
            steps = store.list_steps(run_id)
            session = sessions_of_runs(home, [record], steps).get(run_id)
            _show_status(record, steps, as_json, session)
            if not watch or record.status.is_terminal:
                break
            time.sleep(interval)
            record = _run_or_exit(store, run_id)
    finally:
        store.close()
    if watch and record.status is not Status.SUCCEEDED:
        raise typer.Exit(EXIT_RUN_FAILED)


def _show_status(record, steps, as_json: bool, session: dict | None = None) -> None:
    from rich.text import Text

    from pennflow.engine.progress import format_seconds, format_time, status_text

    if as_json:
        print_json({**_run_json(record, steps), **(session or {})})
        return
    duration = format_seconds(_seconds(record.started_at, record.finished_at))
    header = Text.assemble(
        f"run {record.run_id}: {record.workflow} ",
        status_text(record.status),
        f", created {format_time(record.created_at)}, duration {duration}",
        f", a rerun of {record.rerun_of}" if record.rerun_of else "",
    )
    out.print(header, highlight=False, soft_wrap=True)
    if session is not None:
        url = session.get("sessionUrl")
        where = f"running at {url}" if url else "not running"
        out.print(f"notebook session: {where}", highlight=False, markup=False, soft_wrap=True)
    if record.reason:
        out.print(record.reason, highlight=False, markup=False, soft_wrap=True)
    for earlier in record.history:  # a resumed run (`pennflow resume`): the attempts before this one
        ended = f": {earlier.reason}" if earlier.reason else ""
        out.print(f"attempt {earlier.attempt}: {earlier.status.value}{ended}", highlight=False, markup=False)
    if record.history:
        reused = ", ".join(step.processor_id for step in steps if step.reused) or "nothing"
        out.print(f"attempt {record.attempt} (now): reused {reused}", highlight=False, markup=False)
    print_steps(out, steps, resource_use=True)
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
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new lines until the run ends."),
    interval: float = typer.Option(
        1.0, "--interval", min=0.1, help="Seconds between polls with --follow (at least 2 with --remote)."
    ),
    remote: bool = RemoteOption,
    node: str | None = NodeOption,
    node_url: str | None = NodeUrlOption,
    stack: str | None = StackOption,
):
    """Print the log of each processor of a run (every attempt, each after a header line)."""
    target = NodeTarget(remote, node, node_url, stack)
    if target.chosen:
        from pennflow.cli.remote_runs import remote_logs

        return remote_logs(target, run_id, processor, follow, max(interval, 2.0))
    from pennflow.engine.home import PennflowHome

    home = PennflowHome.resolve()
    store = _open_store(home)
    try:
        _run_or_exit(store, run_id)
        steps = _chosen_steps(store.list_steps(run_id), run_id, processor)
        if follow:
            from pennflow.cli.follow import follow_local_logs

            return follow_local_logs(store, home, run_id, steps, interval)
    finally:
        store.close()
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


def rerun(
    run_id: str = RunArg,
    max_parallel: int | None = typer.Option(
        None,
        "--max-parallel",
        min=1,
        help="Most processes at once (default: the CPU count).",
        show_default=False,
    ),
    containers: bool | None = typer.Option(
        None, "--containers/--no-containers", help="As for `pennflow run`.", show_default=False
    ),
    as_json: bool = typer.Option(False, "--json", help="No progress; print the final run as JSON."),
    watch: bool = typer.Option(
        False, "--watch", help="With --remote: follow the new run until it ends (exit 1 unless it succeeded)."
    ),
    remote: bool = RemoteOption,
    node: str | None = NodeOption,
    node_url: str | None = NodeUrlOption,
    stack: str | None = StackOption,
):
    """Start a new run of a run's workflow with the same inputs, params and layers (recorded rerun_of).

    Here it runs to the end like `pennflow run` (exit 0 succeeded, 1 failed); on the node (--remote) it
    is accepted and runs there (follow it with `pennflow status NEW_RUN --remote --watch`).
    """
    target = NodeTarget(remote, node, node_url, stack)
    if target.chosen:
        from pennflow.cli.remote_runs import remote_rerun

        return remote_rerun(target, run_id, as_json, watch)
    from pennflow.engine.home import PennflowHome
    from pennflow.engine.rerun import RerunRefused, load_request, rerun_arguments

    home = PennflowHome.resolve()
    store = _open_store(home)
    try:
        original = _run_or_exit(store, run_id)
    finally:
        store.close()
    try:
        request, workflow = load_request(home, run_id, original.definition_hash)
    except RerunRefused as exc:
        raise fail(str(exc)) from None
    if not as_json:
        echo(f"rerun of {run_id} ({workflow.name})")
    _execute(
        workflow,
        as_json,
        **rerun_arguments(request),
        max_parallel=max_parallel,
        docker=containers,
        rerun_of=run_id,
    )


def _chosen_steps(steps, run_id: str, processor: str | None):
    if processor is None:
        return steps
    chosen = [step for step in steps if step.processor_id == processor]
    if not chosen:
        names = ", ".join(step.processor_id for step in steps)
        raise fail(f"run {run_id} has no processor {processor!r} (processors: {names})")
    return chosen


def cancel(
    run_id: str = RunArg,
    remote: bool = RemoteOption,
    node: str | None = NodeOption,
    node_url: str | None = NodeUrlOption,
    stack: str | None = StackOption,
):
    """Ask a running run to stop: its engine terminates the processors and ends it CANCELED."""
    target = NodeTarget(remote, node, node_url, stack)
    if target.chosen:
        from pennflow.cli.remote_runs import remote_cancel

        return remote_cancel(target, run_id)
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
        from pennflow.engine.home import PennflowHome

        raise fail(f"no run {run_id!r} in {_home_named(PennflowHome.resolve())} (see `pennflow runs`)")
    return settled(store, record) if settle else record  # a run whose engine is gone ends first


def _home_named(home) -> str:
    """Where the local runs were looked for, so that a wrong or unset PENNFLOW_HOME shows."""
    return f"PENNFLOW_HOME {home.root}"


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
