"""What users do with layers (create, build, populate, delete), on any registry; and the local
service that also owns the folders (the CLI and the local engine use it).

Registry-level steps are functions so the AWS API can use them with the DynamoDB registry while
the build itself runs elsewhere (the ``layer_build`` processor as an ECS task).
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pennflow.layers import build as builder
from pennflow.layers.models import (
    MAX_ERROR,
    InvalidLayerRequest,
    LayerBuildFailed,
    LayerConflict,
    LayerError,
    LayerExists,
    LayerInUse,
    LayerNotFound,
    LayerRecord,
    LayerStatus,
    LayerType,
    Package,
    check_layer_name,
)
from pennflow.layers.mounts import LayerMount, release_layers, resolve_layers
from pennflow.layers.registry import LayerRegistry
from pennflow.layers.storage import LocalLayerStorage
from pennflow.workflow.runs import utcnow

# A build still BUILDING after this long is taken to have died; a new build may take over.
STALE_BUILD_AFTER = timedelta(hours=6)
REQUIREMENTS_NAME = "requirements.txt"

# ------------------------------------------------------------------ registry-level steps


def new_layer(
    name: str,
    layer_type: LayerType | str,
    *,
    description: str = "",
    requirements: str | None = None,
    created_by: str | None = None,
) -> LayerRecord:
    """A validated EMPTY record (not stored)."""
    check_layer_name(name)
    try:
        layer_type = LayerType(layer_type)
    except ValueError:
        choices = ", ".join(t.value for t in LayerType)
        raise InvalidLayerRequest(f"type: expected one of {choices}, got {layer_type!r}", "type") from None
    if layer_type is LayerType.PYTHON_ENV and not (requirements or "").strip():
        raise InvalidLayerRequest(
            "requirements: a python-env layer needs a requirements.txt to build from", "requirements"
        )
    if layer_type is not LayerType.PYTHON_ENV and requirements:
        raise InvalidLayerRequest(
            f"requirements: only python-env layers are built from requirements, not {layer_type.value}",
            "requirements",
        )
    return LayerRecord(
        name=name, type=layer_type, description=description, requirements=requirements, created_by=created_by
    )


def get_layer(registry: LayerRegistry, name: str) -> LayerRecord:
    check_layer_name(name)
    record = registry.get(name)
    if record is None:
        raise LayerNotFound(name)
    return record


def begin_build(
    registry: LayerRegistry, name: str, *, kind: LayerType | None = None, now: datetime | None = None
) -> LayerRecord:
    """Move the layer to BUILDING (one build at a time); the record as it was before."""
    record = get_layer(registry, name)
    if kind is not None:
        _check_action(record, kind)
    now = now or utcnow()
    started = registry.transition(
        name,
        LayerStatus.BUILDING,
        expect_version=record.version,
        stale_before=now - STALE_BUILD_AFTER,
        build_started_at=now,
        error=None,
    )
    if not started:
        current = get_layer(registry, name)
        if current.status is LayerStatus.BUILDING:
            since = (
                current.build_started_at.isoformat(timespec="seconds") if current.build_started_at else "?"
            )
            raise LayerConflict(f"layer {name!r} is already BUILDING (since {since}); wait for it to finish")
        raise LayerConflict(f"layer {name!r} changed while starting the build; retry")
    return record


def finish_build(
    registry: LayerRegistry,
    name: str,
    previous_version: int,
    *,
    stats: builder.TreeStats,
    python_version: str | None = None,
    packages: Iterable[dict[str, str]] = (),
    access_points: dict[str, str] | None = None,
    now: datetime | None = None,
) -> int:
    """Publish the new version in the registry (BUILDING -> READY); returns it."""
    version = previous_version + 1
    fields: dict[str, Any] = {
        "version": version,
        "size_bytes": stats.size_bytes,
        "file_count": stats.file_count,
        "checksum": stats.checksum,
        "python_version": python_version,
        "packages": [Package(**p) for p in packages],
        "built_at": now or utcnow(),
        "error": None,
    }
    if access_points is not None:
        fields["access_points"] = access_points
    if not registry.transition(name, LayerStatus.READY, expect_version=previous_version, **fields):
        raise LayerConflict(f"layer {name!r} changed during the build (another build finished first)")
    return version


def fail_build(registry: LayerRegistry, name: str, error: str) -> bool:
    return registry.transition(name, LayerStatus.FAILED, error=error[-MAX_ERROR:])


def delete_layer(
    registry: LayerRegistry, name: str, *, is_active: Callable[[str], bool] | None = None
) -> LayerRecord:
    """Remove the record, refused while an active run references the layer or a build runs.

    ``is_active`` tells whether a referencing run is still running; references of runs that ended
    without releasing them (a crash) are dropped first.
    """
    record = get_layer(registry, name)
    if is_active is not None:
        for run_id in list(record.refs):
            if not is_active(run_id):
                registry.remove_ref(name, run_id)
    if registry.delete(name):
        return record
    current = get_layer(registry, name)
    if current.refs:
        raise LayerInUse(name, list(current.refs))
    if current.status is LayerStatus.BUILDING:
        raise LayerConflict(f"layer {name!r} is BUILDING; delete it when the build has finished")
    raise LayerConflict(f"layer {name!r} changed while being deleted; retry")


def _check_action(record: LayerRecord, kind: LayerType) -> None:
    """``kind`` is PYTHON_ENV for a build, DATA for a populate."""
    if kind is LayerType.PYTHON_ENV and record.type is not LayerType.PYTHON_ENV:
        raise InvalidLayerRequest(
            f"layer {record.name!r} is a {record.type.value} layer: fill it with populate, not build", "type"
        )
    if kind is not LayerType.PYTHON_ENV and record.type is LayerType.PYTHON_ENV:
        raise InvalidLayerRequest(
            f"layer {record.name!r} is a python-env layer: build it from its requirements, not populate",
            "type",
        )


# ------------------------------------------------------------------ the local service


class LocalLayers:
    """Layers on this machine: the SQLite registry plus the folders under ``$PENNFLOW_HOME/layers``."""

    def __init__(self, registry: LayerRegistry, storage: LocalLayerStorage, *, user: str | None = None):
        self.registry = registry
        self.storage = storage
        self.user = user or _current_user()

    @classmethod
    def open(cls, home: Any) -> LocalLayers:
        """From a :class:`pennflow.engine.home.PennflowHome` (the registry shares the run store's file)."""
        from pennflow.layers.sqlite import SqliteLayerRegistry

        return cls(SqliteLayerRegistry(home.db_path), LocalLayerStorage(home.layers_dir))

    def close(self) -> None:
        close = getattr(self.registry, "close", None)
        if close:
            close()

    def __enter__(self) -> LocalLayers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- reads

    def get(self, name: str) -> LayerRecord:
        return get_layer(self.registry, name)

    def list(self) -> list[LayerRecord]:
        return self.registry.list()

    # ---------------------------------------------------------------- writes

    def create(
        self,
        name: str,
        layer_type: LayerType | str,
        *,
        description: str = "",
        requirements: str | None = None,
    ) -> LayerRecord:
        record = new_layer(
            name, layer_type, description=description, requirements=requirements, created_by=self.user
        )
        self.registry.create(record)
        return record

    def build(self, name: str) -> LayerRecord:
        """Build a python-env layer from its requirements (pip with this interpreter); the new record.

        A failed build is recorded (FAILED, pip's last lines) and raised as LayerBuildFailed."""
        before = begin_build(self.registry, name, kind=LayerType.PYTHON_ENV)
        return self._produce(before, self._pip_install)

    def populate_from(self, name: str, source: str | os.PathLike[str], *, create: bool = True) -> LayerRecord:
        """Fill a data layer with a copy of ``source`` as a new version (created as a data layer if new)."""
        folder = Path(source)
        if not folder.is_dir():
            raise InvalidLayerRequest(f"--from: {folder} is not a folder", "from")
        if create and self.registry.get(check_layer_name(name)) is None:
            # Created meanwhile by someone else: populate it all the same.
            with contextlib.suppress(LayerExists):
                self.create(name, LayerType.DATA, description=f"populated from {folder.name}")
        before = begin_build(self.registry, name, kind=LayerType.DATA)
        return self._produce(before, lambda record, staging: _copy_into(folder, staging))

    def delete(self, name: str, *, is_active: Callable[[str], bool] | None = None) -> LayerRecord:
        record = delete_layer(self.registry, name, is_active=is_active)
        self.storage.remove(name)
        return record

    # ---------------------------------------------------------------- runs

    def mount(self, names: Iterable[str], run_id: str | None = None) -> list[LayerMount]:
        """Resolve and reference the run's layers (LayersUnavailable names each problem)."""
        return resolve_layers(names, self.registry, run_id=run_id, storage=self.storage)

    def release(self, names: Iterable[str], run_id: str) -> None:
        """Drop the run's references, then the versions nobody needs any more."""
        names = list(names)
        release_layers(names, self.registry, run_id)
        for name in names:
            self.collect_garbage(name)

    def collect_garbage(self, name: str) -> list[int]:
        record = self.registry.get(name)
        if record is None:
            return []
        # Versions from the current one up are in use or being published right now: never collect them.
        return self.storage.collect_garbage(name, record.referenced_versions(), below=record.version)

    # ---------------------------------------------------------------- internals

    def _produce(
        self,
        before: LayerRecord,
        fill: Callable[[LayerRecord, Path], builder.BuildResult | builder.TreeStats],
    ) -> LayerRecord:
        name = before.name
        staging = None
        try:
            staging = self.storage.new_staging(name)
            outcome = fill(before, staging)
            result = (
                outcome
                if isinstance(outcome, builder.BuildResult)
                else builder.BuildResult(True, "", stats=outcome)
            )
            if not result.ok:
                raise _BuildFailed(result.error or "build failed")
            assert result.stats is not None
            published = self.storage.publish(name, staging, before.version + 1)
            staging = None
            try:
                version = finish_build(
                    self.registry,
                    name,
                    before.version,
                    stats=result.stats,
                    python_version=result.python_version or None,
                    packages=result.packages,
                )
            except LayerError:
                self.storage.discard(published)
                raise
            self.storage.make_current(name, version)
            self.collect_garbage(name)
        except BaseException as exc:
            if staging is not None:
                self.storage.discard(staging)
            message = exc.error if isinstance(exc, _BuildFailed) else f"{type(exc).__name__}: {exc}"
            fail_build(self.registry, name, message)
            if isinstance(exc, _BuildFailed):
                raise LayerBuildFailed(name, exc.error) from None
            raise
        return self.get(name)

    def _pip_install(self, record: LayerRecord, staging: Path) -> builder.BuildResult:
        requirements = staging.parent / f"{staging.name}.{REQUIREMENTS_NAME}"
        requirements.write_text(record.requirements or "")
        try:
            return builder.build_python_env(requirements, staging)
        finally:
            requirements.unlink(missing_ok=True)


class _BuildFailed(Exception):
    def __init__(self, error: str):
        super().__init__(error)
        self.error = error


def _copy_into(source: Path, staging: Path) -> builder.TreeStats:
    shutil.copytree(source, staging, dirs_exist_ok=True)
    return builder.tree_stats(staging)


def _current_user() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return None
