"""Downloading manifest entries into a folder: streamed, resumable, verified.

Each file is written to ``<path>.part`` and renamed when complete and verified, so a file at its
final path is always whole. A retried batch skips files already complete (size and checksum
match) and resumes a partial ``.part`` with an HTTP Range request. Files above
``range_threshold`` are split into byte ranges that separate workers (or separate Lambda
invocations) fetch into the same ``.part`` at their offsets; a marker per finished range lives
in ``<path>.ranges/`` until the file is assembled.

Checksums are computed from the bytes as they arrive, never by reading a whole file back: a file
fetched in one stream feeds its md5 (or multipart ETag) as it is written; a range-split file with
a multipart ETag records, in each range's marker, the md5 of every part lying wholly inside that
range, and assembly combines them, reading back only the parts a range boundary cuts. A plain md5
needs every byte in order, so a range-split file with one is read back once: by the local pool
range by range while later ranges still download (``feed_ranges``), or by a Lambda's finishing
step. Bytes an earlier process fetched are hashed from disk: the prefix of a resumed ``.part``,
and ranges whose markers record no part digests.

Presigned URLs come from Pennsieve in bulk (``POST /packages/download-manifest``, up to
``bulk_urls`` files a request) when the caller asks for them ahead (``UrlSource.claim``); any file
left out, or whose URL was refused (expired), asks for its own.

``download_entry`` is the per-file unit; ``fetch_range`` and ``assemble`` are its parts for a
split file. ``pool.py`` runs many of them (a local thread pool, or a Lambda's batch).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Annotated, Literal

import requests
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from pennflow.pennsieve.checksums import (
    ChecksumVerifier,
    RangePartHasher,
    file_matches,
    hash_file_range,
    part_count,
    read_chunks,
)
from pennflow.pennsieve.errors import NotFound, PennsieveError, PermissionDenied
from pennflow.pennsieve.manifest import ManifestEntry
from pennflow.pennsieve.transfer import DownloadSettings, Transfer

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)

_STREAM_ERRORS = (requests.ConnectionError, requests.exceptions.ChunkedEncodingError, requests.Timeout)


class ByteRange(BaseModel):
    """Inclusive byte offsets, as in an HTTP Range header."""

    model_config = ConfigDict(frozen=True)

    start: int = Field(ge=0)
    end: int = Field(ge=0)

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    @property
    def marker(self) -> str:
        return f"{self.start}-{self.end}"


class FileOutcome(BaseModel):
    path: str
    status: Literal["downloaded", "skipped", "failed"]
    bytes_transferred: int = 0
    verified: bool = False
    error: str | None = None


class DownloadReport(BaseModel):
    outcomes: list[FileOutcome]
    _errors: dict[str, Exception] = PrivateAttr(default_factory=dict)

    @classmethod
    def of(cls, outcomes: list[FileOutcome], errors: Mapping[str, Exception]) -> DownloadReport:
        """A report whose failed outcomes keep their own exceptions (by path)."""
        report = cls(outcomes=outcomes)
        report._errors = dict(errors)
        return report

    @property
    def errors(self) -> Mapping[str, Exception]:
        """Each failure's own exception (e.g. ChecksumMismatch), by the failed outcome's path."""
        return MappingProxyType(self._errors)

    def _count(self, status: str) -> int:
        return sum(1 for outcome in self.outcomes if outcome.status == status)

    @property
    def downloaded(self) -> int:
        return self._count("downloaded")

    @property
    def skipped(self) -> int:
        return self._count("skipped")

    @property
    def failed(self) -> list[FileOutcome]:
        return [outcome for outcome in self.outcomes if outcome.status == "failed"]

    def raise_for_failures(self) -> None:
        """Raise the first failure's own exception (e.g. ChecksumMismatch), noting the others."""
        failed = self.failed
        if not failed:
            return
        first = self._errors.get(failed[0].path) or PennsieveError(f"{failed[0].path}: {failed[0].error}")
        if len(failed) > 1:
            first.add_note(f"{len(failed) - 1} more file(s) failed: " + ", ".join(o.path for o in failed[1:]))
        raise first


