"""The checksums Pennsieve records (md5, S3 ETags) and the one S3 wants on upload (sha256)."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

from pennflow.pennsieve.errors import ChecksumMismatch
from pennflow.pennsieve.models import MULTIPART_ETAG, PLAIN_MD5

ChecksumKind = Literal["md5", "s3-etag"]
READ_CHUNK = 1024 * 1024


class ChecksumVerifier:
    """Feed it a file's bytes in order; it checks them against what Pennsieve recorded.

    An md5, or an ETag of a single-part upload (which is the md5), is always checked. A multipart
    ETag (``md5-of-part-md5s-N``) is checked when the part size is known and gives N parts;
    otherwise the file cannot be verified and ``can_verify`` is False.
    """

    def __init__(
        self, checksum: str | None, kind: ChecksumKind | None, part_size: int | None, size: int
    ) -> None:
        self.expected = (checksum or "").strip().strip('"').lower()
        self.kind = kind
        self._whole = hashlib.md5(usedforsecurity=False)
        self._part_size = 0
        self._parts: list[bytes] = []
        self._part = hashlib.md5(usedforsecurity=False)
        self._part_filled = 0
        self.can_verify = bool(PLAIN_MD5.match(self.expected))
        multipart = MULTIPART_ETAG.match(self.expected)
        if (
            kind == "s3-etag"
            and multipart
            and part_size
            and part_count(size, part_size) == int(multipart.group(2))
        ):
            self._part_size = part_size
            self.can_verify = True

    def update(self, data: bytes | memoryview) -> None:
        if not self.can_verify:
            return
        if not self._part_size:
            self._whole.update(data)
            return
        view = memoryview(data)
        while view:
            take = min(len(view), self._part_size - self._part_filled)
            self._part.update(view[:take])
            self._part_filled += take
            view = view[take:]
            if self._part_filled == self._part_size:
                self._close_part()

    @property
    def part_size(self) -> int | None:
        """The part size of the multipart ETag this verifier checks; None for a plain md5 (or none)."""
        return self._part_size or None

    def actual(self) -> str:
        if not self._part_size:
            return self._whole.hexdigest()
        if self._part_filled or not self._parts:
            self._close_part()
        return combine_part_digests(self._parts)

    def check(self, name: str) -> bool:
        """Raise ChecksumMismatch naming ``name`` on a mismatch; False when nothing could be checked."""
        if not self.can_verify:
            return False
        return self._compare(name, self.actual())

    def check_parts(self, name: str, digests: Sequence[bytes]) -> bool:
        """``check`` for a multipart ETag whose parts were hashed elsewhere: their md5s, in order."""
        if not self.can_verify:
            return False
        if not self._part_size:
            raise ValueError(f"{name}: a plain md5 cannot be checked from part digests")
        return self._compare(name, combine_part_digests(digests))

    def _compare(self, name: str, actual: str) -> bool:
        if actual != self.expected:
            raise ChecksumMismatch(name, expected=self.expected, actual=actual, kind=self.kind or "md5")
        return True

    def _close_part(self) -> None:
        self._parts.append(self._part.digest())
        self._part = hashlib.md5(usedforsecurity=False)
        self._part_filled = 0


def combine_part_digests(digests: Sequence[bytes]) -> str:
    """The ETag S3 gives a multipart upload: md5 of the parts' md5s, then ``-N``."""
    return f"{hashlib.md5(b''.join(digests), usedforsecurity=False).hexdigest()}-{len(digests)}"


def part_count(size: int, part_size: int) -> int:
    return max(1, -(-size // part_size))


class RangePartHasher:
    """The md5 of each multipart part lying wholly inside one byte range, fed that range's bytes in
    order as they arrive, so a range-split file needs no second read to check its ETag. A part cut
    by the range's ends is left out: whoever assembles the file hashes it from disk."""

    def __init__(self, part_size: int, size: int, start: int, end: int) -> None:
        self.part_size = part_size
        self.size = size
        self.end = end
        self.position = start
        self.digests: dict[int, bytes] = {}
        self._index = -1
        self._part = hashlib.md5(usedforsecurity=False)

    def update(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view and self.position < self.size:
            index, offset = divmod(self.position, self.part_size)
            part_end = min((index + 1) * self.part_size, self.size)
            take = min(len(view), part_end - self.position)
            if offset == 0 and part_end - 1 <= self.end:  # the part starts here and ends in the range
                self._index, self._part = index, hashlib.md5(usedforsecurity=False)
            if self._index == index:
                self._part.update(view[:take])
                if self.position + take == part_end:
                    self.digests[index] = self._part.digest()
                    self._index = -1
            self.position += take
            view = view[take:]


def hash_file_range(path: Path, start: int, length: int) -> bytes:
    """md5 of ``length`` bytes of ``path`` from ``start``."""
    digest = hashlib.md5(usedforsecurity=False)
    for chunk in read_chunks(path, start=start, length=length):
        digest.update(chunk)
    return digest.digest()


def read_chunks(
    path: Path, chunk_size: int = READ_CHUNK, *, start: int = 0, length: int | None = None
) -> Iterator[bytes]:
    """The file's bytes (or ``length`` of them from ``start``), ``chunk_size`` at a time."""
    left = length
    with path.open("rb") as handle:
        handle.seek(start)
        while (left is None or left > 0) and (
            chunk := handle.read(chunk_size if left is None else min(chunk_size, left))
        ):
            if left is not None:
                left -= len(chunk)
            yield chunk


def file_matches(path: Path, checksum: str | None, kind: ChecksumKind | None, part_size: int | None) -> bool:
    """True when the file on disk has the recorded checksum (or none can be checked)."""
    verifier = ChecksumVerifier(checksum, kind, part_size, path.stat().st_size)
    if not verifier.can_verify:
        return True
    for chunk in read_chunks(path):
        verifier.update(chunk)
    return verifier.actual() == verifier.expected


def s3_sha256(path: Path, part_size: int | None = None) -> str:
    """The ``ChecksumSHA256`` S3 stores: base64 sha256 of the object, or for a multipart upload
    with ``part_size`` parts the base64 sha256 of the parts' digests followed by ``-N``."""
    if part_size is None:
        digest = hashlib.sha256()
        for chunk in read_chunks(path):
            digest.update(chunk)
        return base64.b64encode(digest.digest()).decode()
    part_digests = []
    with path.open("rb") as handle:
        while True:
            part, filled = hashlib.sha256(), 0
            while filled < part_size and (chunk := handle.read(min(READ_CHUNK, part_size - filled))):
                part.update(chunk)
                filled += len(chunk)
            if not filled and part_digests:
                break
            part_digests.append(part.digest())
            if filled < part_size:
                break
    combined = hashlib.sha256(b"".join(part_digests)).digest()
    return f"{base64.b64encode(combined).decode()}-{len(part_digests)}"
