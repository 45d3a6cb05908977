"""A fake Pennsieve for tests: a real HTTP server on 127.0.0.1 speaking Pennsieve's JSON.

It serves the api endpoints (cognito-config, datasets, packages with cursor pages, sources-paged,
file URLs, download-manifest), presigned-style file URLs with Range support, and the upload
service under ``/api2`` (so a client that mixes up its hosts fails). Bearer tokens must be
access tokens that moto's Cognito issued for the test pool; ``X-ORGANIZATION-ID`` must name the
test organization. File bytes are generated deterministically from (file id, offset) and
streamed, so large files cost no memory. Faults are injected per test through ``server.faults``.

Build it inside ``moto.mock_aws()`` (token checks and upload verification go through boto3).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

BLOCK = 64 * 1024
TIMESTAMP = "2024-05-01T12:00:00Z"
ChecksumStyle = Literal["md5", "etag", "multipart", "none"]


# -- deterministic content -----------------------------------------------------------------------


def _block(seed: str, index: int) -> bytes:
    return hashlib.shake_256(f"{seed}:{index}".encode()).digest(BLOCK)


def content_range(seed: str, start: int, end: int) -> Iterator[bytes]:
    """Bytes ``start``..``end`` (inclusive) of the file generated from ``seed``, in blocks."""
    position = start
    while position <= end:
        index, offset = divmod(position, BLOCK)
        piece = _block(seed, index)[offset : offset + (end - position + 1)]
        yield piece
        position += len(piece)


def content_bytes(seed: str, size: int) -> bytes:
    """The whole file (tests compare small and medium files with it)."""
    return b"".join(content_range(seed, 0, size - 1)) if size else b""


# -- the data model ------------------------------------------------------------------------------


@dataclass(eq=False)
class FakeFile:
    id: int
    name: str
    size: int
    package: FakePackage
    checksum_style: ChecksumStyle = "etag"
    part_size: int = 8 * 1024 * 1024
    scan_failed: bool = False

    @property
    def seed(self) -> str:
        return f"file-{self.id}"

    def body(self) -> bytes:
        return content_bytes(self.seed, self.size)

    @functools.cache  # noqa: B019 - files live as long as their server; the content never changes
    def md5(self) -> str:
        digest = hashlib.md5(usedforsecurity=False)
        for chunk in content_range(self.seed, 0, self.size - 1):
            digest.update(chunk)
        return digest.hexdigest()

    @functools.cache  # noqa: B019
    def multipart_etag(self) -> str:
        parts = []
        for start in range(0, max(self.size, 1), self.part_size):
            end = min(start + self.part_size, self.size) - 1
            digest = hashlib.md5(usedforsecurity=False)
            for chunk in content_range(self.seed, start, end):
                digest.update(chunk)
            parts.append(digest.digest())
        return f"{hashlib.md5(b''.join(parts), usedforsecurity=False).hexdigest()}-{len(parts)}"

    def content_json(self) -> dict[str, Any]:
        md5, checksum = None, None
        if self.checksum_style == "md5":
            md5 = self.md5()
        elif self.checksum_style == "etag":
            checksum = {"chunkSize": self.size, "checksum": self.md5()}
        elif self.checksum_style == "multipart":
            checksum = {"chunkSize": self.part_size, "checksum": self.multipart_etag()}
        dataset = self.package.dataset
        return {
            "packageId": self.package.node_id,
            "name": self.name,
            "filename": self.name,
            "fileType": "GenericData",
            "s3bucket": "pennsieve-prod-storage-use1",
            "s3key": f"O1/D{dataset.int_id}/{uuid.UUID(int=self.id)}/{self.name}",
            "objectType": "source",
            "size": self.size,
            "createdAt": TIMESTAMP,
            "updatedAt": TIMESTAMP,
            "id": self.id,
            "md5": md5,
            "checksum": checksum,
            "uploadedState": "UPLOADED",
            "processingState": "PROCESSED",
        }


@dataclass
class FakePackage:
    int_id: int
    node_id: str
    name: str
    package_type: str
    dataset: FakeDataset
    parent: FakePackage | None = None
    state: str = "READY"
    files: list[FakeFile] = field(default_factory=list)

    @property
    def is_collection(self) -> bool:
        return self.package_type == "Collection"

    def folder_names(self) -> list[str]:
        names, node = [], self.parent
        while node is not None:
            names.insert(0, node.name)
            node = node.parent
        return names

    def content_json(self) -> dict[str, Any]:
        """``PackageContent``, as in the dataset's package listing."""
        return {
            "id": self.int_id,
            "nodeId": self.node_id,
            "name": self.name,
            "packageType": self.package_type,
            "datasetId": self.dataset.int_id,
            "datasetNodeId": self.dataset.node_id,
            "ownerId": 1,
            "state": self.state,
            "parentId": self.parent.int_id if self.parent else None,
            "createdAt": TIMESTAMP,
            "updatedAt": TIMESTAMP,
        }

    def wrapped_json(self) -> dict[str, Any]:
        """``WrappedPackage``, as in ``GET /packages/{id}`` and a dataset's children."""
        return {
            "id": self.node_id,
            "nodeId": self.node_id,
            "name": self.name,
            "packageType": self.package_type,
            "datasetId": self.dataset.node_id,
            "datasetNodeId": self.dataset.node_id,
            "ownerId": 1,
            "state": self.state,
            "parentId": self.parent.int_id if self.parent else None,
            "createdAt": TIMESTAMP,
            "updatedAt": TIMESTAMP,
            "intId": self.int_id,
            "datasetIntId": self.dataset.int_id,
        }

    def sources_json(self) -> list[dict[str, Any]]:
        return [{"content": f.content_json()} for f in self.files]