def target_path(dest: Path, entry: ManifestEntry) -> Path:
    return dest.joinpath(*entry.path.split("/"))


def part_path(target: Path) -> Path:
    return target.with_name(target.name + ".part")


def ranges_dir(target: Path) -> Path:
    return target.with_name(target.name + ".ranges")


def plan_ranges(size: int, settings: DownloadSettings) -> list[ByteRange] | None:
    """The byte ranges of a file above the threshold; None when it is fetched in one stream."""
    if size <= settings.range_threshold:
        return None
    return [
        ByteRange(start=start, end=min(start + settings.range_size, size) - 1)
        for start in range(0, size, settings.range_size)
    ]


def is_complete(dest: Path, entry: ManifestEntry, settings: DownloadSettings) -> bool:
    target = target_path(dest, entry)
    try:
        if target.stat().st_size != entry.size:
            return False
    except FileNotFoundError:
        return False
    if not settings.verify_existing:
        return True
    return file_matches(target, entry.checksum, entry.checksum_kind, entry.checksum_part_size)


# -- the per-file unit ---------------------------------------------------------------------------


def download_entry(entry: ManifestEntry, dest: Path, transfer: Transfer) -> FileOutcome:
    """Download one file (its ranges one after another when it is split). Raises on failure."""
    plan = plan_entry(entry, dest, transfer)
    if not isinstance(plan, list):
        return plan
    transferred = sum(fetch_range(entry, rng, dest, transfer) for rng in plan)
    verified = assemble(entry, dest, plan)
    return FileOutcome(path=entry.path, status="downloaded", bytes_transferred=transferred, verified=verified)


def plan_entry(entry: ManifestEntry, dest: Path, transfer: Transfer) -> FileOutcome | list[ByteRange]:
    """Skip a complete file, stream a small one, or return a large one's byte ranges to fetch."""
    settings = transfer.settings
    if is_complete(dest, entry, settings):
        verified = settings.verify_existing and checksum_verifier(entry).can_verify
        return FileOutcome(path=entry.path, status="skipped", verified=verified)
    target_path(dest, entry).parent.mkdir(parents=True, exist_ok=True)
    ranges = plan_ranges(entry.size, settings)
    if ranges is not None:
        return ranges
    transferred, verified = stream_file(entry, dest, transfer)
    return FileOutcome(path=entry.path, status="downloaded", bytes_transferred=transferred, verified=verified)


def stream_file(entry: ManifestEntry, dest: Path, transfer: Transfer) -> tuple[int, bool]:
    """Fetch a whole file into its .part (resuming what is there), verify, rename."""
    target = target_path(dest, entry)
    part = part_path(target)
    verifier = checksum_verifier(entry)
    offset = _hash_existing_prefix(target, entry.size, verifier)
    transferred = 0
    drops = 0
    while offset < entry.size:
        try:
            with _open(transfer, entry, start=offset) as response:
                if offset and response.status_code == 200:  # range ignored: start over
                    offset, verifier = 0, checksum_verifier(entry)
                with part.open("r+b" if part.exists() else "wb") as out:
                    out.seek(offset)
                    out.truncate()
                    for chunk in response.iter_content(transfer.settings.chunk_size):
                        out.write(chunk)
                        verifier.update(chunk)
                        offset += len(chunk)
                        transferred += len(chunk)
            if offset < entry.size:
                raise PennsieveError(f"{entry.path}: the body ended at byte {offset} of {entry.size}")
        except _STREAM_ERRORS as exc:
            drops += 1
            if drops > transfer.settings.resume_attempts:
                raise PennsieveError(
                    f"{entry.path}: connection lost at byte {offset} of {entry.size} "
                    f"({type(exc).__name__}); run again to resume"
                ) from exc
            log.info("%s: connection lost at byte %d, resuming", entry.path, offset)
    if offset > entry.size:
        _discard(target)
        raise PennsieveError(f"{entry.path}: received {offset} bytes, Pennsieve lists {entry.size}")
    if not part.exists():
        part.touch()
    return transferred, _finish(part, target, lambda: verifier.check(entry.path))


