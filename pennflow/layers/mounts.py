"""Resolving the layers a run asked for into pinned versions, and releasing them when it ends.

A run mounts each layer's current version (its own folder locally, its own EFS access point on
AWS) and keeps that version for its whole life, whatever re-populate happens meanwhile. The
reference a run holds is what keeps the version from being garbage-collected or deleted.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from pennflow.layers.models import (
    InvalidLayerName,
    LayerRecord,
    LayerStatus,
    LayersUnavailable,
    LayerType,
    check_layer_name,
)
from pennflow.layers.registry import LayerRegistry
from pennflow.layers.storage import LocalLayerStorage
from pennflow.workflow.contract import LAYERS_MOUNT
from pennflow.workflow.runs import utcnow

ACQUIRE_ATTEMPTS = 50  # a re-populate may publish between reading a record and referencing its version;
# each attempt is two registry calls, and only a stream of publishes faster than that exhausts them


@dataclass(frozen=True)
class LayerMount:
    """One requested layer, pinned: what a processor mounts at ``/mnt/layers/<name>``."""

    name: str
    type: LayerType
    version: int
    checksum: str | None
    path: str  # locally the version's folder; on AWS the mount point in the container
    access_point_arn: str | None = None

    @property
    def access_point_id(self) -> str | None:
        return self.access_point_arn.rsplit("/", 1)[-1] if self.access_point_arn else None

    def run_entry(self) -> dict[str, str]:
        """What ``RunRecord.layers`` keeps, so a rerun can ask for the same version."""
        return {"name": self.name, "version": str(self.version), "checksum": self.checksum or ""}


def resolve_layers(
    names: Iterable[str],
    registry: LayerRegistry,
    *,
    run_id: str | None = None,
    storage: LocalLayerStorage | None = None,
    now: datetime | None = None,
) -> list[LayerMount]:
    """Each named layer's current version, or LayersUnavailable naming every missing or unusable one.

    With ``run_id`` the run holds a reference to each version until ``release_layers``; either way
    each layer's last access is recorded. Nothing is referenced when any layer is unavailable.
    """
    now = now or utcnow()
    wanted = list(dict.fromkeys(names))
    problems = []
    for name in wanted:
        try:
            check_layer_name(name)
        except InvalidLayerName as exc:
            problems.append(str(exc))
            continue
        problem = unavailable_reason(name, registry.get(name))
        if problem:
            problems.append(problem)
    if problems:
        raise LayersUnavailable(problems)

    mounts: list[LayerMount] = []
    try:
        for name in wanted:
            mounts.append(_acquire(name, registry, run_id, now, storage))
    except LayersUnavailable:
        if run_id is not None:
            release_layers([m.name for m in mounts], registry, run_id)
        raise
    return mounts


def release_layers(names: Iterable[str], registry: LayerRegistry, run_id: str) -> None:
    for name in dict.fromkeys(names):
        registry.remove_ref(name, run_id)


def _acquire(
    name: str, registry: LayerRegistry, run_id: str | None, now: datetime, storage: LocalLayerStorage | None
) -> LayerMount:
    for _ in range(ACQUIRE_ATTEMPTS):
        record = registry.get(name)
        problem = unavailable_reason(name, record)
        if problem:
            raise LayersUnavailable([problem])
        assert record is not None
        if run_id is None:
            acquired = registry.update(name, last_accessed_at=now, updated_at=record.updated_at)
        else:
            acquired = registry.add_ref(name, run_id, record.version, now)
        if acquired:
            return _mount(record, storage)
    raise LayersUnavailable([f"layer {name!r} changed {ACQUIRE_ATTEMPTS} times while being mounted; retry"])


def _mount(record: LayerRecord, storage: LocalLayerStorage | None) -> LayerMount:
    path = storage.version_dir(record.name, record.version) if storage else LAYERS_MOUNT / record.name
    return LayerMount(
        name=record.name,
        type=record.type,
        version=record.version,
        checksum=record.checksum,
        path=str(path),
        access_point_arn=record.access_point_arn,
    )


def unavailable_reason(name: str, record: LayerRecord | None) -> str | None:
    """Why a run cannot mount this layer now (None when it can): one rule for submit time and run time."""
    if record is None:
        return f"layer {name!r} not found"
    if record.mountable:
        return None
    if record.status is LayerStatus.FAILED:
        first = (record.error or "").strip().splitlines()[-1:] or ["no details"]
        return f"layer {name!r} is FAILED (its last build failed: {first[0]}); build or populate it again"
    if record.status is LayerStatus.BUILDING:
        return f"layer {name!r} is BUILDING its first version; wait until it is READY"
    how = "populate it first" if record.type is not LayerType.PYTHON_ENV else "build it first"
    return f"layer {name!r} is {record.status.value}: {how}"


def run_layer_names(entries: Sequence[dict[str, str]]) -> list[str]:
    """The layer names a run record (or a rerun request) carries."""
    return [entry["name"] for entry in entries if entry.get("name")]
