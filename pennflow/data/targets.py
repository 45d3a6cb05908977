"""Data targets: publishing a run's results (a target's INPUT_DIR) somewhere outside the run.

- ``s3``: every file to the results bucket at ``runs/<run_id>/[<prefix>/]<relative path>``, with
  server-side encryption and a content type guessed from the name.
- ``Pennsieve Dataset``: every file to a Pennsieve dataset through the upload service, keeping
  the relative folders; the dataset is the target's ``datasetId`` param, else the run's dataset.
- ``Pennsieve Package Asset``: every file to a viewer asset on the target packages
  (``pennflow.data.package_asset``), as Pennsieve's own asset target does.
- ``persistent-layer``: belongs to the layers module (``pennflow.layers``), refused here.

Relative paths are those of the INPUT_DIR (symlinks and hard links from fan-in and scatter are
followed); an empty INPUT_DIR publishes nothing and succeeds.
"""

from __future__ import annotations

import logging
import mimetypes
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from pennflow.aws import client as aws_client
from pennflow.data.target_models import PublishedFile, TargetError, TargetReport, UnsupportedTarget
from pennflow.workflow.contract import list_input_files
from pennflow.workflow.definition import TargetType

if TYPE_CHECKING:
    from pennflow.pennsieve import LocalFile, PennsieveClient, UploadSettings

log = logging.getLogger(__name__)

RESULTS_PREFIX = "runs"
# Objects the node itself writes under runs/<run_id>/ in the results bucket (manifest, provenance).
RESERVED_NAMES = frozenset({"manifest.json", "run.json"})
DEFAULT_CONTENT_TYPE = "application/octet-stream"
S3_WORKERS = 8

# Params a target reads from its defaultParams (they reach the built-in as environment variables).
PARAM_DATASET = "datasetId"
PARAM_FOLDER = "folder"
PARAM_PREFIX = "prefix"


def publish(
    target_type: TargetType | str,
    input_dir: Path,
    *,
    run_id: str,
    params: Mapping[str, str],
    run_dataset_id: str | None = None,
    run_package_ids: Sequence[str] = (),
    results_bucket: str | None = None,
    pennsieve: Callable[[], PennsieveClient] | None = None,
    s3: Any = None,
) -> TargetReport:
    """Publish ``input_dir`` to a target of ``target_type`` configured by its ``params``."""
    kind = _target_type(target_type)
    if not input_dir.is_dir():
        raise TargetError(f"INPUT_DIR {input_dir} is not a folder")
    if kind is TargetType.S3:
        if not results_bucket:
            raise TargetError("an s3 target needs the results bucket (RESULTS_BUCKET is not set)")
        return publish_to_s3(
            input_dir, bucket=results_bucket, run_id=run_id, prefix=params.get(PARAM_PREFIX, ""), s3=s3
        )
    if kind is TargetType.PENNSIEVE_DATASET:
        dataset_id = params.get(PARAM_DATASET) or run_dataset_id
        if not dataset_id:
            raise TargetError(
                f"a Pennsieve Dataset target needs a dataset: set defaultParams.{PARAM_DATASET} "
                "or start the run on a dataset"
            )
        if pennsieve is None:
            raise TargetError("a Pennsieve Dataset target needs Pennsieve credentials")
        return publish_to_dataset(
            input_dir, client=pennsieve(), dataset_id=dataset_id, folder=params.get(PARAM_FOLDER, "")
        )
    if kind is TargetType.PENNSIEVE_PACKAGE_ASSET:
        from pennflow.data.package_asset import asset_settings, publish_package_asset

        asset_settings(params, run_package_ids)  # refuse a missing param before any call
        dataset_id = params.get(PARAM_DATASET) or run_dataset_id
        if not dataset_id:
            raise TargetError(
                "a Pennsieve Package Asset target needs the packages' dataset: start the run on a dataset "
                f"or set defaultParams.{PARAM_DATASET}"
            )
        if pennsieve is None:
            raise TargetError("a Pennsieve Package Asset target needs Pennsieve credentials")
        return publish_package_asset(
            input_dir,
            client=pennsieve(),
            dataset_id=dataset_id,
            params=params,
            run_package_ids=run_package_ids,
        )
    raise UnsupportedTarget(
        "persistent-layer targets write a layer version, which belongs to pennflow.layers; it has no "
        "data-target entry point yet, so this built-in cannot publish one"
    )


# -- s3 ------------------------------------------------------------------------------------------


def s3_key(run_id: str, relative: str, prefix: str = "") -> str:
    parts = [
        RESULTS_PREFIX,
        run_id,
        *_clean_folder(prefix, PARAM_PREFIX).parts,
        *PurePosixPath(relative).parts,
    ]
    return "/".join(parts)


