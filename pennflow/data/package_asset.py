"""The ``Pennsieve Package Asset`` data target: a run's files become a viewer asset on packages.

As Pennsieve's own asset target does it: create the asset on the target packages (``POST
{api2}/packages/assets?dataset_id=``, which answers with S3 credentials scoped to the asset's key
prefix), put every file of INPUT_DIR under that prefix keeping its relative path, then mark the asset
ready (``PATCH {api2}/packages/assets/{id}``); a failed upload marks it failed. Params (from the
target's defaultParams or the run): ``ASSET_TYPE`` and ``ASSET_NAME`` (required), ``ASSET_PROPERTIES_FILE``
(a JSON object in INPUT_DIR, not uploaded; a missing file means ``{}``), ``PACKAGE_ID`` (a package
node id, several comma-separated, or ``default``: the packages the run started on).
"""

from __future__ import annotations

import json
import logging
import mimetypes
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from pennflow.data.target_models import PublishedFile, TargetError, TargetReport
from pennflow.pennsieve.upload import scoped_s3_client
from pennflow.workflow.contract import list_input_files

if TYPE_CHECKING:
    from pennflow.pennsieve import PennsieveClient

log = logging.getLogger(__name__)

PARAM_ASSET_TYPE = "ASSET_TYPE"
PARAM_ASSET_NAME = "ASSET_NAME"
PARAM_PROPERTIES = "ASSET_PROPERTIES_FILE"
PARAM_PACKAGE = "PACKAGE_ID"
DEFAULT_PACKAGE = "default"
MAX_PROPERTIES_BYTES = 256 * 1024


def asset_settings(params: Mapping[str, str], run_package_ids: Sequence[str]) -> tuple[str, str, list[str]]:
    """(asset type, asset name, package ids), or TargetError naming the param to set."""
    asset_type = (params.get(PARAM_ASSET_TYPE) or "").strip()
    name = (params.get(PARAM_ASSET_NAME) or "").strip()
    if not asset_type:
        raise TargetError(
            f"a Pennsieve Package Asset target needs {PARAM_ASSET_TYPE} (e.g. PNG): set it in defaultParams"
        )
    if not name:
        raise TargetError(
            f"a Pennsieve Package Asset target needs {PARAM_ASSET_NAME}: set it in defaultParams"
        )
    chosen = (params.get(PARAM_PACKAGE) or DEFAULT_PACKAGE).strip()
    if chosen == DEFAULT_PACKAGE:
        packages = list(dict.fromkeys(run_package_ids))
        if not packages:
            raise TargetError(
                f"a Pennsieve Package Asset target needs packages: set {PARAM_PACKAGE} to a package id, "
                "or start the run on packages (--package ID)"
            )
    else:
        packages = [part.strip() for part in chosen.split(",") if part.strip()]
    bad = [p for p in packages if not p.startswith("N:package:")]
    if bad:
        raise TargetError(
            f"{PARAM_PACKAGE}: {', '.join(map(repr, bad))} is not a package node id (N:package:...)"
        )
    return asset_type, name, packages


def asset_properties(input_dir: Path, filename: str) -> dict[str, Any]:
    if not filename:
        return {}
    path = input_dir / filename
    if PurePosixPath(filename).is_absolute() or ".." in PurePosixPath(filename).parts:
        raise TargetError(f"{PARAM_PROPERTIES} must name a file inside INPUT_DIR, got {filename!r}")
    if not path.is_file():
        log.warning("asset properties file %s not found: properties are {}", path)
        return {}
    if path.stat().st_size > MAX_PROPERTIES_BYTES:
        raise TargetError(f"{PARAM_PROPERTIES} {filename!r} is over {MAX_PROPERTIES_BYTES} bytes")
    try:
        properties = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise TargetError(f"{PARAM_PROPERTIES} {filename!r} is not JSON: {exc}") from None
    if not isinstance(properties, dict):
        raise TargetError(
            f"{PARAM_PROPERTIES} {filename!r} must hold a JSON object, not {type(properties).__name__}"
        )
    return properties


def publish_package_asset(
    input_dir: Path,
    *,
    client: PennsieveClient,
    dataset_id: str,
    params: Mapping[str, str],
    run_package_ids: Sequence[str] = (),
    s3: Any = None,
) -> TargetReport:
    asset_type, name, packages = asset_settings(params, run_package_ids)
    properties_file = (params.get(PARAM_PROPERTIES) or "").strip()
    properties = asset_properties(input_dir, properties_file)
    files = [f for f in list_input_files(input_dir) if f != properties_file]
    destination = f"pennsieve:{dataset_id}/{','.join(packages)}#{name}"
    if not files:
        log.info("no files in %s: no viewer asset created", input_dir)
        return TargetReport(target_type="Pennsieve Package Asset", destination=destination, files=[])
    created = client.create_viewer_asset(
        dataset_id, name=name, asset_type=asset_type, properties=properties, package_ids=packages
    )
    credentials = created.upload_credentials
    bucket = s3 if s3 is not None else scoped_s3_client(credentials)
    published = []
    try:
        for relative in files:
            key = f"{credentials.key_prefix.rstrip('/')}/{relative}"
            content_type = mimetypes.guess_type(relative)[0] or "application/octet-stream"
            bucket.upload_file(
                str(input_dir / relative), credentials.bucket, key, ExtraArgs={"ContentType": content_type}
            )
            size = (input_dir / relative).stat().st_size
            published.append(
                PublishedFile(path=relative, size=size, destination=f"s3://{credentials.bucket}/{key}")
            )
    except Exception:
        client.set_viewer_asset_status(dataset_id, created.asset.id, "failed")
        raise
    client.set_viewer_asset_status(dataset_id, created.asset.id, "ready")
    log.info("viewer asset %s: %d files on %s", created.asset.id, len(published), ", ".join(packages))
    return TargetReport(
        target_type="Pennsieve Package Asset",
        destination=f"{destination} (asset {created.asset.id})",
        files=published,
    )