@dataclass
class FakeDataset:
    int_id: int
    node_id: str
    name: str
    server: FakePennsieve
    packages: list[FakePackage] = field(default_factory=list)

    def add_folder(self, name: str, parent: FakePackage | None = None) -> FakePackage:
        return self._add(name, "Collection", parent, "READY")

    def add_package(
        self,
        name: str,
        files: list[tuple[str, int]] | None = None,
        *,
        parent: FakePackage | None = None,
        package_type: str = "Unsupported",
        checksum: ChecksumStyle = "etag",
        part_size: int = 8 * 1024 * 1024,
        state: str = "READY",
    ) -> FakePackage:
        """A package with source files ``[(name, size)]`` (default: one file named like it, 1 KiB)."""
        package = self._add(name, package_type, parent, state)
        for file_name, size in files if files is not None else [(name, 1024)]:
            file = FakeFile(
                self.server.next_id(), file_name, size, package, checksum_style=checksum, part_size=part_size
            )
            package.files.append(file)
            self.server.files[file.id] = file
        return package

    def _add(self, name: str, package_type: str, parent: FakePackage | None, state: str) -> FakePackage:
        int_id = self.server.next_id()
        kind = "collection" if package_type == "Collection" else "package"
        node_id = f"N:{kind}:{uuid.UUID(int=int_id)}"
        package = FakePackage(int_id, node_id, name, package_type, self, parent, state)
        self.packages.append(package)
        self.server.packages[node_id] = package
        return package

    def visible_packages(self) -> list[FakePackage]:
        return [p for p in self.packages if p.state not in {"DELETING", "DELETED", "RESTORING"}]

    def dto(self) -> dict[str, Any]:
        top = [p for p in self.visible_packages() if p.parent is None]
        return {
            "content": {
                "id": self.node_id,
                "name": self.name,
                "description": "",
                "state": "READY",
                "createdAt": TIMESTAMP,
                "updatedAt": TIMESTAMP,
                "packageType": "DataSet",
                "datasetType": "research",
                "status": "NO_STATUS",
                "automaticallyProcessPackages": False,
                "license": None,
                "tags": [],
                "intId": self.int_id,
            },
            "organization": self.server.organization_id,
            "owner": "N:user:00000000-0000-4000-8000-000000000001",
            "children": [{"content": p.wrapped_json()} for p in top],
            "canPublish": False,
        }


# -- fault injection -----------------------------------------------------------------------------


@dataclass
class Fault:
    pattern: re.Pattern[str]
    method: str | None
    remaining: int
    status: int = 500
    headers: dict[str, str] = field(default_factory=dict)
    message: str = "injected failure"