def fetch_range(entry: ManifestEntry, rng: ByteRange, dest: Path, transfer: Transfer) -> int:
    """Fetch one byte range into the file's .part at its offset; a finished range is skipped.

    The range's marker, written once its bytes are synced, holds the md5 of each multipart part
    lying wholly inside it (see ``assemble``)."""
    target = target_path(dest, entry)
    markers = ranges_dir(target)
    marker = markers / rng.marker
    if marker.exists():
        return 0
    markers.mkdir(parents=True, exist_ok=True)
    part_size = checksum_verifier(entry).part_size
    hasher = RangePartHasher(part_size, entry.size, rng.start, rng.end) if part_size else None
    offset = rng.start
    drops = 0
    fd = os.open(part_path(target), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if os.fstat(fd).st_size != entry.size:
            os.ftruncate(fd, entry.size)  # same size from every worker: concurrent calls agree
        while offset <= rng.end:
            try:
                with _open(transfer, entry, start=offset, end=rng.end) as response:
                    if response.status_code != 206:
                        raise PennsieveError(f"{entry.path}: the server ignored the Range request")
                    for chunk in response.iter_content(transfer.settings.chunk_size):
                        piece = memoryview(chunk)[: rng.end + 1 - offset]  # never past the range
                        os.pwrite(fd, piece, offset)
                        if hasher is not None:
                            hasher.update(piece)
                        offset += len(piece)
                        if offset > rng.end:
                            break
                if offset <= rng.end:
                    raise PennsieveError(f"{entry.path}: range {rng.marker} ended at byte {offset}")
            except _STREAM_ERRORS as exc:
                drops += 1
                if drops > transfer.settings.resume_attempts:
                    raise PennsieveError(
                        f"{entry.path}: connection lost in range {rng.marker} at byte {offset} "
                        f"({type(exc).__name__}); run again to resume"
                    ) from exc
        os.fsync(fd)
    finally:
        os.close(fd)
    _write_marker(marker, hasher.digests if hasher else {})
    return rng.length


def assemble(
    entry: ManifestEntry, dest: Path, ranges: Sequence[ByteRange], fed: ChecksumVerifier | None = None
) -> bool:
    """Once every range is in, verify the .part and move it into place. ``fed`` is a verifier
    already given every byte in order (the local pool hashes a plain md5's ranges as they land)."""
    target = target_path(dest, entry)
    markers = ranges_dir(target)
    missing = [rng.marker for rng in ranges if not (markers / rng.marker).exists()]
    if missing:
        raise PennsieveError(f"{entry.path}: byte ranges {', '.join(missing)} are not fetched yet")
    part = part_path(target)
    if fed is not None:
        return _finish(part, target, lambda: fed.check(entry.path))
    verifier = checksum_verifier(entry)
    if verifier.part_size:
        recorded = _recorded_digests(markers, ranges)
        return _finish(
            part,
            target,
            lambda: verifier.check_parts(entry.path, _part_digests(part, entry.size, verifier, recorded)),
        )

    def read_back() -> bool:  # a plain md5 needs every byte in order
        if verifier.can_verify:
            for chunk in read_chunks(part):
                verifier.update(chunk)
        return verifier.check(entry.path)

    return _finish(part, target, read_back)


def feed_ranges(
    entry: ManifestEntry, dest: Path, ranges: Sequence[ByteRange], verifier: ChecksumVerifier
) -> None:
    """Read fetched ranges back from the .part into ``verifier``, in order."""
    part = part_path(target_path(dest, entry))
    for rng in ranges:
        for chunk in read_chunks(part, start=rng.start, length=rng.length):
            verifier.update(chunk)


class _RangeMarker(BaseModel):
    """A finished range's marker: the md5 (hex) of each multipart part wholly inside it, by index."""

    parts: dict[int, Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]] = {}


