"""Pennsieve access: authentication, typed API calls, download manifests, downloads and uploads."""

from pennflow.pennsieve.client import PennsieveClient
from pennflow.pennsieve.credentials import PennsieveCredentials, resolve_credentials
from pennflow.pennsieve.download import (
    DownloadReport,
    FileOutcome,
    download_entry,
)
from pennflow.pennsieve.errors import (
    AuthenticationError,
    ChecksumMismatch,
    CredentialsNotFound,
    NotFound,
    PennsieveError,
    PermissionDenied,
    UploadFailed,
)
from pennflow.pennsieve.manifest import DatasetManifest, ManifestEntry, build_manifest, read_jsonl
from pennflow.pennsieve.pool import (
    BATCHES,
    WorkItem,
    download_entries,
    finish_downloads,
    plan_batches,
    run_batch,
)
from pennflow.pennsieve.settings import HttpSettings, PennsieveHosts
from pennflow.pennsieve.transfer import DownloadSettings, Transfer
from pennflow.pennsieve.upload import LocalFile, UploadReport, UploadSettings, upload_files

__all__ = [
    "BATCHES",
    "AuthenticationError",
    "ChecksumMismatch",
    "CredentialsNotFound",
    "DatasetManifest",
    "DownloadReport",
    "DownloadSettings",
    "FileOutcome",
    "HttpSettings",
    "LocalFile",
    "ManifestEntry",
    "NotFound",
    "PennsieveClient",
    "PennsieveCredentials",
    "PennsieveError",
    "PennsieveHosts",
    "PermissionDenied",
    "Transfer",
    "UploadFailed",
    "UploadReport",
    "UploadSettings",
    "WorkItem",
    "build_manifest",
    "download_entries",
    "download_entry",
    "finish_downloads",
    "plan_batches",
    "read_jsonl",
    "resolve_credentials",
    "run_batch",
    "upload_files",
]
