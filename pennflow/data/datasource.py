"""A run's data source: the dataset's files, planned into download batches, downloaded into the run.

On the compute node the run's manifest is written once, at ``s3://<results bucket>/runs/<run_id>/manifest.json``,
as the JSON array of batches the data source's Distributed Map reads (``pennflow.workflow.asl``). Each batch
goes to the download Lambda (``action: download``); a last call (``action: verify``) assembles the
range-split files and checks every file arrived. Locally, ``download_dataset`` does the same work
with one thread pool into the data source's OUTPUT_DIR.

The manifest summary (file ids, paths, sizes, checksums) is what the run's content key covers
(:mod:`pennflow.data.content_key`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, computed_field

from pennflow.aws import client as aws_client
from pennflow.aws import error_code
from pennflow.pennsieve import (
    BATCHES,
    ChecksumMismatch,
    DownloadReport,
    DownloadSettings,
    ManifestEntry,
    Transfer,
    WorkItem,
    build_manifest,
    download_entries,
    finish_downloads,
    plan_batches,
    run_batch,
)
from pennflow.pennsieve.download import ByteRange, plan_ranges

if TYPE_CHECKING:
    from pennflow.pennsieve import PennsieveClient

MANIFEST_NAME = "manifest.json"
# One download call's share: at ~100 MB/s from S3 a 1 GiB batch takes seconds, far from the Lambda timeout.
BATCH_BYTES = 1024**3


def manifest_key(run_id: str) -> str:
    return f"runs/{run_id}/{MANIFEST_NAME}"


def plan_settings(max_workers: int | None = None) -> DownloadSettings:
    """The node's download settings (range threshold and size, chunk, workers). The verify step does
    not rely on them matching the writer's: it reads the split from the manifest (``settings_for``)."""
    settings = DownloadSettings()
    return settings.model_copy(update={"max_workers": max_workers}) if max_workers else settings


# -- the manifest summary (what the content key covers) ------------------------------------------


class InputFile(BaseModel):
    """One input file as the content key sees it: Pennsieve file id (or local path), path, size, checksum."""

    model_config = ConfigDict(frozen=True)

    file_id: str
    path: str
    size: int = Field(ge=0)
    checksum: str | None = None


class InputSummary(BaseModel):
    """A run's inputs: counts for people, and (not serialised) every file for the content key."""

    dataset_id: str | None = None
    package_ids: list[str] = Field(default_factory=list)
    file_count: int
    total_bytes: int
    entries: list[InputFile] = Field(default_factory=list, exclude=True, repr=False)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def files_sha256(self) -> str:
        """sha256 of the sorted file list: two summaries with the same files have the same value."""
        rows = [[f.file_id, f.path, f.size, f.checksum] for f in self.entries]
        return hashlib.sha256(json.dumps(rows, separators=(",", ":")).encode()).hexdigest()

    @property
    def without_checksum(self) -> int:
        return sum(1 for entry in self.entries if not entry.checksum)


def summarize(
    entries: Iterable[ManifestEntry], *, dataset_id: str | None = None, package_ids: Sequence[str] = ()
) -> InputSummary:
    """The summary of a Pennsieve manifest, files sorted by (file id, path) whatever the listing order."""
    files = sorted(
        {InputFile(file_id=str(e.file_id), path=e.path, size=e.size, checksum=e.checksum) for e in entries},
        key=lambda f: (f.file_id, f.path),
    )
    return InputSummary(
        dataset_id=dataset_id,
        package_ids=sorted(package_ids),
        file_count=len(files),
        total_bytes=sum(f.size for f in files),
        entries=files,
    )


def summarize_folder(folder: Path) -> InputSummary:
    """A local ``--input`` folder: each file keyed by its relative path and its sha256."""
    files = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = path.relative_to(folder).as_posix()
        with path.open("rb") as handle:
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
        files.append(
            InputFile(file_id=f"local:{relative}", path=relative, size=path.stat().st_size, checksum=digest)
        )
    return InputSummary(file_count=len(files), total_bytes=sum(f.size for f in files), entries=files)


# -- the run's manifest in S3 --------------------------------------------------------------------


class ManifestLocation(BaseModel):
    model_config = ConfigDict(frozen=True)

    bucket: str = Field(min_length=1)
    key: str = Field(min_length=1)