class Faults:
    """Per-test misbehaviour. Path patterns are regexes searched in the request path."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._http: list[Fault] = []
        self.corrupt_files: set[int] = set()
        self._drops: dict[int, list[int]] = {}  # file id -> [at_byte, remaining]
        self.reject_all_tokens = False

    def fail(
        self, path: str, *, status: int = 500, times: int = 1, method: str | None = None, **headers: str
    ) -> None:
        with self._lock:
            self._http.append(Fault(re.compile(path), method, times, status, dict(headers)))

    def rate_limit(self, path: str, *, times: int = 1, retry_after: float = 0) -> None:
        self.fail(path, status=429, times=times, **{"Retry-After": f"{retry_after:g}"})

    def corrupt(self, file_id: int) -> None:
        """Serve this file with one byte flipped (its checksum no longer matches)."""
        self.corrupt_files.add(file_id)

    def drop_connection(self, file_id: int, at_byte: int, *, times: int = 1) -> None:
        """Close the connection after sending the file's bytes up to ``at_byte`` (exclusive)."""
        with self._lock:
            self._drops[file_id] = [at_byte, times]

    def take_http(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self._http:
                if fault.remaining > 0 and (fault.method in (None, method)) and fault.pattern.search(path):
                    fault.remaining -= 1
                    return fault
        return None

    def take_drop(self, file_id: int, start: int, end: int) -> int | None:
        with self._lock:
            drop = self._drops.get(file_id)
            if drop and drop[1] > 0 and start < drop[0] <= end:
                drop[1] -= 1
                return drop[0]
        return None


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]


# -- Cognito (moto) ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CognitoUser:
    """A moto Cognito pool set up the way Pennsieve's token pool is, with one API key user."""

    region: str
    pool_id: str
    client_id: str
    api_key: str
    api_secret: str
    organization_id: str


def create_cognito_user(
    *,
    region: str = "us-east-1",
    api_key: str = "3f6b1c0e-key0-4c1a-9f00-000000000001",
    api_secret: str = "Secret-0f3a9b7c1d",
    organization_id: str = "N:organization:050fae39-4412-43ef-a514-703ed8e299d5",
) -> CognitoUser:
    import boto3

    idp = boto3.client("cognito-idp", region_name=region)
    pool_id = idp.create_user_pool(
        PoolName="pennsieve-token-pool",
        Schema=[{"Name": "organization_node_id", "AttributeDataType": "String", "Mutable": True}],
    )["UserPool"]["Id"]
    client_id = idp.create_user_pool_client(
        UserPoolId=pool_id,
        ClientName="pennsieve-api-keys",
        ExplicitAuthFlows=["ALLOW_USER_PASSWORD_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"],
    )["UserPoolClient"]["ClientId"]
    idp.admin_create_user(
        UserPoolId=pool_id,
        Username=api_key,
        UserAttributes=[{"Name": "custom:organization_node_id", "Value": organization_id}],
        MessageAction="SUPPRESS",
    )
    idp.admin_set_user_password(UserPoolId=pool_id, Username=api_key, Password=api_secret, Permanent=True)
    return CognitoUser(region, pool_id, client_id, api_key, api_secret, organization_id)


# -- the server ----------------------------------------------------------------------------------


