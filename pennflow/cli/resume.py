"""``pennflow resume RUN``: continue a FAILED or CANCELED run, reusing the steps that are unchanged.

Locally the engine runs the run's next attempt (``pennflow.engine.resume``); with ``--remote`` the
node does (``POST /runs/{id}/resume``: Step Functions redrive). Exit 0 when the run then succeeds,
1 when it fails again, 2 when it cannot be resumed.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from urllib.parse import quote

import typer

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
from pennflow.cli.sessions import with_session
from pennflow.workflow.status import Status

out = LazyConsole()


def resume_command(
    run_id: str = typer.Argument(..., help="The run to continue (see `pennflow runs`).", show_default=False),
    definition: Path | None = typer.Option(
        None,
        "--definition",
        help="A changed definition to continue with (default: the one the run ran); its processors "
        "that changed run again, with every processor after them.",
        show_default=False,
    ),
    param: list[str] = typer.Option(
        [],
        "--param",
        help="KEY=VALUE or PROCESSOR.KEY=VALUE replacing the run's value (repeatable).",
        show_default=False,
    ),
    containers: bool | None = typer.Option(
        None,
        "--containers/--no-containers",
        help="Run processors with an image in docker, or their command (default: as the run did).",
        show_default=False,
    ),
    remote: bool = typer.Option(False, "--remote", help="The run is on the deployed node: redrive it there."),
    node: str | None = NodeUrlOption,
    stack: str = StackOption,
    as_json: bool = typer.Option(False, "--json", help="No progress; print the final run as JSON."),
) -> None:
    """Continue a FAILED or CANCELED run as the same run: unchanged steps that succeeded are reused."""
    if remote or node:
        if definition is not None or param:
            raise fail("--definition and --param are for local runs: a node's run resumes as it was defined")
        _resume_remote(run_id, node, stack, as_json)
        return
    _resume_local(run_id, definition, parse_params(param), containers, as_json)


def _resume_local(
    run_id: str, definition: Path | None, overrides: dict[str, str], containers: bool | None, as_json: bool
) -> None:
    import sqlite3

    from pydantic import ValidationError

    from pennflow.cli.definitions import load_or_exit
    from pennflow.cli.local import _cancel_on_signals, _open_store, _run_json
    from pennflow.cli.output import print_steps
    from pennflow.engine.home import PennflowHome
    from pennflow.engine.local import InvalidRunInput, result_dirs
    from pennflow.engine.progress import RUN_SUMMARY_ROWS, make_progress
    from pennflow.engine.resume import ResumeRefused, resumable_run, resume_run
    from pennflow.engine.run_spec import load_spec
    from pennflow.stores.base import StoreConflict

    workflow = load_or_exit(definition) if definition is not None else None
    home = PennflowHome.resolve()
    store = _open_store(home)
    cancel_event = threading.Event()
    reporter = None
    try:
        resumable_run(store, run_id)  # refused before any display starts
        spec = load_spec(home, run_id)
        shown = workflow or (spec.workflow() if spec is not None else None)
        if not as_json and shown is not None:
            reporter = make_progress(out.unwrap(), shown)
        if shown is not None:  # a notebook workflow's session: checked, its URL said again
            reporter = with_session(shown, home, reporter, spec.run_layers if spec is not None else (), out)
        with _cancel_on_signals(cancel_event):
            record = resume_run(
                run_id,
                store=store,
                home=home,
                workflow=workflow,
                definition_dir=definition.resolve().parent if definition is not None else None,
                overrides=overrides,
                reporter=reporter,
                cancel_event=cancel_event,
                docker=containers,
            )
        steps = store.list_steps(run_id)
    except (ResumeRefused, StoreConflict, ValidationError) as exc:
        raise fail(str(exc)) from None
    except InvalidRunInput as exc:
        echo("error:", style="bold red", rest=" the run cannot resume:", err=True)
        for problem in exc.problems:
            echo(f"  - {problem}", err=True)
        raise typer.Exit(EXIT_INVALID) from None
    except (sqlite3.Error, OSError) as exc:
        raise fail(f"the run stopped: {exc}", EXIT_RUN_FAILED) from None
    finally:
        if reporter is not None:
            reporter.close()
        store.close()
    code = EXIT_OK if record.status is Status.SUCCEEDED else EXIT_RUN_FAILED
    reused = [step.processor_id for step in steps if step.reused]
    if as_json:
        ran = workflow or shown
        results = [str(path) for path in result_dirs(ran, home.run_dir(run_id))] if ran else []
        print_json({**_run_json(record, steps), "reused": reused, "results": results})
        raise typer.Exit(code)
    title = f"{record.workflow}  {record.run_id}  attempt {record.attempt}"
    print_steps(out, steps, title=title, rows=RUN_SUMMARY_ROWS, resource_use=True)
    for earlier in record.history:
        ended = f": {earlier.reason}" if earlier.reason else ""
        echo(f"attempt {earlier.attempt}: {earlier.status.value}{ended}")
    echo(f"attempt {record.attempt}: {record.status.value}; reused: {', '.join(reused) or 'nothing'}")
    if code != EXIT_OK:
        target = f" {record.failed_processor}" if record.failed_processor else ""
        echo(record.reason or "")
        echo(f"logs: pennflow logs {record.run_id}{target}")
    raise typer.Exit(code)


def _resume_remote(run_id: str, node: str | None, stack: str, as_json: bool) -> None:
    from pennflow.node.client import NodeClient, RemoteError, node_url

    try:
        client = NodeClient(node_url(node, stack=stack))
        answer = client.request("POST", f"/runs/{quote(run_id, safe='')}/resume", body={})
    except RemoteError as exc:
        raise fail("\n".join(exc.lines()), EXIT_INVALID if exc.is_client_error else EXIT_RUN_FAILED) from None
    if as_json:
        echo(json.dumps(answer, indent=2))
        return
    echo(f"run {run_id} resumed (attempt {answer.get('attempt')}): {answer.get('status')}")
    if answer.get("reused"):
        echo(f"not run again (SUCCEEDED before): {', '.join(answer['reused'])}")
    echo(f"follow it: pennflow status {run_id} --remote --watch")
