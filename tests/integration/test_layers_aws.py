"""Layers on the compute node (moto): access points per version, task-definition pieces, IAM, API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError

from pennflow.api import layers as layers_api
from pennflow.api.errors import ApiError, from_validation_errors
from pennflow.layers.build import BuildResult, TreeStats
from pennflow.layers.dynamodb import PK, DynamoLayerRegistry
from pennflow.layers.efs import (
    EfsLayerVersions,
    prune_access_points,
    publish_version,
    read_only_statement,
    task_volumes,
)
from pennflow.layers.models import LayerRecord, LayerStatus
from pennflow.layers.mounts import release_layers, resolve_layers
from pennflow.layers.service import begin_build, new_layer
from tests.integration import aws_fixtures
from tests.integration.api_support import CALLER, LambdaContext, event

mocked_aws = aws_fixtures.mocked_aws
LAYERS_TABLE = "pennflow-layers"
FS_ARN_PREFIX = f"arn:aws:elasticfilesystem:{aws_fixtures.REGION}:123456789012:file-system/"
MANIFEST = BuildResult(
    True, "3.12.7", [{"name": "numpy", "version": "2.1.0"}], TreeStats(4096, 12, "ab" * 32)
)


@pytest.fixture
def registry(mocked_aws: None) -> DynamoLayerRegistry:
    boto3.client("dynamodb", region_name=aws_fixtures.REGION).create_table(
        TableName=LAYERS_TABLE,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": PK, "AttributeType": "S"}],
        KeySchema=[{"AttributeName": PK, "KeyType": "HASH"}],
    )
    return DynamoLayerRegistry(LAYERS_TABLE)


@pytest.fixture
def file_system(mocked_aws: None) -> str:
    efs = boto3.client("efs", region_name=aws_fixtures.REGION)
    return efs.create_file_system(CreationToken="pennflow", Encrypted=True)["FileSystemId"]


def _access_points(file_system_id: str) -> dict[str, dict[str, Any]]:
    efs = boto3.client("efs", region_name=aws_fixtures.REGION)
    points = efs.describe_access_points(FileSystemId=file_system_id)["AccessPoints"]
    return {p["AccessPointArn"]: p for p in points}


def _build(registry: DynamoLayerRegistry, versions: EfsLayerVersions, name: str) -> int:
    before = begin_build(registry, name)
    return publish_version(registry, versions, name, before.version, MANIFEST)


# ------------------------------------------------------------------ EFS access points


def test_each_version_gets_its_own_access_point_and_unused_ones_go(registry, file_system) -> None:
    versions = EfsLayerVersions(file_system, tags={"pennflow:node": "pennflow"})
    registry.create(new_layer("sci", "python-env", requirements="numpy\n"))

    assert _build(registry, versions, "sci") == 1
    [mount_v1] = resolve_layers(["sci"], registry, run_id="r-running")  # a run keeps version 1
    assert _build(registry, versions, "sci") == 2

    record = registry.get("sci")
    assert set(record.access_points) == {"1", "2"}
    points = _access_points(file_system)
    assert set(points) == set(record.access_points.values())
    current = points[record.access_point_arn]
    assert current["RootDirectory"]["Path"] == "/layers/sci/v2"
    assert current["PosixUser"] == {"Uid": 1000, "Gid": 1000}
    tags = {t["Key"]: t["Value"] for t in current["Tags"]}
    assert tags == {"pennflow:node": "pennflow", "pennflow:layer": "sci", "pennflow:layer-version": "2"}
    assert points[mount_v1.access_point_arn]["RootDirectory"]["Path"] == "/layers/sci/v1"
    assert (record.version, record.python_version, record.packages[0].name) == (2, "3.12.7", "numpy")

    release_layers(["sci"], registry, "r-running")
    assert prune_access_points(registry, versions, "sci") == [1]
    assert set(_access_points(file_system)) == {registry.get("sci").access_point_arn}
    assert set(registry.get("sci").access_points) == {"2"}


def test_task_volumes_mount_each_version_read_only_with_tls_and_iam(registry, file_system) -> None:
    versions = EfsLayerVersions(file_system)
    for name in ("sci", "atlas"):
        registry.create(new_layer(name, "data"))
        _build(registry, versions, name)
    mounts = resolve_layers(["sci", "atlas"], registry)
    volumes, mount_points = task_volumes(mounts, file_system)

    assert [v["name"] for v in volumes] == ["layer-atlas", "layer-sci"]
    for volume, mount in zip(volumes, sorted(mounts, key=lambda m: m.name), strict=True):
        config = volume["efsVolumeConfiguration"]
        assert config["fileSystemId"] == file_system
        assert config["transitEncryption"] == "ENABLED"
        assert config["authorizationConfig"] == {"accessPointId": mount.access_point_id, "iam": "ENABLED"}
    assert mount_points == [
        {"sourceVolume": "layer-atlas", "containerPath": "/mnt/layers/atlas", "readOnly": True},
        {"sourceVolume": "layer-sci", "containerPath": "/mnt/layers/sci", "readOnly": True},
    ]
    # A pure function of the layer set: the order asked in changes nothing (one task definition).
    assert task_volumes(list(reversed(mounts)), file_system) == (volumes, mount_points)


def test_the_task_role_may_only_mount_exactly_these_access_points(registry, file_system) -> None:
    versions = EfsLayerVersions(file_system)
    for name in ("sci", "atlas", "other"):
        registry.create(new_layer(name, "data"))
        _build(registry, versions, name)
    mounts = resolve_layers(["sci", "atlas"], registry)
    statement = read_only_statement(mounts, FS_ARN_PREFIX + file_system)

    assert statement["Effect"] == "Allow"
    assert statement["Action"] == ["elasticfilesystem:ClientMount"]
    assert "ClientWrite" not in json.dumps(statement) and "ClientRootAccess" not in json.dumps(statement)
    assert statement["Resource"] == FS_ARN_PREFIX + file_system
    allowed = statement["Condition"]["ArnEquals"]["elasticfilesystem:AccessPointArn"]
    assert allowed == sorted(m.access_point_arn for m in mounts)
    assert registry.get("other").access_point_arn not in allowed


# ------------------------------------------------------------------ the API routes


@dataclass
class FakeJobs:
    started: list[tuple[str, ...]] = field(default_factory=list)
    fail: bool = False

    def build(self, record: LayerRecord, version: int) -> None:
        if self.fail:
            raise RuntimeError("lambda throttled")
        self.started.append(("build", record.name, str(version)))

    def populate(self, record: LayerRecord, version: int, dataset_id: str, package_ids: list[str]) -> None:
        self.started.append(("populate", record.name, str(version), dataset_id, *package_ids))

    def remove(self, record: LayerRecord) -> None:
        self.started.append(("remove", record.name))


@dataclass
class Reply:
    status: int
    body: Any


@pytest.fixture
def api(registry: DynamoLayerRegistry) -> Iterator[tuple[Any, FakeJobs]]:
    """A resolver including the layers router as the node's API does, with its error handlers."""
    app = APIGatewayRestResolver(enable_validation=True)
    app.include_router(layers_api.router, prefix="/layers")

    @app.exception_handler(ApiError)
    def api_error(exc: ApiError) -> Response:
        return Response(exc.status, "application/json", json.dumps(exc.body()))

    @app.exception_handler(RequestValidationError)
    def invalid(exc: RequestValidationError) -> Response:
        error = from_validation_errors(exc.errors())
        return Response(error.status, "application/json", json.dumps(error.body()))

    jobs = FakeJobs()
    app.dependency_overrides[layers_api.layer_registry] = lambda: registry
    app.dependency_overrides[layers_api.layer_jobs] = lambda: jobs

    def call(method: str, path: str, **kwargs: Any) -> Reply:
        response = app.resolve(event(method, path, **kwargs), LambdaContext())
        return Reply(response["statusCode"], json.loads(response["body"]) if response["body"] else None)

    yield call, jobs