class FakePennsieve:
    """Start with ``start()`` (or as a context manager); ``api_host``/``api2_host`` are its URLs."""

    def __init__(
        self,
        cognito: CognitoUser,
        *,
        upload_bucket: str = "pennsieve-storage-test",
        status_page_size: int = 500,
    ) -> None:
        import boto3

        self.cognito = cognito
        self.organization_id = cognito.organization_id
        self.upload_bucket = upload_bucket
        self.status_page_size = status_page_size
        self.faults = Faults()
        self.requests: list[RecordedRequest] = []
        self.datasets: dict[str, FakeDataset] = {}
        self.packages: dict[str, FakePackage] = {}
        self.files: dict[int, FakeFile] = {}
        self.manifests: dict[str, dict[str, Any]] = {}
        self.assets: dict[str, dict[str, Any]] = {}  # viewer assets by id (api2 /packages/assets)
        self.expired_tokens: set[str] = set()
        self._seen_tokens: set[str] = set()
        self._valid_tokens: set[str] = set()
        self._url_generation = 0
        self._signing_key = uuid.uuid4().bytes
        self._ids = 0
        self._lock = threading.Lock()
        self._idp = boto3.client("cognito-idp", region_name=cognito.region)
        self._s3 = boto3.client("s3", region_name=cognito.region)
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # lifecycle

    def start(self) -> FakePennsieve:
        handler = type("Handler", (_Handler,), {"fake": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-pennsieve",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd:
            self._httpd.shutdown()
            self._httpd.server_close()

    def __enter__(self) -> FakePennsieve:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        assert self._httpd, "start() the server first"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    @property
    def api_host(self) -> str:
        return self.base_url

    @property
    def api2_host(self) -> str:
        return self.base_url + "/api2"

    # data

    def next_id(self) -> int:
        with self._lock:
            self._ids += 1
            return self._ids

    def add_dataset(self, name: str) -> FakeDataset:
        int_id = self.next_id()
        dataset = FakeDataset(int_id, f"N:dataset:{uuid.UUID(int=int_id)}", name, self)
        self.datasets[dataset.node_id] = dataset
        return dataset

    # token control

    def expire_tokens(self) -> None:
        """Every token used so far is now expired (401); fresh logins work."""
        with self._lock:
            self.expired_tokens |= self._seen_tokens

    def expire_download_urls(self) -> None:
        """Every presigned URL issued so far now answers 403, as S3 does once one expires."""
        with self._lock:
            self._url_generation += 1

    # what the client sent

    def requests_to(self, pattern: str, method: str | None = None) -> list[RecordedRequest]:
        regex = re.compile(pattern)
        with self._lock:
            return [r for r in self.requests if regex.search(r.path) and method in (None, r.method)]

    def bearer_tokens(self) -> list[str]:
        """Distinct bearer tokens in the order they were first used."""
        tokens: list[str] = []
        with self._lock:
            for request in self.requests:
                token = request.headers.get("authorization", "").removeprefix("Bearer ")
                if token and token not in tokens:
                    tokens.append(token)
        return tokens

    # used by the handler

    def record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def check_token(self, token: str) -> str | None:
        """None when the token is good, else the 401 message."""
        from botocore.exceptions import ClientError

        with self._lock:
            self._seen_tokens.add(token)
            if self.faults.reject_all_tokens:
                return "Unauthorized"
            if token in self.expired_tokens:
                return "The incoming token has expired"
            known = token in self._valid_tokens
        if not known:
            try:
                self._idp.get_user(AccessToken=token)
            except ClientError:
                return "Unauthorized"
            claims = _jwt_claims(token)
            issuer = f"https://cognito-idp.{self.cognito.region}.amazonaws.com/{self.cognito.pool_id}"
            if claims.get("iss") != issuer or claims.get("client_id") != self.cognito.client_id:
                return "Unauthorized"
            with self._lock:
                self._valid_tokens.add(token)
        if _jwt_claims(token).get("exp", 0) <= time.time():
            return "The incoming token has expired"
        return None

    def sign_url(self, file: FakeFile) -> str:
        with self._lock:
            generation = self._url_generation
        signature = self._signature(file.id, generation)
        return f"{self.base_url}/s3/{file.id}?X-Amz-Expires=3600&X-Amz-Generation={generation}&X-Amz-Signature={signature}"

    def check_signature(self, file_id: int, generation: str, signature: str) -> str | None:
        if not generation.isdigit() or not hmac.compare_digest(
            self._signature(file_id, int(generation)), signature
        ):
            return "SignatureDoesNotMatch"
        with self._lock:
            if int(generation) != self._url_generation:
                return "AccessDenied: Request has expired"
        return None

    def _signature(self, file_id: int, generation: int) -> str:
        return hmac.new(self._signing_key, f"{file_id}:{generation}".encode(), hashlib.sha256).hexdigest()

    def find_dataset(self, dataset_id: str) -> FakeDataset | None:
        return self.datasets.get(dataset_id) or next(
            (d for d in self.datasets.values() if str(d.int_id) == dataset_id), None
        )

    def find_package(self, package_id: str) -> FakePackage | None:
        package = self.packages.get(package_id) or next(
            (p for p in self.packages.values() if str(p.int_id) == package_id), None
        )
        if package is None or package.state in {"DELETING", "DELETED", "RESTORING"}:
            return None
        return package


def _jwt_claims(token: str) -> dict[str, Any]:
    import base64

    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


class _HttpError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate sends: with Nagle on, each small response would wait for
    # the client's delayed ACK (~40 ms). S3 and Pennsieve do not stall so.
    disable_nagle_algorithm = True
    fake: FakePennsieve

    def log_message(self, format: str, *args: Any) -> None:  # quiet test output
        return

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    # routing

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        self.query = parse_qs(url.query)
        body = self._read_body()
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.fake.record(RecordedRequest(method, url.path, self.query, headers))
        try:
            fault = self.fake.faults.take_http(method, url.path)
            if fault:
                raise _HttpError(fault.status, fault.message, fault.headers)
            if url.path.startswith("/s3/") and method == "GET":
                return self._serve_file(url.path.removeprefix("/s3/"), headers)
            if url.path == "/authentication/cognito-config" and method == "GET":
                return self._json(200, self._cognito_config())
            self._authorize(headers)
            for route_method, pattern, handler in _ROUTES:
                match = pattern.fullmatch(url.path)
                if match and route_method == method:
                    return self._json(200, handler(self, body, *match.groups()))
            raise _HttpError(404, f"no route for {method} {url.path}")
        except _HttpError as exc:
            self._json(exc.status, {"message": exc.message, "status": exc.status}, exc.headers)

    def _read_body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return None

    def _authorize(self, headers: dict[str, str]) -> None:
        auth = headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            raise _HttpError(401, "Unauthorized")
        problem = self.fake.check_token(auth.removeprefix("Bearer "))
        if problem:
            raise _HttpError(401, problem)
        organization = headers.get("x-organization-id")
        if not organization:
            raise _HttpError(400, "X-ORGANIZATION-ID header is required")
        if organization != self.fake.organization_id:
            raise _HttpError(403, f"not a member of organization {organization}")

    def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _param(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default

    # api

    def _cognito_config(self) -> dict[str, Any]:
        c = self.fake.cognito
        pool = {"region": c.region, "id": c.pool_id, "appClientId": c.client_id}
        return {
            "region": c.region,
            "userPool": {"region": c.region, "id": f"{c.region}_userpool", "appClientId": "user-pool-client"},
            "tokenPool": pool,
            "identityPool": {"region": c.region, "id": f"{c.region}:identity-pool"},
        }

    def _dataset(self, dataset_id: str) -> FakeDataset:
        dataset = self.fake.find_dataset(dataset_id)
        if dataset is None:
            raise _HttpError(404, f"dataset {dataset_id} not found")
        return dataset

    def _package(self, package_id: str) -> FakePackage:
        package = self.fake.find_package(package_id)
        if package is None:
            raise _HttpError(404, f"package {package_id} not found")
        return package

    def get_dataset(self, _body: Any, dataset_id: str) -> Any:
        return self._dataset(dataset_id).dto()

    def get_packages(self, _body: Any, dataset_id: str) -> Any:
        dataset = self._dataset(dataset_id)
        page_size = int(self._param("pageSize", "100"))
        if not 1 <= page_size <= 1000:
            raise _HttpError(400, "pageSize must be between 1 and 1000")
        cursor = self._param("cursor")
        after = int(cursor.removeprefix("package:")) if cursor else 0
        with_sources = self._param("includeSourceFiles", "false") == "true"
        remaining = sorted(
            (p for p in dataset.visible_packages() if p.int_id > after), key=lambda p: p.int_id
        )
        page = remaining[:page_size]
        packages = []
        for package in page:
            dto: dict[str, Any] = {"content": package.content_json()}
            if with_sources and not package.is_collection:
                dto["objects"] = {"source": package.sources_json()}
            packages.append(dto)
        more = len(remaining) > page_size
        return {"packages": packages, "cursor": f"package:{page[-1].int_id}" if more else None}

    def get_package(self, _body: Any, package_id: str) -> Any:
        package = self._package(package_id)
        dto: dict[str, Any] = {"content": package.wrapped_json(), "properties": [], "children": []}
        if self._param("include") == "sources" and not package.is_collection:
            dto["objects"] = {"source": package.sources_json()}
        if package.is_collection:
            children = [p for p in package.dataset.visible_packages() if p.parent is package]
            dto["children"] = [{"content": p.wrapped_json()} for p in children]
        return dto

    def get_sources_paged(self, _body: Any, package_id: str) -> Any:
        package = self._package(package_id)
        limit = int(self._param("limit", "100"))
        offset = int(self._param("offset", "0"))
        results = package.sources_json()[offset : offset + limit]
        return {"limit": limit, "offset": offset, "totalCount": len(package.files), "results": results}

    def get_file_url(self, _body: Any, package_id: str, file_id: str) -> Any:
        package = self._package(package_id)
        file = next((f for f in package.files if str(f.id) == file_id), None)
        if file is None:
            raise _HttpError(404, f"file {file_id} not found in package {package_id}")
        if file.scan_failed:
            raise _HttpError(403, f"file {file_id} failed its malware scan")
        return {"url": self.fake.sign_url(file), "scanStatus": "CLEAN"}

    def post_download_manifest(self, body: Any, *_groups: str) -> Any:
        """As Pennsieve's: every source file under the nodes (``fileIds`` keeps only those files); a
        file's ``path`` is its folders, plus its package's name when the package holds several."""
        if not isinstance(body, dict) or not isinstance(body.get("nodeIds"), list):
            raise _HttpError(400, "nodeIds is required")
        file_ids = body.get("fileIds")
        if file_ids is not None and not (
            isinstance(file_ids, list) and all(isinstance(i, int) for i in file_ids)
        ):
            raise _HttpError(400, "fileIds must be a list of integers")
        wanted = None if file_ids is None else set(file_ids)
        items = []
        for node_id in body["nodeIds"]:
            for package in self._descendants(self._package(node_id)):
                path = package.folder_names() + ([package.name] if len(package.files) > 1 else [])
                for file in package.files:
                    if wanted is None or file.id in wanted:
                        items.append(
                            {
                                "nodeId": package.node_id,
                                "fileName": file.name,
                                "packageName": package.name,
                                "path": path,
                                "url": self.fake.sign_url(file),
                                "size": file.size,
                                "fileExtension": file.name.partition(".")[2] or None,
                            }
                        )
        return {"header": {"count": len(items), "size": sum(i["size"] for i in items)}, "data": items}

    def _descendants(self, package: FakePackage) -> list[FakePackage]:
        if not package.is_collection:
            return [package]
        children = [p for p in package.dataset.visible_packages() if p.parent is package]
        return [d for child in children for d in self._descendants(child)]

    # presigned file URLs

    def _serve_file(self, file_id: str, headers: dict[str, str]) -> None:
        if "authorization" in headers:
            raise _HttpError(400, "InvalidArgument: Only one auth mechanism allowed")
        file = self.fake.files.get(int(file_id)) if file_id.isdigit() else None
        if file is None:
            raise _HttpError(404, "NoSuchKey")
        problem = self.fake.check_signature(
            file.id, self._param("X-Amz-Generation", ""), self._param("X-Amz-Signature", "")
        )
        if problem:
            raise _HttpError(403, problem)
        start, end, status = 0, file.size - 1, 200
        if "range" in headers:
            match = _RANGE.match(headers["range"])
            if not match or int(match.group(1)) >= file.size:
                raise _HttpError(416, "InvalidRange", {"Content-Range": f"bytes */{file.size}"})
            start = int(match.group(1))
            end = min(int(match.group(2)), file.size - 1) if match.group(2) else file.size - 1
            status = 206
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{file.size}")
        self.end_headers()
        drop_at = self.fake.faults.take_drop(file.id, start, end)
        corrupt_at = file.size // 2 if file.id in self.fake.faults.corrupt_files else -1
        position = start
        for chunk in content_range(file.seed, start, end) if file.size else []:
            if start <= corrupt_at <= end and position <= corrupt_at < position + len(chunk):
                flipped = bytearray(chunk)
                flipped[corrupt_at - position] ^= 0xFF
                chunk = bytes(flipped)
            if drop_at is not None and position + len(chunk) >= drop_at:
                self.wfile.write(chunk[: drop_at - position])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.wfile.write(chunk)
            position += len(chunk)

    # upload service (api2)

    def post_upload_manifest(self, body: Any, *_groups: str) -> Any:
        if not isinstance(body, dict) or not body.get("dataset_id"):
            raise _HttpError(400, "dataset_id is required")
        dataset = self._dataset(body["dataset_id"])
        manifest_id = body.get("id")
        if not manifest_id:
            manifest_id = str(uuid.uuid4())
            self.fake.manifests[manifest_id] = {"dataset": dataset, "files": {}}
            return {"manifest_node_id": manifest_id, "nr_files_updated": 0, "nr_files_removed": 0,
                    "updated_files": [], "failed_files": []}  # fmt: skip
        manifest = self._manifest(manifest_id)
        files = body.get("files") or []
        if len(files) > 250:
            raise _HttpError(400, "batch_too_large: max 250 files per request")
        for f in files:
            manifest["files"][f["upload_id"]] = {**f, "status": "Registered"}
        updated = [{"upload_id": f["upload_id"], "status": 1} for f in files]
        return {"manifest_node_id": manifest_id, "nr_files_updated": len(files), "nr_files_removed": 0,
                "updated_files": updated, "failed_files": []}  # fmt: skip

    def _manifest(self, manifest_id: str) -> dict[str, Any]:
        manifest = self.fake.manifests.get(manifest_id)
        if manifest is None:
            raise _HttpError(404, "Manifest not found")
        return manifest

    def _key_prefix(self, manifest_id: str) -> str:
        dataset = self._manifest(manifest_id)["dataset"]
        return f"O1/D{dataset.int_id}/{manifest_id}"

    def post_storage_credentials(self, body: Any, *_groups: str) -> Any:
        manifest_id = (body or {}).get("manifestNodeId", "")
        return {
            "accessKeyId": "ASIAFAKESTORAGEKEY01",
            "secretAccessKey": "fake-storage-secret",
            "sessionToken": "fake-storage-session",
            "expiration": "2099-01-01T00:00:00Z",
            "bucket": self.fake.upload_bucket,
            "keyPrefix": self._key_prefix(manifest_id),
            "region": self.fake.cognito.region,
        }

    # viewer assets: as Pennsieve's packages service answers its asset data target

    def post_viewer_asset(self, body: Any, *_groups: str) -> Any:
        """Create a viewer asset on packages of a dataset; answer with S3 credentials for its prefix."""
        dataset = self._dataset(self._param("dataset_id") or "")
        body = body if isinstance(body, dict) else {}
        for key, kind in (("name", str), ("asset_type", str), ("properties", dict), ("package_ids", list)):
            if not isinstance(body.get(key), kind) or (kind is str and not body[key]):
                raise _HttpError(400, f"{key} is required ({kind.__name__})")
        for package_id in body["package_ids"]:
            package = self.fake.find_package(package_id)
            if package is None or package.dataset is not dataset:
                raise _HttpError(404, f"package {package_id} not found in dataset {dataset.node_id}")
        asset_id = str(uuid.uuid4())
        asset = {"id": asset_id, "dataset_id": dataset.node_id, "name": body["name"],
                 "asset_type": body["asset_type"], "status": "pending", "properties": body["properties"],
                 "package_ids": list(body["package_ids"])}  # fmt: skip
        self.fake.assets[asset_id] = asset
        credentials = {
            "access_key_id": "ASIAFAKEASSETKEY0001",
            "secret_access_key": "fake-asset-secret",
            "session_token": "fake-asset-session",
            "expiration": "2099-01-01T00:00:00Z",
            "bucket": self.fake.upload_bucket,
            "region": self.fake.cognito.region,
            "key_prefix": f"assets/{dataset.node_id}/{asset_id}",
        }
        public = {k: asset[k] for k in ("id", "dataset_id", "name", "asset_type", "status")}
        return {"asset": public, "upload_credentials": credentials}

    def patch_viewer_asset(self, body: Any, asset_id: str) -> Any:
        asset = self.fake.assets.get(asset_id)
        if asset is None or asset["dataset_id"] != self._param("dataset_id"):
            raise _HttpError(404, f"asset {asset_id} not found")
        status = (body or {}).get("status")
        if status not in ("pending", "ready", "failed"):
            raise _HttpError(400, "status must be pending, ready or failed")
        asset["status"] = status
        return {k: asset[k] for k in ("id", "dataset_id", "name", "asset_type", "status")}

    def post_finalize(self, body: Any, *_groups: str) -> Any:
        from botocore.exceptions import ClientError

        manifest_id = (body or {}).get("manifestNodeId", "")
        manifest = self._manifest(manifest_id)
        files = (body or {}).get("files") or []
        if not files:
            raise _HttpError(400, "files is required and must be non-empty")
        if len(files) > 250:
            raise _HttpError(400, "batch_too_large: max 250 files per request")
        results = []
        for f in files:
            record = manifest["files"].get(f.get("uploadId"))
            if record is None:
                results.append({"uploadId": f.get("uploadId"), "status": "failed", "error": "uploadId not found in manifest"})  # fmt: skip
                continue
            try:
                head = self.fake._s3.head_object(
                    Bucket=self.fake.upload_bucket,
                    Key=f"{self._key_prefix(manifest_id)}/{f['uploadId']}",
                    ChecksumMode="ENABLED",
                )
            except ClientError:
                results.append({"uploadId": f["uploadId"], "status": "failed", "error": "object not found"})
                continue
            # moto stores a multipart upload's composite checksum without S3's "-N" suffix.
            stored = (head.get("ChecksumSHA256") or "").split("-")[0]
            if head["ContentLength"] != f.get("size"):
                results.append({"uploadId": f["uploadId"], "status": "failed", "error": "size mismatch"})
            elif stored != str(f.get("sha256", "")).split("-")[0]:
                results.append({"uploadId": f["uploadId"], "status": "failed", "error": "sha256 mismatch"})
            else:
                record["status"] = "Finalized"
                results.append({"uploadId": f["uploadId"], "status": "finalized"})
        return {"results": results}

    def get_manifest_status(self, _body: Any, *_groups: str) -> Any:
        manifest_id = self._param("manifest_id", "")
        status = self._param("status", "Finalized")
        upload_ids = sorted(
            uid for uid, f in self._manifest(manifest_id)["files"].items() if f["status"] == status
        )
        token = self._param("continuation_token")
        if token:
            upload_ids = [uid for uid in upload_ids if uid > token]
        page = upload_ids[: self.fake.status_page_size]
        more = len(upload_ids) > len(page)
        return {"manifest_id": manifest_id, "status": status, "files": page,
                "continuation_token": page[-1] if more else "", "verified": False}  # fmt: skip


_ID = r"([^/]+)"
_ROUTES = [
    ("GET", re.compile(rf"/datasets/{_ID}"), _Handler.get_dataset),
    ("GET", re.compile(rf"/datasets/{_ID}/packages"), _Handler.get_packages),
    ("POST", re.compile(r"/packages/download-manifest"), _Handler.post_download_manifest),
    ("GET", re.compile(rf"/packages/{_ID}"), _Handler.get_package),
    ("GET", re.compile(rf"/packages/{_ID}/sources-paged"), _Handler.get_sources_paged),
    ("GET", re.compile(rf"/packages/{_ID}/files/{_ID}"), _Handler.get_file_url),
    ("POST", re.compile(r"/api2/upload/manifest"), _Handler.post_upload_manifest),
    ("POST", re.compile(r"/api2/upload/manifest/storage-credentials"), _Handler.post_storage_credentials),
    ("POST", re.compile(r"/api2/upload/manifest/files/finalize"), _Handler.post_finalize),
    ("GET", re.compile(r"/api2/upload/manifest/status"), _Handler.get_manifest_status),
    ("POST", re.compile(r"/api2/packages/assets"), _Handler.post_viewer_asset),
    ("PATCH", re.compile(rf"/api2/packages/assets/{_ID}"), _Handler.patch_viewer_asset),
]
