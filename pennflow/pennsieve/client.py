"""Typed calls to the Pennsieve API (api host) and its upload service (api2 host).

Every call carries ``Authorization: Bearer <Cognito access token>`` and ``X-ORGANIZATION-ID``.
Transient failures (connection errors, 429, 5xx) are retried by the session's urllib3 policy;
a 401 triggers one fresh login and one more attempt.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

import requests
from pydantic import BaseModel, ValidationError

from pennflow.pennsieve.auth import AccessGrant, TokenManager, cognito_login
from pennflow.pennsieve.credentials import PennsieveCredentials, resolve_credentials
from pennflow.pennsieve.errors import AuthenticationError, NotFound, PennsieveError, PermissionDenied
from pennflow.pennsieve.models import (
    CognitoConfig,
    CreatedAsset,
    Dataset,
    DownloadManifest,
    DownloadUrl,
    FinalizeFile,
    FinalizeResponse,
    FinalizeResult,
    ManifestStatusPage,
    Package,
    PackagesPage,
    SourceFile,
    SourcesPage,
    StorageCredentials,
    UploadFileEntry,
    UploadManifestResponse,
)
from pennflow.pennsieve.settings import HttpSettings, PennsieveHosts
from pennflow.pennsieve.transport import build_session

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)

MAX_PAGE_SIZE = 1000
UPLOAD_BATCH = 250  # the upload service's limit per register/finalize request


class PennsieveClient:
    """One organization's view of Pennsieve, for one API key.

    ``PennsieveClient()`` finds credentials (see ``resolve_credentials``) and hosts
    (``PENNSIEVE_API_HOST``, ``PENNSIEVE_API2_HOST``) itself; tests pass them explicitly.
    Thread-safe: the download pool shares one client.
    """

    def __init__(
        self,
        credentials: PennsieveCredentials | None = None,
        *,
        hosts: PennsieveHosts | None = None,
        http: HttpSettings | None = None,
        clock: Callable[[], float] = time.time,
        login: Callable[..., AccessGrant] = cognito_login,
    ) -> None:
        self.credentials = credentials or resolve_credentials()
        self.hosts = hosts or PennsieveHosts.from_env()
        self.http = http or HttpSettings()
        # Two API sessions: POSTs that may be repeated safely retry, the others do not.
        self._session = build_session(self.http, retry_post=True)
        self._session_no_post_retry = build_session(self.http, retry_post=False)
        self._transfer_sessions: dict[int, requests.Session] = {}
        self._transfer_lock = threading.Lock()
        self.tokens = TokenManager(self.credentials, self._cognito_config, login=login, clock=clock)

    def __repr__(self) -> str:
        return f"PennsieveClient(api={self.hosts.api!r}, api2={self.hosts.api2!r}, api_key={self.credentials.api_key!r})"

    def __enter__(self) -> PennsieveClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for session in (self._session, self._session_no_post_retry, *self._transfer_sessions.values()):
            session.close()

    def transfer_session(self, parallel: int = 1) -> requests.Session:
        """A session for presigned file URLs: no Pennsieve headers ever go there. Its connection
        pool holds at least ``parallel`` connections per host, so parallel downloads reuse them."""
        size = max(parallel, self.http.pool_size)
        with self._transfer_lock:
            if size not in self._transfer_sessions:
                self._transfer_sessions[size] = build_session(
                    self.http.model_copy(update={"pool_size": size})
                )
            return self._transfer_sessions[size]

    @property
    def organization_id(self) -> str:
        return self.tokens.grant().organization_id

    # -- datasets and packages -------------------------------------------------------------------

    def get_dataset(self, dataset_id: str) -> Dataset:
        subject = f"dataset {dataset_id}"
        return _parse(Dataset, self._get(f"/datasets/{dataset_id}", subject), subject)

    def iter_packages(
        self, dataset_id: str, *, page_size: int = 100, include_sources: bool = True
    ) -> Iterator[Package]:
        """Every visible package of the dataset (folders included), following the cursor."""
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be between 1 and {MAX_PAGE_SIZE}, got {page_size}")
        return self._package_pages(dataset_id, page_size, include_sources)

    def _package_pages(self, dataset_id: str, page_size: int, include_sources: bool) -> Iterator[Package]:
        subject = f"packages of dataset {dataset_id}"
        cursor: str | None = None
        seen: set[str] = set()
        while True:
            params: dict[str, Any] = {
                "pageSize": page_size,
                "includeSourceFiles": str(include_sources).lower(),
            }
            if cursor:
                params["cursor"] = cursor
            page = _parse(
                PackagesPage, self._get(f"/datasets/{dataset_id}/packages", subject, params), subject
            )
            yield from page.packages
            if not page.cursor or not page.packages:
                return
            if page.cursor in seen:
                raise PennsieveError(f"{subject}: the server repeated cursor {page.cursor}")
            seen.add(page.cursor)
            cursor = page.cursor

    def get_package(self, package_id: str, *, include_sources: bool = True) -> Package:
        subject = f"package {package_id}"
        params = {"include": "sources"} if include_sources else None
        return _parse(Package, self._get(f"/packages/{package_id}", subject, params), subject)

    def package_sources(self, package_id: str, *, page_size: int = 100) -> list[SourceFile]:
        """All source files of a package, through the offset-paged endpoint."""
        subject = f"source files of package {package_id}"
        files: list[SourceFile] = []
        while True:
            params = {"limit": page_size, "offset": len(files)}
            page = _parse(
                SourcesPage, self._get(f"/packages/{package_id}/sources-paged", subject, params), subject
            )
            files.extend(wrapper.content for wrapper in page.results)
            if not page.results or len(files) >= page.total_count:
                return files

    def download_url(self, package_id: str, file_id: int) -> str:
        """A presigned URL for one source file (supports HTTP Range)."""
        subject = f"file {file_id} of package {package_id}"
        return _parse(DownloadUrl, self._get(f"/packages/{package_id}/files/{file_id}", subject), subject).url

    def download_manifest(
        self, node_ids: Sequence[str], file_ids: Sequence[int] | None = None
    ) -> DownloadManifest:
        named = ", ".join(node_ids[:3]) + (f" and {len(node_ids) - 3} more" if len(node_ids) > 3 else "")
        subject = f"download manifest of {named}"  # a bulk request names hundreds of packages
        body: dict[str, Any] = {"nodeIds": list(node_ids)}
        if file_ids is not None:
            body["fileIds"] = list(file_ids)
        data = self._call("POST", self._api("/packages/download-manifest"), subject, json=body)
        return _parse(DownloadManifest, data, subject)

    # -- upload service --------------------------------------------------------------------------

    def create_upload_manifest(self, dataset_id: str) -> str:
        subject = f"new upload manifest for dataset {dataset_id}"
        data = self._call(
            "POST", self._api2("/upload/manifest"), subject,
            params={"dataset_id": dataset_id}, json={"dataset_id": dataset_id}, idempotent=False,
        )  # fmt: skip
        return _parse(UploadManifestResponse, data, subject).manifest_node_id

    def register_upload_files(
        self, dataset_id: str, manifest_id: str, files: Sequence[UploadFileEntry]
    ) -> list[UploadManifestResponse]:
        """Add files to a manifest, 250 per request (repeatable: upload ids are ours)."""
        subject = f"upload manifest {manifest_id}"
        responses = []
        for batch in _batches(files, UPLOAD_BATCH):
            body = {"id": manifest_id, "dataset_id": dataset_id, "files": [f.model_dump() for f in batch]}
            data = self._call(
                "POST", self._api2("/upload/manifest"), subject, params={"dataset_id": dataset_id}, json=body
            )
            responses.append(_parse(UploadManifestResponse, data, subject))
        return responses

    def storage_credentials(self, dataset_id: str, manifest_id: str) -> StorageCredentials:
        subject = f"storage credentials of upload manifest {manifest_id}"
        data = self._call(
            "POST", self._api2("/upload/manifest/storage-credentials"), subject,
            params={"dataset_id": dataset_id}, json={"manifestNodeId": manifest_id},
        )  # fmt: skip
        return _parse(StorageCredentials, data, subject)

    def finalize_upload_files(
        self, dataset_id: str, manifest_id: str, files: Sequence[FinalizeFile]
    ) -> list[FinalizeResult]:
        """Ask the upload service to import uploaded files, 250 per request (idempotent per file)."""
        subject = f"finalize files of upload manifest {manifest_id}"
        results: list[FinalizeResult] = []
        for batch in _batches(files, UPLOAD_BATCH):
            body = {"manifestNodeId": manifest_id, "files": [f.model_dump(by_alias=True) for f in batch]}
            data = self._call(
                "POST", self._api2("/upload/manifest/files/finalize"), subject,
                params={"dataset_id": dataset_id}, json=body,
            )  # fmt: skip
            results.extend(_parse(FinalizeResponse, data, subject).results)
        return results

    def upload_files_with_status(self, manifest_id: str, status: str) -> list[str]:
        """Upload ids of the manifest's files in ``status`` (e.g. Finalized), all pages."""
        subject = f"status of upload manifest {manifest_id}"
        upload_ids: list[str] = []
        token: str | None = None
        while True:
            params = {"manifest_id": manifest_id, "status": status, "verify": "false"}
            if token:
                params["continuation_token"] = token
            data = self._call("GET", self._api2("/upload/manifest/status"), subject, params=params)
            page = _parse(ManifestStatusPage, data, subject)
            upload_ids.extend(page.files or [])
            if not page.continuation_token or not page.files:
                return upload_ids
            token = page.continuation_token

    # -- viewer assets (api2) ---------------------------------------------------------------------

    def create_viewer_asset(
        self,
        dataset_id: str,
        *,
        name: str,
        asset_type: str,
        properties: dict[str, Any],
        package_ids: Sequence[str],
    ) -> CreatedAsset:
        """A viewer asset on packages, with S3 credentials for its files (not repeatable: new asset)."""
        subject = f"viewer asset {name!r} in dataset {dataset_id}"
        body = {
            "name": name,
            "asset_type": asset_type,
            "properties": properties,
            "package_ids": list(package_ids),
        }
        data = self._call(
            "POST", self._api2("/packages/assets"), subject,
            params={"dataset_id": dataset_id}, json=body, idempotent=False,
        )  # fmt: skip
        return _parse(CreatedAsset, data, subject)

    def set_viewer_asset_status(self, dataset_id: str, asset_id: str, status: str) -> None:
        subject = f"viewer asset {asset_id}"
        self._call(
            "PATCH", self._api2(f"/packages/assets/{asset_id}"), subject,
            params={"dataset_id": dataset_id}, json={"status": status},
        )  # fmt: skip

    # -- plumbing --------------------------------------------------------------------------------

    def _api(self, path: str) -> str:
        return self.hosts.api + path

    def _api2(self, path: str) -> str:
        return self.hosts.api2 + path

    def _get(self, path: str, subject: str, params: dict[str, Any] | None = None) -> Any:
        return self._call("GET", self._api(path), subject, params=params)

    def _cognito_config(self) -> CognitoConfig:
        url = self._api("/authentication/cognito-config")
        response = self._send(self._session, "GET", url, headers={})
        return _parse(CognitoConfig, _decode(response, "Cognito configuration"), "Cognito configuration")

    def _call(
        self,
        method: str,
        url: str,
        subject: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        idempotent: bool = True,
    ) -> Any:
        session = self._session if idempotent else self._session_no_post_retry
        for attempt in (1, 2):
            grant = self.tokens.grant()
            headers = {
                "Authorization": f"Bearer {grant.access_token.get_secret_value()}",
                "X-ORGANIZATION-ID": grant.organization_id,
            }
            response = self._send(session, method, url, headers=headers, params=params, json=json)
            if response.status_code == 401 and attempt == 1:
                log.info("token rejected by %s; logging in again", _path(url))
                self.tokens.invalidate(grant)
                continue
            return _decode(response, subject)
        raise AssertionError("unreachable")  # pragma: no cover

    def _send(self, session: requests.Session, method: str, url: str, **kwargs: Any) -> requests.Response:
        try:
            return session.request(method, url, timeout=self.http.timeout, **kwargs)
        except requests.RequestException as exc:
            raise PennsieveError(f"{method} {_path(url)} failed: {type(exc).__name__}: {exc}") from exc


