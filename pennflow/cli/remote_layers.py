"""The remote forms of ``pennflow layers ...``: the node's ``/layers`` routes, signed (``cli.remote``).

On the node a python-env build and a dataset populate run as background jobs: the commands print that
the job was accepted and the version it will publish; ``layers show NAME --remote`` follows it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pennflow.cli.output import echo, fail, print_json
from pennflow.cli.remote import NodeTarget, call_node

_COLUMNS = (("name", 24), ("type", 11), ("status", 10), ("version", 8), ("sizeBytes", 14), ("activeRuns", 6))


def list_layers(target: NodeTarget, as_json: bool) -> None:
    layers = call_node(target, lambda client: client.list_layers()).get("layers", [])
    if as_json:
        print_json(layers)
        return
    if not layers:
        echo("no layers on the node yet: `pennflow layers create NAME --type data|python-env --remote`")
        return
    echo(" ".join(f"{label.upper():<{width}}" for label, width in _COLUMNS) + " MONTHLY")
    for layer in layers:
        cells = " ".join(f"{layer.get(label, '')!s:<{width}}" for label, width in _COLUMNS)
        echo(f"{cells} ${layer.get('monthlyCostUsd', 0):.2f}")


def create(
    target: NodeTarget, name: str, layer_type: str, requirements: str | None, description: str
) -> None:
    body: dict[str, Any] = {"name": name, "type": layer_type, "description": description}
    if requirements is not None:
        body["requirements"] = requirements
    layer = call_node(target, lambda client: client.create_layer(body))
    building = (
        " (building on the node: `pennflow layers show NAME --remote`)"
        if layer.get("status") == "BUILDING"
        else ""
    )
    echo(f"created {layer.get('type')} layer {name} on the node ({layer.get('status')}){building}")


def build(target: NodeTarget, name: str) -> None:
    _accepted(call_node(target, lambda client: client.build_layer(name)), "build")


def populate(
    target: NodeTarget, name: str, dataset: str | None, packages: Sequence[str], source: Path | None
) -> None:
    if source is not None:
        raise fail(
            "--from: a node fills a layer from a Pennsieve dataset, not a local folder: give --dataset ID"
        )
    if not dataset:
        raise fail("--dataset: give the Pennsieve dataset the node fills the layer from")
    _accepted(call_node(target, lambda client: client.populate_layer(name, dataset, packages)), "populate")


def show(target: NodeTarget, name: str, as_json: bool) -> None:
    layer = call_node(target, lambda client: client.get_layer(name))
    if as_json:
        print_json(layer)
        return
    for label in ("name", "type", "status", "description", "version", "sizeBytes", "fileCount", "checksum",
                  "storageClass", "monthlyCostUsd", "pythonVersion", "createdAt", "createdBy",
                  "lastAccessedAt"):  # fmt: skip
        echo(f"{label:<16} {layer.get(label) if layer.get(label) not in (None, '') else '-'}")
    echo(f"{'inUseBy':<16} {', '.join(layer.get('inUseBy') or []) or '-'}")
    if layer.get("error"):
        echo("last build failed:", style="bold red", err=True)
        echo(layer["error"], err=True)
    for package in layer.get("packages") or []:
        echo(f"  {package.get('name')}=={package.get('version')}")


def delete(target: NodeTarget, name: str) -> None:
    call_node(target, lambda client: client.delete_layer(name))
    echo(f"deleted layer {name} on the node")


def _accepted(job: Mapping[str, Any], what: str) -> None:
    echo(
        f"{what} of layer {job.get('name')} accepted on the node: version {job.get('version')} "
        f"({job.get('status')}); follow it with `pennflow layers show {job.get('name')} --remote`"
    )
