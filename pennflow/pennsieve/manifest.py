"""The list of files a run downloads from a dataset, keeping the dataset's folder structure.

One entry per source file, with what a downloader needs (package node id and file id to ask for
a URL, the relative path, size and checksum). Entries are sorted by path, so the same dataset and
selection always give the same manifest. Serialised as JSON lines: one entry per line, the form a
Step Functions Distributed Map reads from S3.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pennflow.pennsieve.checksums import ChecksumKind
from pennflow.pennsieve.errors import NotFound, PennsieveError
from pennflow.pennsieve.models import Dataset, Package, SourceFile

if TYPE_CHECKING:
    from pennflow.pennsieve.client import PennsieveClient


class ManifestEntry(BaseModel):
    model_config = ConfigDict(frozen=True)

    dataset_id: str
    package_node_id: str
    package_id: int
    file_id: int
    path: str = Field(description="relative POSIX path: folders/filename")
    size: int = Field(ge=0)
    checksum: str | None = None
    checksum_kind: ChecksumKind | None = None
    checksum_part_size: int | None = Field(None, description="part size of a multipart ETag, when known")

    @field_validator("path")
    @classmethod
    def _relative_inside(cls, value: str) -> str:
        # Entries may come back from S3 or a user: never let one write outside the destination.
        path = PurePosixPath(value)
        if not value or path.is_absolute() or ".." in path.parts or "\\" in value:
            raise ValueError(f"must be a relative path inside the destination, got {value!r}")
        return value


class DatasetManifest(BaseModel):
    dataset_id: str
    dataset_name: str
    entries: list[ManifestEntry]

    @property
    def total_size(self) -> int:
        return sum(entry.size for entry in self.entries)

    def to_jsonl(self) -> str:
        return "".join(entry.model_dump_json() + "\n" for entry in self.entries)

    def write_jsonl(self, path: Path) -> None:
        path.write_text(self.to_jsonl(), encoding="utf-8")


def read_jsonl(text: str) -> list[ManifestEntry]:
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                entries.append(ManifestEntry.model_validate(json.loads(line)))
            except ValueError as exc:
                raise ValueError(f"manifest line {number}: {exc}") from None
    return entries


def build_manifest(
    client: PennsieveClient, dataset_id: str, package_ids: Sequence[str] | None = None
) -> DatasetManifest:
    """The manifest of a dataset, or of the selected packages (a selected folder brings its contents)."""
    dataset = client.get_dataset(dataset_id)
    packages = list(client.iter_packages(dataset.node_id, page_size=1000))
    return manifest_from_packages(dataset, packages, package_ids)


def manifest_from_packages(
    dataset: Dataset, packages: Iterable[Package], package_ids: Sequence[str] | None = None
) -> DatasetManifest:
    packages = list(packages)
    by_int = {package.int_id: package for package in packages}
    selected = _selection(dataset, packages, by_int, package_ids)
    entries: list[ManifestEntry] = []
    for package in packages:
        if package.is_collection or package.node_id not in selected:
            continue
        folders = _folder_names(package, by_int)
        sources = package.sources
        for source in sources:
            parts = [*folders, _safe(package.content.name)] if len(sources) > 1 else folders
            entries.append(
                _entry(dataset, package, source, PurePosixPath(*parts, _safe(source.display_name)))
            )
    return DatasetManifest(
        dataset_id=dataset.node_id, dataset_name=dataset.name, entries=_disambiguate(entries)
    )


def _selection(
    dataset: Dataset, packages: list[Package], by_int: dict[int, Package], package_ids: Sequence[str] | None
) -> set[str]:
    everything = {package.node_id for package in packages}
    if package_ids is None:
        return everything
    missing = [pid for pid in package_ids if pid not in everything]
    if missing:
        raise NotFound(f"package {', '.join(missing)} not found in dataset {dataset.node_id}", status=404)
    wanted = set(package_ids)
    return {p.node_id for p in packages if any(a.node_id in wanted for a in _lineage(p, by_int))}


def _lineage(package: Package, by_int: dict[int, Package]) -> list[Package]:
    """The package and its ancestors, nearest first."""
    chain = [package]
    while chain[-1].content.parent_id is not None:
        parent = by_int.get(chain[-1].content.parent_id)
        if parent is None:
            raise PennsieveError(
                f"package {package.node_id}: parent {chain[-1].content.parent_id} is not in the dataset listing"
            )
        if parent in chain:
            raise PennsieveError(f"package {package.node_id}: its folders form a cycle")
        chain.append(parent)
    return chain


def _folder_names(package: Package, by_int: dict[int, Package]) -> list[str]:
    return [_safe(folder.content.name) for folder in reversed(_lineage(package, by_int)[1:])]


def _safe(name: str) -> str:
    """One path component: no separators, no '.' or '..', so nothing lands outside the folder."""
    cleaned = name.replace("/", "_").replace("\\", "_").replace("\x00", "_").strip()
    return "_" if cleaned in {"", ".", ".."} else cleaned


def _entry(dataset: Dataset, package: Package, source: SourceFile, path: PurePosixPath) -> ManifestEntry:
    checksum, kind, part_size = None, None, None
    if source.md5:
        checksum, kind = source.md5, "md5"
    elif source.checksum and source.checksum.checksum:
        checksum, kind, part_size = source.checksum.checksum, "s3-etag", source.checksum.chunk_size
    return ManifestEntry(
        dataset_id=dataset.node_id,
        package_node_id=package.node_id,
        package_id=package.int_id,
        file_id=source.id,
        path=str(path),
        size=source.size,
        checksum=checksum,
        checksum_kind=kind,
        checksum_part_size=part_size,
    )


def _disambiguate(entries: list[ManifestEntry]) -> list[ManifestEntry]:
    """Sort by path; a path already taken gets the file id before its extension."""
    entries = sorted(entries, key=lambda e: (e.path, e.package_id, e.file_id))
    taken: set[str] = set()
    result = []
    for entry in entries:
        if entry.path in taken:
            path = PurePosixPath(entry.path)
            entry = entry.model_copy(
                update={"path": str(path.with_name(f"{path.stem} ({entry.file_id}){path.suffix}"))}
            )
        taken.add(entry.path)
        result.append(entry)
    return sorted(result, key=lambda e: e.path)
