"""Pennsieve access: authentication, typed API calls, download manifests, downloads and uploads."""

from pennflow.pennsieve.client import PennsieveClient
from pennflow.pennsieve.credentials import PennsieveCredentials, resolve_credentials
from pennflow.pennsieve.download import (
    DownloadReport,
    DownloadSettings,
    FileOutcome,
    Transfer,
    download_entries,
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
from pennflow.pennsieve.settings import HttpSettings, PennsieveHosts

__all__ = [
    "AuthenticationError",
    "ChecksumMismatch",
    "CredentialsNotFound",
    "DatasetManifest",
    "DownloadReport",
    "DownloadSettings",
    "FileOutcome",
    "HttpSettings",
    "ManifestEntry",
    "NotFound",
    "PennsieveClient",
    "PennsieveCredentials",
    "PennsieveError",
    "PennsieveHosts",
    "PermissionDenied",
    "Transfer",
    "UploadFailed",
    "build_manifest",
    "download_entries",
    "download_entry",
    "read_jsonl",
    "resolve_credentials",
]