def test_api_create_list_get_and_build(api, registry) -> None:
    call, jobs = api
    created = call("POST", "/layers", body={"name": "sci", "type": "python-env", "requirements": "numpy\n"})
    assert created.status == 201, created.body
    assert created.body["status"] == "BUILDING" and created.body["createdBy"] == CALLER
    assert jobs.started == [("build", "sci", "1")]

    # The build finishes elsewhere (the layer_build task), then the table shows it READY.
    registry.transition("sci", LayerStatus.READY, expect_version=0, version=1, size_bytes=3 * 1024**3)
    listing = call("GET", "/layers")
    assert listing.status == 200
    [row] = listing.body["layers"]
    assert (row["name"], row["status"], row["storageClass"]) == ("sci", "READY", "Standard")
    assert row["monthlyCostUsd"] == pytest.approx(0.90)

    again = call("POST", "/layers/sci/build")
    assert again.status == 202 and again.body == {"name": "sci", "status": "BUILDING", "version": 2}
    busy = call("POST", "/layers/sci/build")
    assert busy.status == 409 and "already BUILDING" in busy.body["error"]["message"]
    detail = call("GET", "/layers/sci")
    assert detail.status == 200 and detail.body["requirements"] == "numpy\n" and detail.body["packages"] == []


def test_api_populate_a_data_layer(api) -> None:
    call, jobs = api
    assert call("POST", "/layers", body={"name": "atlas", "type": "data"}).body["status"] == "EMPTY"
    started = call("POST", "/layers/atlas/populate", body={"datasetId": "N:dataset:abc-123"})
    assert started.status == 202 and started.body["version"] == 1
    assert jobs.started == [("populate", "atlas", "1", "N:dataset:abc-123")]
    wrong = call("POST", "/layers/atlas/build")
    assert wrong.status == 422 and wrong.body["error"]["fields"][0]["field"] == "type"