def write_run_manifest(
    run_id: str,
    entries: Sequence[ManifestEntry],
    *,
    bucket: str,
    s3: Any = None,
    settings: DownloadSettings | None = None,
    batch_bytes: int = BATCH_BYTES,
) -> ManifestLocation:
    """Plan the batches (about ``batch_bytes`` each) and put them where the Distributed Map reads them."""
    location = ManifestLocation(bucket=bucket, key=manifest_key(run_id))
    _s3(s3).put_object(
        Bucket=location.bucket,
        Key=location.key,
        Body=BATCHES.dump_json(plan_batches(entries, settings or plan_settings(), batch_bytes=batch_bytes)),
        ContentType="application/json",
        ServerSideEncryption="AES256",
    )
    return location


def read_run_manifest(location: ManifestLocation, s3: Any = None) -> list[list[WorkItem]]:
    body = _s3(s3).get_object(Bucket=location.bucket, Key=location.key)["Body"].read()
    try:
        return BATCHES.validate_json(body)
    except ValidationError as exc:
        raise DownloadEventError(
            f"s3://{location.bucket}/{location.key} is not a manifest of download batches: {_problems(exc)}"
        ) from None


def settings_for(batches: Sequence[Sequence[WorkItem]], base: DownloadSettings) -> DownloadSettings:
    """Settings under which ``finish_downloads`` splits each file exactly as the manifest did, whatever
    settings wrote it: the range size is the longest range, the threshold the largest whole file."""
    ranges: dict[str, list[ByteRange]] = {}
    whole = 0
    for batch in batches:
        for item in batch:
            if item.range is None:
                whole = max(whole, item.entry.size)
            else:
                ranges.setdefault(item.entry.path, []).append(item.range)
    settings = base.model_copy(
        update={
            "range_threshold": max(whole, 1),
            "range_size": max((r.length for rs in ranges.values() for r in rs), default=base.range_size),
        }
    )
    entries = {e.path: e for e in entries_of(batches)}
    for path, split in ranges.items():
        if plan_ranges(entries[path].size, settings) != sorted(split, key=lambda r: r.start):
            raise DownloadEventError(
                f"the manifest's byte ranges of {path} are not a plan this function can verify"
            )
    return settings


def entries_of(batches: Iterable[Iterable[WorkItem]]) -> list[ManifestEntry]:
    """Each file once, in manifest order (a split file appears once per byte range)."""
    seen: dict[str, ManifestEntry] = {}
    for batch in batches:
        for item in batch:
            seen.setdefault(item.entry.path, item.entry)
    return list(seen.values())


def ensure_run_manifest(
    run_id: str,
    dataset_id: str,
    package_ids: Sequence[str] | None,
    *,
    bucket: str,
    client: PennsieveClient,
    s3: Any = None,
) -> tuple[ManifestLocation, InputSummary]:
    """The run's manifest, built and written once: a manifest already written (by the API, when it
    computed the run's content key) is reused, so the files keyed are the files downloaded."""
    location = ManifestLocation(bucket=bucket, key=manifest_key(run_id))
    try:
        entries = entries_of(read_run_manifest(location, s3))
    except Exception as exc:
        if error_code(exc) not in {"NoSuchKey", "404"}:
            raise
        entries = build_manifest(client, dataset_id, package_ids or None).entries
        write_run_manifest(run_id, entries, bucket=bucket, s3=s3)
    return location, summarize(entries, dataset_id=dataset_id, package_ids=package_ids or ())


# -- local mode ----------------------------------------------------------------------------------


def download_dataset(
    client: PennsieveClient,
    dataset_id: str,
    dest: Path,
    *,
    package_ids: Sequence[str] | None = None,
    settings: DownloadSettings | None = None,
) -> tuple[InputSummary, DownloadReport]:
    """Download a dataset (or the selected packages) into ``dest`` with a thread pool.

    Raises the first file's own error (e.g. ChecksumMismatch) once every file was tried.
    """
    manifest = build_manifest(client, dataset_id, package_ids or None)
    dest.mkdir(parents=True, exist_ok=True)
    report = download_entries(manifest.entries, dest, client, settings or plan_settings())
    raise_download_failures(report)
    return summarize(manifest.entries, dataset_id=dataset_id, package_ids=package_ids or ()), report


