"""What every file download shares: the settings, the HTTP session, and presigned URLs fetched ahead in
bulk (``POST /packages/download-manifest``) or one by one when a URL was left out or refused."""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

import requests
from pydantic import BaseModel, ConfigDict, Field

from pennflow.pennsieve.errors import PennsieveError
from pennflow.pennsieve.manifest import ManifestEntry

if TYPE_CHECKING:
    from pennflow.pennsieve.client import PennsieveClient
    from pennflow.pennsieve.models import DownloadManifest

log = logging.getLogger(__name__)

MiB = 1024 * 1024


class DownloadSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    max_workers: int = Field(8, ge=1)
    chunk_size: int = Field(1 * MiB, ge=1024, description="bytes read per write: bounds memory per worker")
    range_threshold: int = Field(256 * MiB, ge=1, description="files larger than this are split")
    range_size: int = Field(64 * MiB, ge=1)
    resume_attempts: int = Field(2, ge=0, description="in-run resumes after a connection drops mid-body")
    verify_existing: bool = Field(True, description="checksum a complete file before skipping it")
    bulk_urls: int = Field(
        250, ge=0, description="files per bulk URL request (download-manifest); 0: each file asks alone"
    )


_UrlKey = tuple[str, int]


class UrlSource:
    """Presigned URLs, fetched once per file and shared by that file's ranges; refreshed on 403.

    ``claim`` reserves many files' URLs for one bulk request: until it has run, ``get`` for those
    files waits for it instead of asking file by file.
    """

    def __init__(
        self,
        fetch: Callable[[str, int], str],
        fetch_many: Callable[[Sequence[str], Sequence[int]], DownloadManifest] | None = None,
    ) -> None:
        self._fetch = fetch
        self._fetch_many = fetch_many
        self._urls: dict[_UrlKey, str] = {}
        self._locks: dict[_UrlKey, threading.Lock] = {}
        self._pending: dict[_UrlKey, threading.Event] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """How many URLs are held."""
        return len(self._urls)

    def get(self, entry: ManifestEntry) -> str:
        key = (entry.package_node_id, entry.file_id)
        with self._lock:
            url = self._urls.get(key)
            pending = self._pending.get(key)
        if url is not None:
            return url
        if pending is not None:  # a bulk request is bringing it
            pending.wait()
        with self._lock:
            file_lock = self._locks.setdefault(key, threading.Lock())
        with file_lock:  # the first range of a file fetches its URL, the others wait for it
            if key not in self._urls:
                self._urls[key] = self._fetch(entry.package_node_id, entry.file_id)
            return self._urls[key]

    def forget(self, entry: ManifestEntry, url: str) -> None:
        """Drop ``url`` (refused) unless another range already replaced it."""
        key = (entry.package_node_id, entry.file_id)
        with self._lock:
            if self._urls.get(key) == url:
                del self._urls[key]

    def release(self, entry: ManifestEntry) -> None:
        """Forget a finished file's URL: a long run keeps only the URLs of files still to come."""
        key = (entry.package_node_id, entry.file_id)
        with self._lock:
            self._urls.pop(key, None)
            self._locks.pop(key, None)

    def claim(self, entries: Iterable[ManifestEntry]) -> Callable[[], None] | None:
        """Reserve these files' URLs for one bulk request and return that request, to run in any
        thread (None when there is nothing to ask). Files whose URL is known or already claimed are
        left out, and so is a second file of one package: the answer names packages, not files."""
        if self._fetch_many is None:
            return None
        chosen: dict[_UrlKey, ManifestEntry] = {}
        packages: set[str] = set()
        with self._lock:
            for entry in entries:
                key = (entry.package_node_id, entry.file_id)
                if key in self._urls or key in self._pending or entry.package_node_id in packages:
                    continue
                packages.add(entry.package_node_id)
                chosen[key] = entry
            if not chosen:
                return None
            done = threading.Event()
            for key in chosen:
                self._pending[key] = done
        return functools.partial(self._fetch_bulk, chosen, done)

    def _fetch_bulk(self, chosen: dict[_UrlKey, ManifestEntry], done: threading.Event) -> None:
        try:
            entries = list(chosen.values())
            manifest = self._fetch_many([e.package_node_id for e in entries], [e.file_id for e in entries])
            by_package: dict[str, list[str]] = {}
            sizes: dict[str, int] = {}
            for item in manifest.data:
                by_package.setdefault(item.node_id, []).append(item.url)
                sizes[item.node_id] = item.size
            with self._lock:
                for key, entry in chosen.items():
                    urls = by_package.get(entry.package_node_id, [])
                    if len(urls) == 1 and sizes[entry.package_node_id] == entry.size:
                        self._urls[key] = urls[0]
        except PennsieveError as exc:  # the files ask one by one, and report their own errors
            log.info("bulk download URLs for %d file(s) failed, asking file by file: %s", len(chosen), exc)
        finally:
            with self._lock:
                for key in chosen:
                    self._pending.pop(key, None)
            done.set()


class Transfer:
    """What every file fetch needs: the plain session (no Pennsieve headers), URLs, settings."""

    def __init__(
        self,
        session: requests.Session,
        urls: UrlSource,
        settings: DownloadSettings | None = None,
        timeout: tuple[float, float] = (10.0, 60.0),
    ) -> None:
        self.session = session
        self.urls = urls
        self.settings = settings or DownloadSettings()
        self.timeout = timeout

    @classmethod
    def for_client(cls, client: PennsieveClient, settings: DownloadSettings | None = None) -> Transfer:
        settings = settings or DownloadSettings()
        session = client.transfer_session(settings.max_workers)
        urls = UrlSource(client.download_url, client.download_manifest if settings.bulk_urls else None)
        return cls(session, urls, settings, client.http.timeout)

    def fetch_urls_ahead(self, entries: Sequence[ManifestEntry]) -> list[Callable[[], None]]:
        """Bulk requests (to run) for the URLs of these entries, ``bulk_urls`` files each."""
        size = self.settings.bulk_urls
        if not size:
            return []
        jobs = (self.urls.claim(entries[start : start + size]) for start in range(0, len(entries), size))
        return [job for job in jobs if job is not None]


# -- paths ---------------------------------------------------------------------------------------