def publish_to_s3(
    input_dir: Path, *, bucket: str, run_id: str, prefix: str = "", s3: Any = None, workers: int = S3_WORKERS
) -> TargetReport:
    files = list_input_files(input_dir)
    if not _clean_folder(prefix, PARAM_PREFIX).parts:
        clashes = sorted(RESERVED_NAMES.intersection(files))
        if clashes:
            raise TargetError(
                f"{', '.join(clashes)} would replace the run's own file(s) at s3://{bucket}/runs/{run_id}/: "
                f"move it into a folder or set the target's {PARAM_PREFIX} param"
            )
    client = s3 if s3 is not None else aws_client("s3")

    def put(relative: str) -> PublishedFile:
        path = input_dir / relative
        key = s3_key(run_id, relative, prefix)
        content_type = mimetypes.guess_type(relative)[0] or DEFAULT_CONTENT_TYPE
        client.upload_file(
            str(path), bucket, key, ExtraArgs={"ServerSideEncryption": "AES256", "ContentType": content_type}
        )
        return PublishedFile(path=relative, size=path.stat().st_size, destination=f"s3://{bucket}/{key}")

    with ThreadPoolExecutor(workers, thread_name_prefix="s3-target") as pool:
        published = list(pool.map(put, files))
    destination = f"s3://{bucket}/{s3_key(run_id, '', prefix).rstrip('/')}/"
    log.info("published %d files to %s", len(published), destination)
    return TargetReport(target_type=TargetType.S3.value, destination=destination, files=published)


# -- Pennsieve dataset ---------------------------------------------------------------------------


def publish_to_dataset(
    input_dir: Path,
    *,
    client: PennsieveClient,
    dataset_id: str,
    folder: str = "",
    settings: UploadSettings | None = None,
) -> TargetReport:
    from pennflow.pennsieve import upload_files  # the Pennsieve client (requests) only when uploading

    base = _clean_folder(folder, PARAM_FOLDER)
    files = list_input_files(input_dir)
    uploads = [_local_file(input_dir, relative, base) for relative in files]
    if uploads:
        upload_files(client, dataset_id, uploads, settings)
    published = [
        PublishedFile(
            path=relative,
            size=upload.path.stat().st_size,
            destination=str(PurePosixPath(upload.folder, upload.target_name)),
        )
        for relative, upload in zip(files, uploads, strict=True)
    ]
    log.info("published %d files to Pennsieve dataset %s", len(published), dataset_id)
    return TargetReport(
        target_type=TargetType.PENNSIEVE_DATASET.value,
        destination=f"pennsieve:{dataset_id}/{base}" if base.parts else f"pennsieve:{dataset_id}",
        files=published,
    )


def _local_file(input_dir: Path, relative: str, base: PurePosixPath) -> LocalFile:
    from pennflow.pennsieve import LocalFile

    path = PurePosixPath(relative)
    folder = base.joinpath(path.parent) if str(path.parent) != "." else base
    return LocalFile(path=input_dir / relative, folder=str(folder) if folder.parts else "", name=path.name)


# -- local mode ----------------------------------------------------------------------------------


def local_target_plan(
    target_type: TargetType | str,
    *,
    publish_requested: bool,
    has_credentials: bool,
    results_bucket: str | None,
) -> str:
    """What a data target does in a local run: ``copy`` (INPUT_DIR into its OUTPUT_DIR, always) and,
    when asked with ``--publish``, ``publish`` too. Returns ``copy`` or ``copy+publish``; raises
    TargetError when publishing was asked but cannot happen, before anything runs."""
    kind = _target_type(target_type)
    if not publish_requested:
        return "copy"
    if kind is TargetType.S3 and not results_bucket:
        raise TargetError("--publish with an s3 target needs a results bucket (set PENNFLOW_RESULTS_BUCKET)")
    pennsieve_kinds = (TargetType.PENNSIEVE_DATASET, TargetType.PENNSIEVE_PACKAGE_ASSET)
    if kind in pennsieve_kinds and not has_credentials:
        raise TargetError(f"--publish with a {kind.value} target needs Pennsieve credentials")
    return "copy+publish"


# -- helpers -------------------------------------------------------------------------------------


def _target_type(value: TargetType | str) -> TargetType:
    try:
        return TargetType(value)
    except ValueError:
        known = ", ".join(repr(t.value) for t in TargetType)
        raise TargetError(f"unknown target type {value!r}: expected one of {known}") from None


def _clean_folder(value: str, name: str) -> PurePosixPath:
    folder = PurePosixPath(value.strip().strip("/")) if value.strip().strip("/") else PurePosixPath()
    if ".." in folder.parts or "\\" in value:
        raise TargetError(f"the {name} param must be a relative folder without '..', got {value!r}")
    return folder
