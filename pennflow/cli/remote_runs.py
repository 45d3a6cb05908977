"""The remote forms of ``runs``, ``logs``, ``cancel``, ``rerun`` and ``results``: the node's API, signed.

The local commands (``cli.local``, ``cli.results``) hand over here when given ``--remote``, ``--node``
or ``--node-url``; every call goes through ``cli.remote.call_node``, so errors read the same everywhere.
"""

from __future__ import annotations

import gzip
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import typer

from pennflow.cli.output import EXIT_OK, EXIT_RUN_FAILED, echo, fail, print_json
from pennflow.cli.remote import NodeTarget, call_node, connect, remote_errors

if TYPE_CHECKING:
    from pennflow.node.client import NodeClient

WATCH_SECONDS = 10.0  # as `status --remote --watch`


def remote_runs(
    target: NodeTarget, workflow: str | None, status: Any, limit: int, cursor: str | None, as_json: bool
) -> None:
    query = {
        "workflow": workflow,
        "status": getattr(status, "value", status),
        "limit": limit,
        "cursor": cursor,
    }
    page = call_node(target, lambda client: client.list_runs(**query))
    if as_json:
        print_json(page)
        return
    runs = page.get("runs", [])
    if not runs:
        echo("no runs" + (" match" if workflow or status or cursor else " yet") + " on the node")
        return
    echo(f"{'RUN':<40} {'WORKFLOW':<24} {'STATUS':<12} CREATED")
    for run in runs:
        failed = f"  ({run['failedProcessor']} failed)" if run.get("failedProcessor") else ""
        echo(
            f"{run.get('runId', '?'):<40} {run.get('workflow', '?'):<24} {run.get('status', '?'):<12} "
            f"{run.get('createdAt', '')}{failed}"
        )
    if page.get("cursor"):
        echo(f"more: pennflow runs --remote --limit {limit} --cursor {page['cursor']}")


def remote_cancel(target: NodeTarget, run_id: str) -> None:
    accepted = call_node(target, lambda client: client.cancel(run_id))
    echo(f"cancel requested: run {accepted.get('runId', run_id)} on the node is {accepted.get('status')}")


def remote_rerun(target: NodeTarget, run_id: str, as_json: bool, watch: bool = False) -> None:
    from pennflow.cli.remote import follow_run

    with remote_errors():
        client = connect(target)
        accepted = client.rerun(run_id)
    if as_json and not watch:
        print_json(accepted)
        return
    echo(f"run {accepted['runId']} accepted ({accepted.get('workflow')}), a rerun of {run_id}")
    if accepted.get("consoleUrl"):
        echo(f"execution: {accepted['consoleUrl']}")
    if watch:
        raise typer.Exit(follow_run(client, accepted["runId"], WATCH_SECONDS, as_json))


# ------------------------------------------------------------------ logs


def remote_logs(
    target: NodeTarget,
    run_id: str,
    processor: str | None,
    follow: bool,
    interval: float,
    sleep: Callable[[float], None] | None = None,
) -> None:
    """Archived logs (downloaded and unzipped) once the run ended, else live events, page after page
    until caught up; --follow then polls every ``interval`` until the run has ended and all was read."""
    with remote_errors():
        client = connect(target)
        page = client.logs(run_id, processor)
        if page["source"] == "archive":
            _print_archives(client, page["archives"], many=processor is None)
            raise typer.Exit(_exit_for(page["status"]) if follow else EXIT_OK)
        printer = _EventPrinter(many=processor is None)
        if not follow and not page["events"]:
            echo(f"no log events yet for run {run_id} ({page['status']}); --follow waits for them", err=True)
        while True:
            printer.print(page["events"])
            token = page.get("nextToken")
            if token is None or not (follow or page["events"]):
                break  # the run ended and all was read; or, without --follow, caught up
            if not page["events"]:  # caught up: wait for more
                (sleep or time.sleep)(interval)
            page = client.logs(run_id, processor, token)
    if follow:
        raise typer.Exit(_exit_for(page["status"]))


class _EventPrinter:
    def __init__(self, many: bool) -> None:
        self.many = many
        self.current: str | None = None

    def print(self, events: list[Mapping[str, Any]]) -> None:
        for event in events:
            if self.many and event.get("processorId") != self.current:
                self.current = event.get("processorId")
                sys.stdout.write(f"==> {self.current} <==\n")
            sys.stdout.write(f"{event.get('timestamp', '')} {event.get('message', '')}\n")
        sys.stdout.flush()


def _print_archives(client: NodeClient, archives: list[Mapping[str, Any]], many: bool) -> None:
    for archive in archives:
        if many or len(archives) > 1:
            task = PurePosixPath(archive["key"]).name.removesuffix(".log.gz")
            sys.stdout.write(f"==> {archive['processorId']} ({task}) <==\n")
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "log.gz"
            client.download(archive["url"], path)
            try:
                with gzip.open(path, "rt", encoding="utf-8", errors="replace") as log:
                    for chunk in iter(lambda log=log: log.read(1 << 16), ""):
                        sys.stdout.write(chunk)
            except (OSError, EOFError) as exc:
                raise fail(f"the archived log {archive['key']} is not readable gzip: {exc}") from None
    sys.stdout.flush()


def _exit_for(status: str) -> int:
    return EXIT_OK if status == "SUCCEEDED" else EXIT_RUN_FAILED


# ------------------------------------------------------------------ results


def remote_results(target: NodeTarget, run_id: str, to: Path | None, as_json: bool) -> None:
    """List the run's result objects, or download them into ``to`` (the same relative paths)."""
    with remote_errors():
        client = connect(target)
        objects = list(_result_objects(client, run_id))
        if to is None:
            if as_json:
                print_json({"runId": run_id, "objects": [_listed(o) for o in objects]})
                return
            if not objects:
                echo(f"run {run_id} has no results on the node yet")
                return
            for item in objects:
                echo(f"{item['sizeBytes']:>12,}  {item['path']}")
            echo(f"{len(objects)} object(s); download them with --to DIR")
            return
        total = 0
        for item in objects:
            destination = safe_destination(to, item["path"])
            if destination is None:
                echo(f"skipped {item['path']!r}: it would land outside {to}", err=True)
                continue
            destination.parent.mkdir(parents=True, exist_ok=True)
            total += client.download(item["url"], destination)
    if as_json:
        print_json({"runId": run_id, "to": str(to), "objects": len(objects), "bytes": total})
        return
    echo(f"downloaded {len(objects)} object(s), {total:,} bytes, to {to}")


def _result_objects(client: NodeClient, run_id: str) -> Iterator[dict[str, Any]]:
    cursor = None
    while True:
        page = client.results(run_id, cursor)
        yield from page.get("objects", [])
        cursor = page.get("cursor")
        if not cursor:
            return


def _listed(item: Mapping[str, Any]) -> dict[str, Any]:
    return {k: item.get(k) for k in ("path", "key", "sizeBytes", "lastModified")}


def safe_destination(root: Path, relative: str) -> Path | None:
    """``root/relative``, or None when ``relative`` would leave ``root`` (absolute, ``..``)."""
    parts = PurePosixPath(relative).parts
    if not parts or PurePosixPath(relative).is_absolute() or any(p in ("..", "") for p in parts):
        return None
    return root.joinpath(*parts)