def test_api_errors_name_the_field(api) -> None:
    call, _ = api
    bad_name = call("POST", "/layers", body={"name": "Bad_Name", "type": "data"})
    assert bad_name.status == 422
    assert ("body", "name") in {(f["in"], f["field"]) for f in bad_name.body["error"]["fields"]}
    bad_type = call("POST", "/layers", body={"name": "x", "type": "conda"})
    assert bad_type.status == 422 and bad_type.body["error"]["fields"][0]["field"] == "type"
    no_requirements = call("POST", "/layers", body={"name": "env", "type": "python-env"})
    assert (
        no_requirements.status == 422
        and no_requirements.body["error"]["fields"][0]["field"] == "requirements"
    )
    unknown = call("GET", "/layers/ghost")
    assert unknown.status == 404 and unknown.body["error"]["fields"][0] == {
        "field": "name",
        "in": "path",
        "message": "no such layer",
    }
    bad_path = call("GET", "/layers/Not_Valid")
    assert bad_path.status == 422 and bad_path.body["error"]["fields"][0]["in"] == "path"
    call("POST", "/layers", body={"name": "dup", "type": "data"})
    dup = call("POST", "/layers", body={"name": "dup", "type": "data"})
    assert dup.status == 409 and dup.body["error"]["code"] == "layer_exists"


def test_api_refuses_to_delete_a_layer_in_use(api, registry) -> None:
    call, jobs = api
    call("POST", "/layers", body={"name": "atlas", "type": "data"})
    begin_build(registry, "atlas")
    registry.transition("atlas", LayerStatus.READY, expect_version=0, version=1)
    resolve_layers(["atlas"], registry, run_id="r-active")

    refused = call("DELETE", "/layers/atlas")
    assert refused.status == 409 and "r-active" in refused.body["error"]["message"]
    release_layers(["atlas"], registry, "r-active")
    deleted = call("DELETE", "/layers/atlas")
    assert deleted.status == 200 and deleted.body == {"name": "atlas", "deleted": True}
    assert jobs.started[-1] == ("remove", "atlas")
    assert call("GET", "/layers/atlas").status == 404


def test_api_a_job_that_cannot_start_leaves_the_layer_failed(api, registry) -> None:
    call, jobs = api
    call("POST", "/layers", body={"name": "atlas", "type": "data"})
    jobs.fail = True
    registry.create(new_layer("env", "python-env", requirements="x\n"))
    reply = call("POST", "/layers/env/build")
    assert reply.status == 503
    record = registry.get("env")
    assert record.status is LayerStatus.FAILED and "lambda throttled" in record.error
