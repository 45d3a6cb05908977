"""Publishing result files to a Pennsieve dataset through the upload service (api2).

Create a manifest, register the files (250 per request), get storage credentials scoped to the
manifest, put each file to S3 at ``{keyPrefix}/{uploadId}`` with a SHA-256 checksum, finalize
(250 per request), then poll until the service lists every file as Finalized.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pennflow.pennsieve.checksums import s3_sha256
from pennflow.pennsieve.errors import PennsieveError, UploadFailed
from pennflow.pennsieve.models import (
    AssetUploadCredentials,
    FinalizeFile,
    StorageCredentials,
    UploadFileEntry,
)

if TYPE_CHECKING:
    from pennflow.pennsieve.client import PennsieveClient

log = logging.getLogger(__name__)

MiB = 1024 * 1024
FINALIZED = "Finalized"


class LocalFile(BaseModel):
    """A file to publish: ``folder`` is its folder in the dataset ("" for the root)."""

    model_config = ConfigDict(frozen=True)

    path: Path
    folder: str = ""
    name: str | None = None

    @field_validator("folder")
    @classmethod
    def _relative_folder(cls, value: str) -> str:
        folder = PurePosixPath(value.strip("/")) if value.strip("/") else PurePosixPath()
        if ".." in folder.parts:
            raise ValueError(f"must be a folder path inside the dataset, got {value!r}")
        return str(folder) if folder.parts else ""

    @property
    def target_name(self) -> str:
        return self.name or self.path.name


class UploadSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    multipart_threshold: int = Field(64 * MiB, ge=5 * MiB)
    part_size: int = Field(64 * MiB, ge=5 * MiB)
    max_workers: int = Field(4, ge=1)
    poll_interval: float = Field(2.0, ge=0)
    poll_timeout: float = Field(600.0, ge=0)


class UploadReport(BaseModel):
    manifest_id: str
    finalized: dict[str, str] = Field(description="upload id -> dataset path")


def upload_files(
    client: PennsieveClient,
    dataset_id: str,
    files: Sequence[LocalFile],
    settings: UploadSettings | None = None,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> UploadReport:
    settings = settings or UploadSettings()
    missing = [str(f.path) for f in files if not f.path.is_file()]
    if missing:
        raise FileNotFoundError(f"not a file: {', '.join(missing)}")
    manifest_id = client.create_upload_manifest(dataset_id)
    entries = {
        upload_id: (file, UploadFileEntry(
            upload_id=upload_id,
            s3_key=f"{manifest_id}/{upload_id}",
            target_path=file.folder,
            target_name=file.target_name,
        ))
        for file in files
        for upload_id in [str(uuid.uuid4())]
    }  # fmt: skip
    for response in client.register_upload_files(dataset_id, manifest_id, [e for _, e in entries.values()]):
        if response.failed_files:
            raise UploadFailed({name: "not registered" for name in response.failed_files})
    credentials = client.storage_credentials(dataset_id, manifest_id)
    s3 = scoped_s3_client(credentials)

    def put(upload_id: str) -> FinalizeFile:
        return put_file(s3, credentials, entries[upload_id][0].path, upload_id, settings)

    with ThreadPoolExecutor(settings.max_workers, thread_name_prefix="pennsieve-upload") as pool:
        finals = list(pool.map(put, entries))
    results = client.finalize_upload_files(dataset_id, manifest_id, finals)
    paths = {uid: _dataset_path(entry) for uid, (_, entry) in entries.items()}
    failures = {
        paths.get(r.upload_id, r.upload_id): r.error or r.status for r in results if r.status != "finalized"
    }
    if failures:
        raise UploadFailed(failures)
    wait_until_finalized(client, manifest_id, set(entries), settings, sleep=sleep, clock=clock)
    return UploadReport(manifest_id=manifest_id, finalized=paths)


def put_file(
    s3: Any, credentials: StorageCredentials, path: Path, upload_id: str, settings: UploadSettings
) -> FinalizeFile:
    """Put one file with S3 computing SHA-256; return what finalize needs (the checksum S3 stored)."""
    from boto3.s3.transfer import TransferConfig

    size = path.stat().st_size
    multipart = size >= settings.multipart_threshold
    config = TransferConfig(
        multipart_threshold=settings.multipart_threshold,
        multipart_chunksize=settings.part_size,
        use_threads=False,
    )
    key = f"{credentials.key_prefix}/{upload_id}"
    s3.upload_file(
        str(path), credentials.bucket, key, ExtraArgs={"ChecksumAlgorithm": "SHA256"}, Config=config
    )
    checksum = s3_sha256(path, settings.part_size if multipart else None)
    log.debug("uploaded %s (%d bytes) as %s", path.name, size, upload_id)
    return FinalizeFile(upload_id=upload_id, size=size, sha256=checksum)


def wait_until_finalized(
    client: PennsieveClient,
    manifest_id: str,
    upload_ids: set[str],
    settings: UploadSettings,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    deadline = clock() + settings.poll_timeout
    while True:
        waiting = upload_ids - set(client.upload_files_with_status(manifest_id, FINALIZED))
        if not waiting:
            return
        if clock() >= deadline:
            raise PennsieveError(
                f"upload manifest {manifest_id}: {len(waiting)} file(s) not finalized after "
                f"{settings.poll_timeout:.0f}s"
            )
        sleep(settings.poll_interval)


def scoped_s3_client(credentials: StorageCredentials | AssetUploadCredentials) -> Any:
    """An S3 client with the temporary credentials Pennsieve issued for one upload."""
    import boto3

    return boto3.client(
        "s3",
        region_name=credentials.region,
        aws_access_key_id=credentials.access_key_id,
        aws_secret_access_key=credentials.secret_access_key.get_secret_value(),
        aws_session_token=credentials.session_token.get_secret_value(),
    )


def _dataset_path(entry: UploadFileEntry) -> str:
    return (
        str(PurePosixPath(entry.target_path, entry.target_name)) if entry.target_path else entry.target_name
    )
