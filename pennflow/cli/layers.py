"""``pennflow layers ...``: named folders mounted read-only into the runs that ask for them.

Exit codes: 0 done, 1 a build or populate ran and failed, 2 invalid input or a refusal (no such
layer, bad name, in use). Errors are one precise message, never a traceback.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from pennflow.cli.output import EXIT_INVALID, EXIT_RUN_FAILED, CommandGroup, LazyConsole, compact_table, echo
from pennflow.cli.remote import NodeOption, NodeTarget, NodeUrlOption, RemoteOption, StackOption

if TYPE_CHECKING:  # the layers service, its models and rich are imported by the commands using them
    from datetime import datetime

    from pennflow.layers.cost import LayerPrices
    from pennflow.layers.models import LayerRecord, LayerStatus

layers_app = typer.Typer(
    name="layers",
    help="Layers: reusable folders (Python environments, reference data) mounted read-only into runs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    cls=CommandGroup,
)
out = LazyConsole()

NameArg = typer.Argument(..., help="Layer name (lower-case letters, digits, '-').", show_default=False)
JsonOpt = typer.Option(False, "--json", help="Machine-readable output.")


@contextlib.contextmanager
def _layers() -> Iterator:
    from pydantic import ValidationError

    from pennflow.engine.home import PennflowHome
    from pennflow.layers.models import LayerBuildFailed, LayerError
    from pennflow.layers.service import LocalLayers

    layers = LocalLayers.open(PennflowHome.resolve())
    try:
        yield layers
    except LayerBuildFailed as exc:
        _error(exc)
        raise typer.Exit(EXIT_RUN_FAILED) from None
    except (LayerError, OSError) as exc:
        _error(exc)
        raise typer.Exit(EXIT_INVALID) from None
    except ValidationError as exc:
        _error("; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors()))
        raise typer.Exit(EXIT_INVALID) from None
    finally:
        layers.close()


def _error(exc: BaseException | str) -> None:
    echo("error:", style="bold red", rest=f" {exc}", err=True)


@layers_app.command("list")
def list_layers(
    as_json: bool = JsonOpt,
    for_notebooks: bool = typer.Option(
        False, "--for-notebooks", help="Only layers a notebook session can mount (same Python version)."
    ),
    remote: bool = RemoteOption,
    node: str | None = NodeOption,
    node_url: str | None = NodeUrlOption,
    stack: str | None = StackOption,
):
    """Every layer with its status, size, storage tier and estimated monthly cost."""
    target = NodeTarget(remote, node, node_url, stack)
    if target.chosen:
        from pennflow.cli import remote_layers

        if for_notebooks:  # the node's notebook image decides the Python, so the node filters
            from pennflow.cli.notebook_remote import list_layers as notebook_layers

            return notebook_layers(target, as_json)
        return remote_layers.list_layers(target, as_json)
    from rich import filesize

    prices = _prices()
    with _layers() as layers:
        records = layers.list()
    if for_notebooks:
        from pennflow.notebooks.environments import for_notebooks as fitting
        from pennflow.notebooks.environments import session_python

        records = fitting(records, session_python())
    if as_json:
        out.print_json(json.dumps([_summary(r, prices) for r in records]))
        return
    if not records:
        out.print("no layers yet: `pennflow layers create NAME --type data|python-env`")
        return
    table = compact_table(  # files: see `layers show`; the name gets the room left on 80 columns
        [
            ("layer", "left"), ("type", "left"), ("status", "left"), ("ver", "right"), ("size", "right"),
            ("tier", "left"), ("$/month", "right"), ("last used", "left"), ("runs", "right"),
        ],
        wraps=("layer",),
        title="Layers",
    )  # fmt: skip
    for record in records:
        row = _summary(record, prices)
        table.add_row(
            record.name,
            record.type.value,
            _status(record.status),
            str(record.version or "-"),
            filesize.decimal(record.size_bytes),
            row["storageClass"],
            f"${row['monthlyCostUsd']:.2f}",
            _when(record.last_accessed_at, short=True),
            str(len(record.refs) or ""),
        )
    out.print(table)


@layers_app.command()
def create(
    name: str = NameArg,
    layer_type: str = typer.Option(..., "--type", help="data | python-env | r-env", show_default=False),
    requirements: Path | None = typer.Option(None, "--requirements", help="requirements.txt (python-env)."),
    description: str = typer.Option("", "--description", help="What the layer holds."),
    build: bool = typer.Option(True, "--build/--no-build", help="Build a python-env layer right away."),
    remote: bool = RemoteOption,
    node: str | None = NodeOption,
    node_url: str | None = NodeUrlOption,
    stack: str | None = StackOption,
):
    """Create a layer; a python-env layer is built from its requirements at once (on the node, in the
    background: see `layers show NAME --remote`)."""
    text = None
    if requirements is not None:
        try:
            text = requirements.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            _error(f"--requirements: cannot read {requirements}: {getattr(exc, 'strerror', None) or exc}")
            raise typer.Exit(EXIT_INVALID) from None
    target = NodeTarget(remote, node, node_url, stack)
    if target.chosen:
        from pennflow.cli import remote_layers

        return remote_layers.create(target, name, layer_type, text, description)
    from pennflow.layers.models import LayerType

    with _layers() as layers:
        record = layers.create(name, layer_type, description=description, requirements=text)
        out.print(
            f"created {record.type.value} layer [bold]{name}[/] ({record.status.value})", highlight=False
        )
        if record.type is LayerType.PYTHON_ENV and build:
            _build(layers, name)


@layers_app.command("build")
def build_layer(
    name: str = NameArg,
    remote: bool = RemoteOption,
    node: str | None = NodeOption,
    node_url: str | None = NodeUrlOption,
    stack: str | None = StackOption,
):
    """Build a python-env layer again from its requirements (a new version)."""
    target = NodeTarget(remote, node, node_url, stack)
    if target.chosen:
        from pennflow.cli import remote_layers

        return remote_layers.build(target, name)
    with _layers() as layers:
        _build(layers, name)


@layers_app.command()
def populate(
    name: str = NameArg,
    source: Path | None = typer.Option(
        None, "--from", help="Folder to copy into the layer (here).", show_default=False
    ),
    dataset: str | None = typer.Option(
        None, "--dataset", help="Pennsieve dataset to fill it from (with --remote).", show_default=False
    ),
    packages: list[str] = typer.Option(
        [], "--package", help="Only this package of --dataset (repeatable).", show_default=False
    ),
    remote: bool = RemoteOption,
    node: str | None = NodeOption,
    node_url: str | None = NodeUrlOption,
    stack: str | None = StackOption,
):
    """Fill a data layer as a new version: from a folder here (created if it does not exist), or on the
    node from a Pennsieve dataset (--remote --dataset ID)."""
    target = NodeTarget(remote, node, node_url, stack)
    if target.chosen:
        from pennflow.cli import remote_layers

        return remote_layers.populate(target, name, dataset, packages, source)
    if source is None:
        _error("--from: give the folder to copy into the layer (--dataset is for --remote)")
        raise typer.Exit(EXIT_INVALID)
    from rich import filesize

    with _layers() as layers:
        record = layers.populate_from(name, source)
    out.print(
        f"[green]READY[/] {name} version {record.version}: {record.file_count:,} files, "
        f"{filesize.decimal(record.size_bytes)}",
        highlight=False,
    )


@layers_app.command()
def show(
    name: str = NameArg,
    as_json: bool = JsonOpt,
    remote: bool = RemoteOption,
    node: str | None = NodeOption,
    node_url: str | None = NodeUrlOption,
    stack: str | None = StackOption,
):
    """One layer in detail, with the packages of an environment."""
    target = NodeTarget(remote, node, node_url, stack)
    if target.chosen:
        from pennflow.cli import remote_layers

        return remote_layers.show(target, name, as_json)
    from rich import filesize
    from rich.table import Table

    from pennflow.engine.home import PennflowHome

    prices = _prices()
    with _layers() as layers:
        record = layers.get(name)
    summary = _summary(record, prices)
    if as_json:
        detail = {
            **summary,
            "pythonVersion": record.python_version,
            "requirements": record.requirements,
            "packages": [p.model_dump() for p in record.packages],
            "error": record.error,
            "inUseBy": sorted(record.refs),
            "path": str(PennflowHome.resolve().layer_dir(name)),
        }
        out.print_json(json.dumps(detail))
        return
    grid = Table.grid(padding=(0, 2))
    for label, value in (
        ("name", record.name), ("type", record.type.value), ("status", _status(record.status)),
        ("description", record.description or "-"), ("version", str(record.version)),
        ("size", f"{filesize.decimal(record.size_bytes)} in {record.file_count:,} files"),
        ("checksum", record.checksum or "-"), ("tier", summary["storageClass"]),
        ("monthly cost", f"${summary['monthlyCostUsd']:.2f}"), ("python", record.python_version or "-"),
        ("created", f"{_when(record.created_at)} by {record.created_by or '?'}"),
        ("last access", _when(record.last_accessed_at)),
        ("in use by", ", ".join(sorted(record.refs)) or "-"),
        ("path", str(PennflowHome.resolve().layer_dir(name))),
    ):  # fmt: skip
        grid.add_row(f"[bold]{label}[/]", value)
    out.print(grid)
    if record.error:
        echo("last build failed:", style="bold red", err=True)
        echo(record.error, err=True)
    if record.packages:
        packages = Table("Package", "Version", title=f"{len(record.packages)} packages", title_justify="left")
        for package in record.packages:
            packages.add_row(package.name, package.version)
        out.print(packages)


@layers_app.command()
def delete(
    name: str = NameArg,
    remote: bool = RemoteOption,
    node: str | None = NodeOption,
    node_url: str | None = NodeUrlOption,
    stack: str | None = StackOption,
):
    """Delete a layer and its files (refused while an active run uses it)."""
    target = NodeTarget(remote, node, node_url, stack)
    if target.chosen:
        from pennflow.cli import remote_layers

        return remote_layers.delete(target, name)
    with _layers() as layers:
        layers.delete(name, is_active=_run_is_active)
    out.print(f"deleted layer {name}", highlight=False)


# ------------------------------------------------------------------ helpers


def _build(layers, name: str) -> None:
    from rich import filesize

    out.print(f"building {name} (pip install --target ...)", highlight=False)
    record = layers.build(name)
    out.print(
        f"[green]READY[/] {name} version {record.version}: {len(record.packages)} packages, "
        f"{filesize.decimal(record.size_bytes)} (Python {record.python_version})",
        highlight=False,
    )


def _run_is_active(run_id: str) -> bool:
    from pennflow.engine.home import PennflowHome
    from pennflow.engine.orphans import settled
    from pennflow.stores.sqlite import SqliteRunStore

    with SqliteRunStore(PennflowHome.resolve().db_path) as store:
        run = store.get_run(run_id)
        run = settled(store, run) if run is not None else None  # its engine gone: the run ends now
    return run is not None and not run.status.is_terminal


def _prices() -> LayerPrices:
    from pennflow.layers.cost import LayerPrices

    try:
        return LayerPrices.from_env()
    except ValueError as exc:
        _error(exc)
        raise typer.Exit(EXIT_INVALID) from None


def _summary(record: LayerRecord, prices: LayerPrices) -> dict:
    from pennflow.layers.cost import layer_storage

    storage, cost = layer_storage(record, prices)
    return {
        "name": record.name,
        "type": record.type.value,
        "description": record.description,
        "status": record.status.value,
        "version": record.version,
        "sizeBytes": record.size_bytes,
        "fileCount": record.file_count,
        "checksum": record.checksum,
        "storageClass": storage.value,
        "monthlyCostUsd": round(cost, 6),
        "lastAccessedAt": record.last_accessed_at.isoformat() if record.last_accessed_at else None,
        "createdAt": record.created_at.isoformat(),
        "createdBy": record.created_by,
        "activeRuns": len(record.refs),
    }


def _status(status: LayerStatus) -> str:
    colour = {"READY": "green", "BUILDING": "yellow", "FAILED": "red"}.get(status.value, "dim")
    return f"[{colour}]{status.value}[/]"


def _when(moment: datetime | None, short: bool = False) -> str:
    return moment.astimezone().strftime("%m-%d %H:%M" if short else "%Y-%m-%d %H:%M") if moment else "never"