def raise_download_failures(report: DownloadReport) -> None:
    """Like ``report.raise_for_failures``, but a checksum mismatch wins over other failures: its
    error name (``ChecksumMismatch``) is what the state machine's Retry/Catch match on."""
    errors = report.errors  # each failure's own exception
    mismatch = next((exc for exc in errors.values() if isinstance(exc, ChecksumMismatch)), None)
    others = [o.path for o in report.failed if errors.get(o.path) is not mismatch]
    if mismatch is not None:
        if others:
            mismatch.add_note(f"{len(others)} more file(s) failed: {', '.join(others)}")
        raise mismatch
    report.raise_for_failures()


# -- the download Lambda's work ------------------------------------------------------------------


class DownloadEventError(ValueError):
    """The download function's event is malformed, or names a folder outside the run."""


class _Event(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True)

    run_id: str = Field(alias="runId", min_length=1)
    processor_id: str = Field(alias="processorId", min_length=1)
    output_dir: str = Field(alias="outputDir", min_length=1)


class DownloadBatch(_Event):
    """One item of the data source's Distributed Map: a batch of whole files and byte ranges."""

    action: Literal["download"]
    batch: list[WorkItem] = Field(min_length=1)


class VerifyDownloads(_Event):
    """After every batch: assemble the split files and check each file of the manifest arrived."""

    action: Literal["verify"]
    manifest: ManifestLocation


DownloadEvent = Annotated[DownloadBatch | VerifyDownloads, Field(discriminator="action")]
_EVENT = TypeAdapter(DownloadEvent)


def parse_download_event(event: Any) -> DownloadBatch | VerifyDownloads:
    try:
        return _EVENT.validate_python(event)
    except ValidationError as exc:
        raise DownloadEventError(f"malformed download event: {_problems(exc)}") from None


@dataclass
class DownloadNode:
    """What the download function needs: where a run's folders are, Pennsieve, S3, the plan."""

    task_path: Callable[
        [str, str], Path
    ]  # (run id, a path as the run's tasks see it) -> this function's path
    client: PennsieveClient
    settings: DownloadSettings
    s3: Any = None


def handle_download_event(request: DownloadBatch | VerifyDownloads, node: DownloadNode) -> dict[str, Any]:
    """Run one parsed event in the run's folder (its run slot's folder, which its tasks see as /mnt/run)."""
    dest = node.task_path(request.run_id, request.output_dir)
    if isinstance(request, DownloadBatch):
        return download_batch(request, dest, node)
    return verify_downloads(request, dest, node)


def download_batch(request: DownloadBatch, dest: Path, node: DownloadNode) -> dict[str, Any]:
    """Fetch one batch into ``dest``: files stream to ``.part`` and are renamed once verified,
    ranges land at their offsets, and what a retried batch already has is skipped."""
    dest.mkdir(parents=True, exist_ok=True)
    report = run_batch(request.batch, dest, Transfer.for_client(node.client, node.settings))
    raise_download_failures(report)
    return {
        "action": "download",
        "items": len(request.batch),
        "downloaded": report.downloaded,
        "skipped": report.skipped,
        "bytes": sum(o.bytes_transferred for o in report.outcomes),
    }


def verify_downloads(request: VerifyDownloads, dest: Path, node: DownloadNode) -> dict[str, Any]:
    batches = read_run_manifest(request.manifest, node.s3)
    entries = entries_of(batches)
    report = finish_downloads(entries, dest, settings_for(batches, node.settings))
    raise_download_failures(report)
    return {
        "action": "verify",
        "files": len(entries),
        "bytes": sum(e.size for e in entries),
        "assembled": report.downloaded,
        "verified_on_assembly": sum(1 for o in report.outcomes if o.verified),
    }


def slot_task_path(slots: Any, folders: Any) -> Callable[[str, str], Path]:
    """A running run's ``/mnt/run/...`` path under this function's runs mount: the run slot it holds
    (``pennflow.node.slots.SlotPool``) and that slot's folder (``SlotFolders.task_path``)."""

    def task_path(run_id: str, path: str) -> Path:
        slot = slots.held_by(run_id)
        if slot is None:
            raise DownloadEventError(f"run {run_id!r} holds no run slot: is it running?")
        try:
            return folders.task_path(slot, path)
        except ValueError as exc:
            raise DownloadEventError(f"outputDir {exc}") from None

    return task_path


# -- helpers -------------------------------------------------------------------------------------


def _problems(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or 'event'}: {error['msg']}"
        for error in exc.errors()[:10]
    )


def _s3(s3: Any) -> Any:
    return s3 if s3 is not None else aws_client("s3")