def _decode(response: requests.Response, subject: str) -> Any:
    status = response.status_code
    if status >= 400:
        message = _error_message(response)
        if status == 401:
            raise AuthenticationError(f"{subject}: not authenticated: {message}", status=status)
        if status == 403:
            raise PermissionDenied(f"{subject}: permission denied: {message}", status=status)
        if status == 404:
            raise NotFound(f"{subject} not found", status=status)
        raise PennsieveError(f"{subject}: HTTP {status}: {message}", status=status)
    try:
        return response.json()
    except ValueError:
        raise PennsieveError(f"{subject}: the response is not JSON (HTTP {status})", status=status) from None


def _error_message(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason or "no message"
    if isinstance(body, dict):
        for key in ("message", "error", "errorMessage"):
            if body.get(key):
                return str(body[key])[:300]
    return str(body)[:300]


def _parse(model: type[M], data: Any, subject: str) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        fields = ", ".join(".".join(str(p) for p in err["loc"]) or "(root)" for err in exc.errors()[:5])
        raise PennsieveError(f"{subject}: unexpected response shape at {fields}") from None


def _path(url: str) -> str:
    return urlsplit(url).path


def _batches(items: Sequence[Any] | Iterable[Any], size: int) -> Iterator[list[Any]]:
    items = list(items)
    for start in range(0, len(items), size):
        yield items[start : start + size]
