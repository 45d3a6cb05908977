"""Running many downloads: a local thread pool, or batches handed to Lambdas by a Distributed Map.

Locally, ``download_entries`` spreads files and the byte ranges of large files over one pool and
assembles each split file once its ranges are in. On AWS the same work is cut up ahead of time:
``plan_batches`` groups whole files and byte ranges into batches by bytes (the JSON the state
machine maps over), each Lambda runs ``run_batch`` on one batch, and a last call to
``finish_downloads`` assembles the split files and checks that every file arrived. Retrying a
batch is cheap: finished files and ranges are skipped.
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, TypeAdapter

from pennflow.pennsieve.download import (
    ByteRange,
    DownloadReport,
    FileOutcome,
    assemble,
    checksum_verifier,
    download_entry,
    feed_ranges,
    fetch_range,
    part_path,
    plan_entry,
    plan_ranges,
    ranges_dir,
    target_path,
)
from pennflow.pennsieve.errors import PennsieveError
from pennflow.pennsieve.manifest import ManifestEntry
from pennflow.pennsieve.transfer import DownloadSettings, Transfer

if TYPE_CHECKING:
    from pennflow.pennsieve.checksums import ChecksumVerifier
    from pennflow.pennsieve.client import PennsieveClient

log = logging.getLogger(__name__)

GiB = 1024**3
MAX_BATCH_ITEMS = 200  # keeps one Distributed Map item well under its 256 KiB limit


# -- local mode ----------------------------------------------------------------------------------


def download_entries(
    entries: Iterable[ManifestEntry],
    dest: Path,
    client: PennsieveClient,
    settings: DownloadSettings | None = None,
) -> DownloadReport:
    """Download every entry with a pool of workers; large files' ranges are spread over workers.

    One file's failure does not stop the others: see ``DownloadReport.raise_for_failures``.
    """
    return _PoolRun(list(entries), dest, Transfer.for_client(client, settings)).run()


_Step = tuple[str, ManifestEntry, int]  # (what, whose, which range)


class _SplitFile:
    """A range-split file in flight: which ranges are in and, for a plain md5 (which needs every
    byte in order), how far its bytes are hashed: each range is read back as soon as those before
    it are hashed, while later ranges still download, so assembly need not read the file again."""

    def __init__(self, ranges: list[ByteRange], in_order: ChecksumVerifier | None) -> None:
        self.ranges = ranges
        self.fetched = [False] * len(ranges)
        self.transferred = 0
        self.in_order = in_order
        self.hashed = 0  # ranges fed to ``in_order``
        self.hashing = 0  # ranges being fed now

    def next_to_hash(self) -> list[ByteRange]:
        if self.in_order is None or self.hashing:
            return []
        end = self.hashed
        while end < len(self.ranges) and self.fetched[end]:
            end += 1
        return self.ranges[self.hashed : end]

    @property
    def ready(self) -> bool:
        hashed = self.in_order is None or (self.hashed == len(self.ranges) and not self.hashing)
        return all(self.fetched) and hashed


class _PoolRun:
    """Schedules files, then each large file's ranges, then its assembly, on one thread pool.

    Files are handed to the pool a few at a time (``IN_FLIGHT_PER_WORKER`` per worker), so memory
    and scheduling cost stay flat however many files there are; the URLs of the next
    ``bulk_urls`` files are asked for in bulk, on a thread of their own, while these run. A split
    file with a plain md5 is hashed in order on a thread of its own (see ``_SplitFile``).
    """

    IN_FLIGHT_PER_WORKER = 2

    def __init__(self, entries: Sequence[ManifestEntry], dest: Path, transfer: Transfer) -> None:
        self.entries = entries
        self.dest = dest
        self.transfer = transfer
        self.outcomes: dict[str, FileOutcome] = {}
        self.errors: dict[str, Exception] = {}
        self.split: dict[str, _SplitFile] = {}
        self.steps: dict[Future, _Step] = {}
        self.finished: queue.SimpleQueue[Future] = queue.SimpleQueue()
        self.url_requests: list[Future] = []

    def run(self) -> DownloadReport:
        settings = self.transfer.settings
        window = settings.max_workers * self.IN_FLIGHT_PER_WORKER
        with (
            ThreadPoolExecutor(settings.max_workers, thread_name_prefix="download") as self.pool,
            ThreadPoolExecutor(1, thread_name_prefix="download-urls") as self.url_pool,
            ThreadPoolExecutor(1, thread_name_prefix="download-hash") as self.hash_pool,
        ):
            upcoming = self._with_urls_ahead()
            while True:
                while len(self.steps) < window and (entry := next(upcoming, None)) is not None:
                    self._submit(("plan", entry, 0), plan_entry, entry, self.dest, self.transfer)
                if not self.steps:
                    break
                future = self.finished.get()
                self._after(self.steps.pop(future), future)
        for request in self.url_requests:
            request.result()  # a bulk request's own failure was handled; this surfaces a bug
        return DownloadReport.of([self.outcomes[entry.path] for entry in self.entries], self.errors)

    def _with_urls_ahead(self) -> Iterator[ManifestEntry]:
        """The entries in order; the URLs of the next chunk are requested when this one starts."""
        size = self.transfer.settings.bulk_urls or len(self.entries) or 1
        chunks = [self.entries[start : start + size] for start in range(0, len(self.entries), size)]
        for index, chunk in enumerate(chunks):
            if index == 0:
                self._request_urls(chunk)
            if index + 1 < len(chunks):
                self._request_urls(chunks[index + 1])
            yield from chunk

    def _request_urls(self, entries: Sequence[ManifestEntry]) -> None:
        wanted = [e for e in entries if e.size and not _in_place(target_path(self.dest, e), e)]
        for job in self.transfer.fetch_urls_ahead(wanted):
            self.url_requests.append(self.url_pool.submit(job))

    def _submit(
        self, step: _Step, fn: Callable[..., object], *args: object, pool: ThreadPoolExecutor | None = None
    ) -> None:
        future = (pool or self.pool).submit(fn, *args)
        self.steps[future] = step
        future.add_done_callback(self.finished.put)

    def _after(self, step: _Step, future: Future) -> None:
        what, entry, index = step
        if entry.path in self.outcomes:  # it already failed: ignore its other ranges
            return
        try:
            result = future.result()
        except Exception as exc:  # one file's failure must not stop the others
            self._failed(entry, exc)
            return
        if isinstance(result, FileOutcome):
            self._done(entry, result)
        elif what == "plan":
            verifier = checksum_verifier(entry)
            plain_md5 = verifier.can_verify and not verifier.part_size
            self.split[entry.path] = _SplitFile(result, verifier if plain_md5 else None)
            for number, rng in enumerate(result):
                self._submit(("range", entry, number), fetch_range, entry, rng, self.dest, self.transfer)
        elif what == "range":
            split = self.split[entry.path]
            split.transferred += result
            split.fetched[index] = True
            self._advance(entry, split)
        elif what == "hash":
            split = self.split[entry.path]
            split.hashed, split.hashing = split.hashed + split.hashing, 0
            self._advance(entry, split)
        else:
            split = self.split.pop(entry.path)
            outcome = FileOutcome(
                path=entry.path, status="downloaded", bytes_transferred=split.transferred, verified=result
            )
            self._done(entry, outcome)

    def _advance(self, entry: ManifestEntry, split: _SplitFile) -> None:
        """Hash the ranges now next in order, or assemble the file once everything is in."""
        if ranges := split.next_to_hash():
            split.hashing = len(ranges)
            self._submit(
                ("hash", entry, 0), feed_ranges, entry, self.dest, ranges, split.in_order, pool=self.hash_pool
            )
        elif split.ready:
            self._submit(("assemble", entry, 0), assemble, entry, self.dest, split.ranges, split.in_order)

    def _failed(self, entry: ManifestEntry, exc: Exception) -> None:
        self.errors[entry.path] = exc
        self.split.pop(entry.path, None)
        self._done(entry, FileOutcome(path=entry.path, status="failed", error=str(exc)))
        log.warning("%s", exc)

    def _done(self, entry: ManifestEntry, outcome: FileOutcome) -> None:
        self.outcomes[entry.path] = outcome
        self.transfer.urls.release(entry)


# -- batches for a Distributed Map ---------------------------------------------------------------


class WorkItem(BaseModel):
    """A whole file, or one byte range of a large file."""

    model_config = ConfigDict(frozen=True)

    entry: ManifestEntry
    range: ByteRange | None = None

    @property
    def size(self) -> int:
        return self.range.length if self.range else self.entry.size


BATCHES = TypeAdapter(list[list[WorkItem]])


def plan_batches(
    entries: Iterable[ManifestEntry],
    settings: DownloadSettings | None = None,
    *,
    batch_bytes: int = 1 * GiB,
    max_items: int = MAX_BATCH_ITEMS,
) -> list[list[WorkItem]]:
    """Whole files and byte ranges, in manifest order, packed into batches of about ``batch_bytes``
    (at most ``max_items`` each). Serialise with ``BATCHES.dump_json(batches)``."""
    settings = settings or DownloadSettings()
    batches: list[list[WorkItem]] = []
    current: list[WorkItem] = []
    filled = 0
    for entry in entries:
        ranges = plan_ranges(entry.size, settings)
        for item in (
            [WorkItem(entry=entry)] if ranges is None else [WorkItem(entry=entry, range=r) for r in ranges]
        ):
            if current and (filled + item.size > batch_bytes or len(current) >= max_items):
                batches.append(current)
                current, filled = [], 0
            current.append(item)
            filled += item.size
    if current:
        batches.append(current)
    return batches


def run_batch(items: Sequence[WorkItem], dest: Path, transfer: Transfer) -> DownloadReport:
    """Fetch one batch (whole files are verified and moved into place; ranges wait for
    ``finish_downloads``). Runs every item, then the caller raises with ``raise_for_failures``."""
    ahead = [
        item.entry
        for item in items
        if item.entry.size and not _in_place(target_path(dest, item.entry), item.entry)
    ]
    for request in transfer.fetch_urls_ahead(ahead):  # a batch's URLs in one or two requests
        request()
    with ThreadPoolExecutor(transfer.settings.max_workers, thread_name_prefix="batch") as pool:
        futures = [pool.submit(_run_item, item, dest, transfer) for item in items]
    outcomes, errors = [], {}
    for item, future in zip(items, futures, strict=True):
        label = _label(item)
        try:
            outcomes.append(future.result().model_copy(update={"path": label}))
        except Exception as exc:  # reported per item; the batch is retried as a whole
            errors[label] = exc
            outcomes.append(FileOutcome(path=label, status="failed", error=str(exc)))
            log.warning("%s", exc)
    return DownloadReport.of(outcomes, errors)


def _run_item(item: WorkItem, dest: Path, transfer: Transfer) -> FileOutcome:
    if item.range is None:
        return download_entry(item.entry, dest, transfer)
    target = target_path(dest, item.entry)
    if (ranges_dir(target) / item.range.marker).exists() or _in_place(target, item.entry):
        return FileOutcome(path=item.entry.path, status="skipped")
    target.parent.mkdir(parents=True, exist_ok=True)
    transferred = fetch_range(item.entry, item.range, dest, transfer)
    return FileOutcome(path=item.entry.path, status="downloaded", bytes_transferred=transferred)


def _in_place(target: Path, entry: ManifestEntry) -> bool:
    """The assembled file is there (it was verified when it was assembled)."""
    try:
        return target.stat().st_size == entry.size
    except FileNotFoundError:
        return False


def _label(item: WorkItem) -> str:
    return item.entry.path if item.range is None else f"{item.entry.path} [bytes {item.range.marker}]"


def finish_downloads(
    entries: Sequence[ManifestEntry], dest: Path, settings: DownloadSettings | None = None
) -> DownloadReport:
    """After every batch: assemble and verify the split files, and check each file is in place."""
    settings = settings or DownloadSettings()
    with ThreadPoolExecutor(settings.max_workers, thread_name_prefix="finish") as pool:
        futures = [pool.submit(_finish_entry, entry, dest, settings) for entry in entries]
    outcomes, errors = [], {}
    for entry, future in zip(entries, futures, strict=True):
        try:
            outcomes.append(future.result())
        except Exception as exc:
            errors[entry.path] = exc
            outcomes.append(FileOutcome(path=entry.path, status="failed", error=str(exc)))
    return DownloadReport.of(outcomes, errors)


def _finish_entry(entry: ManifestEntry, dest: Path, settings: DownloadSettings) -> FileOutcome:
    target = target_path(dest, entry)
    ranges = plan_ranges(entry.size, settings)
    if ranges is not None and part_path(target).exists():
        return FileOutcome(path=entry.path, status="downloaded", verified=assemble(entry, dest, ranges))
    if _in_place(target, entry):  # whole files are verified before they are moved into place
        return FileOutcome(path=entry.path, status="skipped")
    raise PennsieveError(f"{entry.path} was not downloaded")
