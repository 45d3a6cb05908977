"""Layers on the compute node's EFS: one access point per published version, mounted read-only.

Version ``v`` of layer ``name`` lives at ``/layers/<name>/v<v>`` and has its own access point
rooted there, so a task definition that names it keeps seeing exactly that version, whatever
re-populate happens later. The functions building task-definition pieces and IAM statements are
pure functions of the mounts, so identical layer sets give identical (content-addressed) task
definitions and are registered once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from pennflow.aws import LazyClient
from pennflow.layers.models import LayerRecord
from pennflow.layers.mounts import LayerMount
from pennflow.workflow.contract import LAYERS_MOUNT

LAYERS_ROOT = "/layers"
CLIENT_MOUNT = "elasticfilesystem:ClientMount"
ACCESS_POINT_CONDITION = "elasticfilesystem:AccessPointArn"
LAYER_TAG = "pennflow:layer"
VERSION_TAG = "pennflow:layer-version"
POSIX_UID = 1000  # the node's single file owner (stacks/constants.py POSIX_UID/GID)
POSIX_GID = 1000
READ_ONLY_PERMISSIONS = "555"


def version_path(name: str, version: int) -> str:
    return f"{LAYERS_ROOT}/{name}/v{version}"


def volume_name(name: str) -> str:
    return f"layer-{name}"


def task_volumes(mounts: Sequence[LayerMount], file_system_id: str) -> tuple[list[dict], list[dict]]:
    """``(volumes, mountPoints)`` for a task definition: each layer's version access point,
    TLS and IAM authorization on, mounted read-only at ``/mnt/layers/<name>``; ordered by name."""
    volumes, mount_points = [], []
    for mount in sorted(mounts, key=lambda m: m.name):
        if not mount.access_point_id:
            raise ValueError(f"layer {mount.name!r} version {mount.version} has no EFS access point")
        volumes.append(
            {
                "name": volume_name(mount.name),
                "efsVolumeConfiguration": {
                    "fileSystemId": file_system_id,
                    "rootDirectory": "/",
                    "transitEncryption": "ENABLED",
                    "authorizationConfig": {"accessPointId": mount.access_point_id, "iam": "ENABLED"},
                },
            }
        )
        mount_points.append(
            {
                "sourceVolume": volume_name(mount.name),
                "containerPath": str(LAYERS_MOUNT / mount.name),
                "readOnly": True,
            }
        )
    return volumes, mount_points


def read_only_statement(
    mounts: Sequence[LayerMount], file_system_arn: str, sid: str = "MountLayersReadOnly"
) -> dict:
    """The task role's IAM statement: ClientMount (never ClientWrite) through exactly these access points."""
    arns = sorted({m.access_point_arn for m in mounts if m.access_point_arn})
    if len(arns) != len({m.name for m in mounts}):
        raise ValueError("every layer needs the ARN of its version's access point")
    return {
        "Sid": sid,
        "Effect": "Allow",
        "Action": [CLIENT_MOUNT],
        "Resource": file_system_arn,
        "Condition": {"ArnEquals": {ACCESS_POINT_CONDITION: arns}},
    }


def publish_version(
    registry: Any, versions: EfsLayerVersions, name: str, previous_version: int, manifest: Any
) -> int:
    """After a build or populate wrote ``/layers/<name>/v<previous+1>`` (``manifest`` is the
    ``layer_build`` processor's BuildResult): give the version its access point, publish it in the
    registry, and delete the access points no run needs any more. Returns the new version."""
    from pennflow.layers.service import finish_build

    record = registry.get(name)
    if record is None:
        raise ValueError(f"layer {name!r} was deleted during its build")
    version = previous_version + 1
    arn = versions.create(name, version, token_seed=record.created_at.isoformat())
    access_points = {**record.access_points, str(version): arn}
    try:
        finish_build(
            registry,
            name,
            previous_version,
            stats=manifest.stats,
            python_version=manifest.python_version or None,
            packages=manifest.packages,
            access_points=access_points,
        )
    except Exception:
        versions.delete(arn)
        raise
    prune_access_points(registry, versions, name)
    return version


def prune_access_points(registry: Any, versions: EfsLayerVersions, name: str) -> list[int]:
    """Delete the access points of versions that are neither current nor mounted by an active run."""
    record = registry.get(name)
    if record is None:
        return []
    unneeded = unneeded_access_points(record)
    for arn in unneeded.values():
        versions.delete(arn)
    if unneeded:
        kept = {v: arn for v, arn in record.access_points.items() if int(v) not in unneeded}
        registry.update(name, access_points=kept)
    return sorted(unneeded)


def unneeded_access_points(record: LayerRecord) -> dict[int, str]:
    """Access points of versions that are neither current nor referenced by an active run."""
    keep = {record.version, *record.referenced_versions()}
    return {int(v): arn for v, arn in record.access_points.items() if int(v) not in keep}


class EfsLayerVersions:
    """Creates and deletes the access points of layer versions (the layers API and build finisher)."""

    def __init__(self, file_system_id: str, *, tags: Mapping[str, str] | None = None, client: Any = None):
        self.file_system_id = file_system_id
        self.tags = dict(tags or {})
        self._client = client

    client = LazyClient("efs")

    def create(self, name: str, version: int, *, token_seed: str = "") -> str:
        """The ARN of a new access point rooted at the version's folder.

        Idempotent per (name, version, ``token_seed``): pass the layer's creation time as the seed so
        a layer deleted and created again under the same name gets fresh access points."""
        token = hashlib.sha256(f"{name}\0{version}\0{token_seed}".encode()).hexdigest()[:40]
        tags = {**self.tags, LAYER_TAG: name, VERSION_TAG: str(version)}
        response = self.client.create_access_point(
            ClientToken=token,
            FileSystemId=self.file_system_id,
            PosixUser={"Uid": POSIX_UID, "Gid": POSIX_GID},
            RootDirectory={
                "Path": version_path(name, version),
                "CreationInfo": {
                    "OwnerUid": POSIX_UID,
                    "OwnerGid": POSIX_GID,
                    "Permissions": READ_ONLY_PERMISSIONS,
                },
            },
            Tags=[{"Key": key, "Value": value} for key, value in sorted(tags.items())],
        )
        return response["AccessPointArn"]

    def delete(self, access_point_arn: str) -> None:
        self.client.delete_access_point(AccessPointId=access_point_arn.rsplit("/", 1)[-1])
