"""``pennflow results RUN [--to DIR]``: where a run's results are, or a copy of them.

Locally a run's results are its processors' output folders (``$PENNFLOW_HOME/runs/<run_id>/<processor>/
output/``, DESIGN §4): listed, or copied to ``DIR/<processor>/``. On the node (``--remote``) they are the
run's objects in the results bucket: listed, or downloaded to ``DIR`` through presigned URLs.
"""

from __future__ import annotations

from pathlib import Path

import typer

from pennflow.cli.output import echo, fail, print_json
from pennflow.cli.remote import NodeOption, NodeTarget, NodeUrlOption, RemoteOption, StackOption


def results(
    run_id: str = typer.Argument(..., help="Run id (see `pennflow runs`).", show_default=False),
    to: Path | None = typer.Option(
        None, "--to", help="Copy (download, with --remote) the results into this folder.", show_default=False
    ),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable."),
    remote: bool = RemoteOption,
    node: str | None = NodeOption,
    node_url: str | None = NodeUrlOption,
    stack: str | None = StackOption,
):
    """List a run's results, or copy them into a folder with --to (the node's with --remote)."""
    target = NodeTarget(remote, node, node_url, stack)
    if target.chosen:
        from pennflow.cli.remote_runs import remote_results

        return remote_results(target, run_id, to, as_json)
    from pennflow.cli.local import _open_store, _run_or_exit
    from pennflow.engine.home import PennflowHome
    from pennflow.workflow.contract import RunLayout

    home = PennflowHome.resolve()
    store = _open_store(home)
    try:
        _run_or_exit(store, run_id)
        steps = store.list_steps(run_id)
    finally:
        store.close()
    layout = RunLayout(home.run_dir(run_id))
    folders = {s.processor_id: layout.output_dir(s.processor_id) for s in steps}
    present = {pid: path for pid, path in folders.items() if path.is_dir() and any(path.iterdir())}
    if to is None:
        if as_json:
            print_json({"runId": run_id, "outputs": {pid: str(path) for pid, path in present.items()}})
            return
        if not present:
            echo(f"run {run_id} has no results yet (no processor wrote to its output folder)")
        for pid, path in present.items():
            echo(f"{pid:<24} {path}")
        return
    copied = _copy_outputs(present, to)
    if as_json:
        print_json({"runId": run_id, "to": str(to), "files": copied})
        return
    echo(f"copied {copied} file(s) of {len(present)} processor(s) to {to}")


def _copy_outputs(outputs: dict[str, Path], to: Path) -> int:
    import shutil

    copied = 0
    try:
        for pid, source in outputs.items():
            destination = to / pid
            shutil.copytree(source, destination, dirs_exist_ok=True, symlinks=True)
            copied += sum(1 for path in source.rglob("*") if not path.is_dir())
    except (OSError, shutil.Error) as exc:
        raise fail(f"--to {to}: cannot copy the results: {exc}") from None
    return copied
