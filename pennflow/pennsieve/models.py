"""Pydantic models of the Pennsieve JSON the client reads and writes (camelCase on the wire)."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic.alias_generators import to_camel

COLLECTION = "Collection"
HIDDEN_STATES = frozenset({"DELETING", "DELETED", "RESTORING"})
PLAIN_MD5 = re.compile(r"^[0-9a-f]{32}$")
MULTIPART_ETAG = re.compile(r"^([0-9a-f]{32})-(\d+)$")


class _Wire(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True)


# -- authentication ------------------------------------------------------------------------------


class CognitoPool(_Wire):
    region: str
    id: str
    app_client_id: str


class CognitoConfig(_Wire):
    region: str
    user_pool: CognitoPool
    token_pool: CognitoPool


# -- datasets and packages -----------------------------------------------------------------------


class DatasetContent(_Wire):
    node_id: str = Field(alias="id")
    int_id: int
    name: str


class Dataset(_Wire):
    content: DatasetContent

    @property
    def node_id(self) -> str:
        return self.content.node_id

    @property
    def int_id(self) -> int:
        return self.content.int_id

    @property
    def name(self) -> str:
        return self.content.name


class FileChecksum(_Wire):
    """``checksum.checksum`` is the S3 ETag; ``chunkSize`` the part size of a multipart upload."""

    chunk_size: int | None = None
    checksum: str


class SourceFile(_Wire):
    """One stored file of a package (``FileDTO.content``)."""

    id: int
    name: str
    filename: str | None = Field(None, alias="fileName")
    size: int = Field(ge=0)
    md5: str | None = None
    checksum: FileChecksum | None = None
    s3key: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _accept_lowercase_filename(cls, data: Any) -> Any:
        # Some endpoints spell it "filename", others "fileName".
        if isinstance(data, dict) and "filename" in data and "fileName" not in data:
            data = {**data, "fileName": data["filename"]}
        return data

    @property
    def display_name(self) -> str:
        return self.filename or self.name


class PackageContent(_Wire):
    """Both package shapes: ``PackageContent`` (``id`` int + ``nodeId``) from the dataset listing
    and the older ``WrappedPackage`` (``id`` = node id + ``intId``) from ``GET /packages/{id}``."""

    node_id: str
    int_id: int
    name: str
    package_type: str
    state: str | None = None
    parent_id: int | None = None

    @model_validator(mode="before")
    @classmethod
    def _normalise_ids(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "node_id" in data:
            return data
        raw_id = data.get("id")
        if isinstance(raw_id, str):
            return {**data, "nodeId": raw_id, "intId": data.get("intId")}
        return {**data, "intId": raw_id, "nodeId": data.get("nodeId")}


class FileWrapper(_Wire):
    content: SourceFile


class PackageObjects(_Wire):
    source: list[FileWrapper] = []


class Package(_Wire):
    content: PackageContent
    objects: PackageObjects | None = None

    @property
    def node_id(self) -> str:
        return self.content.node_id

    @property
    def int_id(self) -> int:
        return self.content.int_id

    @property
    def is_collection(self) -> bool:
        return self.content.package_type == COLLECTION

    @property
    def sources(self) -> list[SourceFile]:
        return [wrapper.content for wrapper in self.objects.source] if self.objects else []


class PackagesPage(_Wire):
    packages: list[Package]
    cursor: str | None = None


class SourcesPage(_Wire):
    limit: int
    offset: int
    total_count: int
    results: list[FileWrapper]


class DownloadUrl(_Wire):
    url: str
    scan_status: str | None = None


class DownloadManifestHeader(_Wire):
    count: int
    size: int


class DownloadManifestItem(_Wire):
    node_id: str
    file_name: str
    package_name: str
    path: list[str]
    url: str
    size: int


class DownloadManifest(_Wire):
    header: DownloadManifestHeader
    data: list[DownloadManifestItem]


# -- upload service (api2) -----------------------------------------------------------------------


class UploadFileEntry(BaseModel):
    """A file registered in an upload manifest (snake_case on the wire)."""

    model_config = ConfigDict(frozen=True)

    upload_id: str
    s3_key: str
    target_path: str
    target_name: str
    status: int = 1  # Registered, in the upload service's file status enum


class UploadFileStatus(BaseModel):
    upload_id: str
    status: int | str


class UploadManifestResponse(BaseModel):
    manifest_node_id: str
    nr_files_updated: int = 0
    nr_files_removed: int = 0
    updated_files: list[UploadFileStatus] | None = None
    failed_files: list[str] | None = None


class StorageCredentials(_Wire):
    """Temporary AWS credentials scoped to ``bucket``/``keyPrefix``/*."""

    access_key_id: str
    secret_access_key: SecretStr
    session_token: SecretStr
    expiration: str | None = None
    bucket: str
    key_prefix: str
    region: str


class FinalizeFile(_Wire):
    upload_id: str
    size: int = Field(ge=0)
    sha256: str


class FinalizeResult(_Wire):
    upload_id: str
    status: str  # "finalized" or "failed"
    error: str | None = None


class FinalizeResponse(_Wire):
    results: list[FinalizeResult]


class ManifestStatusPage(BaseModel):
    manifest_id: str
    status: str
    files: list[str] | None = None
    continuation_token: str | None = None
    verified: bool = False


# -- viewer assets (api2 /packages/assets: what Pennsieve's asset data target calls) -------------


class ViewerAsset(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str
    dataset_id: str
    name: str
    asset_type: str
    status: str


class AssetUploadCredentials(BaseModel):
    """Temporary AWS credentials scoped to ``bucket``/``key_prefix``/* (snake_case on the wire)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    access_key_id: str
    secret_access_key: SecretStr
    session_token: SecretStr
    expiration: str | None = None
    bucket: str
    region: str
    key_prefix: str


class CreatedAsset(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    asset: ViewerAsset
    upload_credentials: AssetUploadCredentials