def _write_marker(marker: Path, digests: dict[int, bytes]) -> None:
    temporary = marker.with_name(marker.name + ".tmp")
    temporary.write_text(_RangeMarker(parts={i: d.hex() for i, d in digests.items()}).model_dump_json())
    os.replace(temporary, marker)  # the marker appears whole, or not at all


def _recorded_digests(markers: Path, ranges: Sequence[ByteRange]) -> dict[int, bytes]:
    digests: dict[int, bytes] = {}
    for rng in ranges:
        try:
            recorded = _RangeMarker.model_validate_json((markers / rng.marker).read_bytes())
        except (OSError, ValidationError):  # e.g. an empty marker from an older version: read back
            continue
        digests.update({index: bytes.fromhex(digest) for index, digest in recorded.parts.items()})
    return digests


def _part_digests(
    part: Path, size: int, verifier: ChecksumVerifier, recorded: dict[int, bytes]
) -> list[bytes]:
    """Each part's md5: recorded while its range was fetched, or read back (a part a range
    boundary cuts, or one whose range was fetched without recording it)."""
    part_size = verifier.part_size or size
    return [
        recorded.get(index)
        or hash_file_range(part, index * part_size, min(part_size, size - index * part_size))
        for index in range(part_count(size, part_size))
    ]


def _finish(part: Path, target: Path, verify: Callable[[], bool]) -> bool:
    """Run ``verify`` (False: nothing could be checked), then move the .part into place."""
    try:
        verified = verify()
    except PennsieveError:
        _discard(target)  # a bad copy must not be resumed: the next attempt starts clean
        raise
    os.replace(part, target)
    shutil.rmtree(ranges_dir(target), ignore_errors=True)
    return verified


def _discard(target: Path) -> None:
    with suppress(FileNotFoundError):
        part_path(target).unlink()
    shutil.rmtree(ranges_dir(target), ignore_errors=True)


def checksum_verifier(entry: ManifestEntry) -> ChecksumVerifier:
    """A fresh verifier of the checksum Pennsieve recorded for this file."""
    return ChecksumVerifier(entry.checksum, entry.checksum_kind, entry.checksum_part_size, entry.size)


def _hash_existing_prefix(target: Path, size: int, verifier: ChecksumVerifier) -> int:
    """Bytes already in the .part (fed to the verifier). A .part longer than the file, or left
    by a ranged download (sparse, not a prefix), is discarded."""
    part = part_path(target)
    try:
        existing = part.stat().st_size
    except FileNotFoundError:
        return 0
    if existing > size or ranges_dir(target).exists():
        _discard(target)
        return 0
    for chunk in read_chunks(part):
        verifier.update(chunk)
    return existing


def _open(
    transfer: Transfer, entry: ManifestEntry, *, start: int, end: int | None = None
) -> requests.Response:
    """GET the presigned URL (no Pennsieve headers), refreshing the URL once on 403 (expired)."""
    headers = {"Range": f"bytes={start}-{'' if end is None else end}"} if start or end is not None else {}
    for attempt in (1, 2):
        url = transfer.urls.get(entry)
        try:
            response = transfer.session.get(url, headers=headers, stream=True, timeout=transfer.timeout)
        except requests.RequestException as exc:
            if isinstance(exc, _STREAM_ERRORS):
                raise
            raise PennsieveError(f"{entry.path}: download failed: {type(exc).__name__}") from exc
        if response.status_code in (200, 206):
            return response
        response.close()
        if response.status_code == 403 and attempt == 1:
            transfer.urls.forget(entry, url)
            continue
        break
    subject = f"{entry.path} (file {entry.file_id} of package {entry.package_node_id})"
    if response.status_code == 403:
        raise PermissionDenied(f"{subject}: the download URL was refused (403)", status=403)
    if response.status_code == 404:
        raise NotFound(f"{subject} not found at its download URL", status=404)
    raise PennsieveError(
        f"{subject}: download failed with HTTP {response.status_code}", status=response.status_code
    )
