"""POST /runs keys each run (pennflow.data.content_key): dry runs, duplicates of succeeded runs, force,
rerun, and Pennsieve's refusals. The API Lambda runs against moto (tables, S3, ECR, Secrets
Manager, Cognito) and the fake Pennsieve, reached with the node's secret as in the deployment.

The tables live for the module (the fake's Cognito pool is module-scoped); each test registers a
workflow of its own name, so runs and content keys never meet across tests.
"""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Iterator

import boto3
import pytest

from pennflow import aws
from pennflow.layers.dynamodb import DynamoLayerRegistry
from pennflow.layers.models import LayerRecord, LayerStatus, LayerType
from pennflow.workflow.runs import Status
from tests.fakes.pennsieve_server import FakeDataset, FakePennsieve
from tests.integration import api_support
from tests.integration.api_support import (
    ACCOUNT,
    ENVIRONMENT,
    Api,
    Handoffs,
    create_idempotency_table,
    create_workflows_table,
    tiny,
)
from tests.integration.aws_fixtures import REGION, create_runs_table

pytest_plugins = ["tests.fakes.pennsieve_fixtures"]

RESULTS_BUCKET = "pennflow-results-keys"
LAYERS_TABLE = "pennflow-layers-keys"
REPOSITORY = "lab/work"
IMAGE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{REPOSITORY}:1.0"


@pytest.fixture(scope="module")
def node_secret(pennsieve_aws: None, cognito_user) -> str:
    """The node's tables, results bucket, ECR repository, layers table and Pennsieve secret."""
    create_runs_table()
    create_workflows_table()
    create_idempotency_table()
    boto3.client("dynamodb", region_name=REGION).create_table(
        TableName=LAYERS_TABLE,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "name", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "name", "KeyType": "HASH"}],
    )
    boto3.client("s3", region_name=REGION).create_bucket(Bucket=RESULTS_BUCKET)
    boto3.client("ecr", region_name=REGION).create_repository(repositoryName=REPOSITORY)
    push_image("a")
    value = {"apiKey": cognito_user.api_key, "apiSecret": cognito_user.api_secret}
    return boto3.client("secretsmanager", region_name=REGION).create_secret(
        Name="pennflow/pennsieve-keys", SecretString=json.dumps(value)
    )["ARN"]


def push_image(content: str) -> str:
    """Push a new image under IMAGE's tag (the tag moves); returns its digest."""
    digest = "sha256:" + content * 64
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"digest": digest},
        "layers": [
            {"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 1, "digest": digest}
        ],
    }
    ecr = boto3.client("ecr", region_name=REGION)
    ecr.put_image(repositoryName=REPOSITORY, imageManifest=json.dumps(manifest), imageTag="1.0")
    (image,) = ecr.describe_images(repositoryName=REPOSITORY, imageIds=[{"imageTag": "1.0"}])["imageDetails"]
    return image["imageDigest"]


@pytest.fixture
def api(node_secret: str, pennsieve: FakePennsieve, monkeypatch: pytest.MonkeyPatch) -> Iterator[Api]:
    from lambdas import api as module

    environment = {
        **ENVIRONMENT,
        "PENNSIEVE_SECRET_ARN": node_secret,
        "RESULTS_BUCKET": RESULTS_BUCKET,
        "LAYERS_TABLE": LAYERS_TABLE,
        "PENNSIEVE_API_HOST": pennsieve.api_host,
        "PENNSIEVE_API2_HOST": pennsieve.api2_host,
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    forget(module)
    client = Api(launcher=Handoffs(), canceller=Handoffs())
    module.app.dependency_overrides[module.run_launcher] = lambda: client.launcher
    module.app.dependency_overrides[module.run_canceller] = lambda: client.canceller
    yield client
    module.app.dependency_overrides.clear()
    forget(module)


def forget(module) -> None:
    api_support.forget_ports(module)
    module.run_planning.cache_clear()
    aws.reset_clients()


@pytest.fixture
def dataset(pennsieve: FakePennsieve) -> FakeDataset:
    dataset = pennsieve.add_dataset("eeg-study")
    dataset.add_package("rec-1.edf", [("rec-1.edf", 4096)])
    dataset.add_package("rec-2.edf", [("rec-2.edf", 1024)])
    return dataset


@pytest.fixture
def workflow(api: Api) -> str:
    """A workflow of this test's own (source -> work on an ECR image -> target)."""
    name = f"keys-{uuid.uuid4().hex[:8]}"
    api.register(tiny(name, image=IMAGE))
    return name


def start(api: Api, workflow: str, dataset: FakeDataset, **fields):
    return api.start(workflow, datasetId=dataset.node_id, **fields)


def succeed(api: Api, run_id: str) -> None:
    assert api.store.update_run(run_id, Status.STARTED)
    assert api.store.update_run(run_id, Status.SUCCEEDED)


def runs_of(api: Api, workflow: str) -> list[str]:
    return [run.run_id for run in api.store.list_runs(workflow=workflow).runs]


def manifest_paths(run_id: str) -> list[str]:
    body = boto3.client("s3", region_name=REGION).get_object(
        Bucket=RESULTS_BUCKET, Key=f"runs/{run_id}/manifest.json"
    )["Body"]
    return sorted(item["entry"]["path"] for batch in json.load(body) for item in batch)


def test_a_dry_run_returns_the_key_the_inputs_and_the_plan_and_creates_nothing(api, workflow, dataset):
    reply = start(api, workflow, dataset, dryRun=True, params={"MODE": "slow"})

    assert reply.status == 200, reply.body
    plan = reply.body
    assert plan["dryRun"] is True and len(plan["contentKey"]) == 64
    assert plan["duplicateOf"] is None
    assert plan["inputs"]["datasetId"] == dataset.node_id
    assert (plan["inputs"]["fileCount"], plan["inputs"]["totalBytes"]) == (2, 5120)
    assert plan["inputs"]["withoutChecksum"] == 0
    work = next(p for p in plan["processors"] if p["id"] == "work")
    assert work["image"]["source"] == "ecr" and work["image"]["digest"].startswith("sha256:")
    assert work["params"] == {"WINDOW": "30", "MODE": "slow"}
    assert plan["warnings"] == []  # the image resolved, every file has a checksum
    assert "series-parallel" in plan["plan"]
    assert (
        start(api, workflow, dataset, dryRun=True, params={"MODE": "slow"}).body["contentKey"]
        == (plan["contentKey"])
    )
    assert runs_of(api, workflow) == [] and api.launcher.run_ids == []


def test_a_start_is_keyed_the_key_stored_and_the_manifest_written_before_the_hand_over(
    api, workflow, dataset
):
    key = start(api, workflow, dataset, dryRun=True).body["contentKey"]

    reply = start(api, workflow, dataset)

    assert reply.status == 202, reply.body
    run_id = reply.body["runId"]
    assert reply.body["contentKey"] == key
    assert api.store.get_run(run_id).content_key == key
    assert api("GET", f"/runs/{run_id}").body["contentKey"] == key
    assert manifest_paths(run_id) == ["rec-1.edf", "rec-2.edf"]
    assert api.launcher.run_ids == [run_id]


def test_an_identical_start_after_a_success_returns_that_run_and_starts_nothing(api, workflow, dataset):
    first = start(api, workflow, dataset).body["runId"]
    not_yet = start(api, workflow, dataset)  # the first has not succeeded: no duplicate yet
    assert not_yet.status == 202
    succeed(api, first)

    reply = start(api, workflow, dataset)

    assert reply.status == 200, reply.body
    assert reply.body["duplicateOf"] == first
    assert reply.body["run"]["runId"] == first and reply.body["run"]["status"] == "SUCCEEDED"
    assert reply.body["contentKey"] == api.store.get_run(first).content_key
    assert "force" in reply.body["message"]
    assert api.launcher.run_ids == [first, not_yet.body["runId"]]
    assert len(runs_of(api, workflow)) == 2
    assert start(api, workflow, dataset, dryRun=True).body["duplicateOf"] == first


def test_force_starts_a_new_run_with_the_same_key(api, workflow, dataset):
    first = start(api, workflow, dataset).body["runId"]
    succeed(api, first)

    reply = start(api, workflow, dataset, force=True)

    assert reply.status == 202, reply.body
    assert reply.body["runId"] != first
    assert reply.body["contentKey"] == api.store.get_run(first).content_key
    assert api.launcher.run_ids == [first, reply.body["runId"]]


def test_changed_params_a_changed_file_or_a_moved_image_tag_make_a_new_key(api, workflow, dataset):
    first = start(api, workflow, dataset)
    succeed(api, first.body["runId"])

    other_params = start(api, workflow, dataset, params={"WINDOW": "10"})
    recording = dataset.packages[0].files[0]
    recording.checksum_style, recording.part_size = "multipart", 1024  # same size, new checksum
    changed_file = start(api, workflow, dataset)
    push_image("b")
    moved_tag = start(api, workflow, dataset)

    replies = [other_params, changed_file, moved_tag]
    assert [reply.status for reply in replies] == [202, 202, 202], [r.body for r in replies]
    keys = {reply.body["contentKey"] for reply in [first, *replies]}
    assert len(keys) == 4


def test_a_rerun_is_deliberate_so_it_starts_even_when_its_key_succeeded(api, workflow, dataset):
    first = start(api, workflow, dataset, params={"MODE": "slow"}).body["runId"]
    succeed(api, first)

    reply = api("POST", f"/runs/{first}/rerun", body={})

    assert reply.status == 202, reply.body
    assert reply.body["rerunOf"] == first
    rerun = api.store.get_run(reply.body["runId"])
    assert rerun.content_key == api.store.get_run(first).content_key
    assert rerun.params == api.store.get_run(first).params
    assert manifest_paths(rerun.run_id) == ["rec-1.edf", "rec-2.edf"]


def test_an_idempotency_key_still_returns_the_first_run(api, workflow, dataset):
    headers = {"Idempotency-Key": f"key-{uuid.uuid4().hex}"}
    body = {"workflow": workflow, "datasetId": dataset.node_id}

    first = api("POST", "/runs", body=body, headers=headers)
    again = api("POST", "/runs", body=body, headers=headers)

    assert first.status == again.status == 202
    assert again.body == first.body and first.body["contentKey"]
    assert api.launcher.run_ids == [first.body["runId"]]


def test_layer_versions_are_part_of_the_key_and_an_unpublished_layer_is_refused(api, workflow, dataset):
    layers = DynamoLayerRegistry(LAYERS_TABLE)
    name = f"atlas-{uuid.uuid4().hex[:6]}"
    layers.create(
        LayerRecord(name=name, type=LayerType.DATA, status=LayerStatus.READY, version=1, checksum="c" * 64)
    )

    v1 = start(api, workflow, dataset, layers=[name], dryRun=True).body
    layers.update(name, version=2, checksum="d" * 64)
    v2 = start(api, workflow, dataset, layers=[name], dryRun=True).body
    missing = start(api, workflow, dataset, layers=["never-built"])

    assert v1["layerVersions"] == [{"name": name, "version": 1, "checksum": "c" * 64}]
    assert v2["layerVersions"][0]["version"] == 2 and v2["contentKey"] != v1["contentKey"]
    assert missing.status == 422 and missing.error["code"] == "layer_not_published"
    assert ("body", "layers") in missing.fields() and "never-built" in missing.error["message"]
    assert layers.transition(name, LayerStatus.BUILDING)
    assert layers.transition(name, LayerStatus.FAILED, error="pip: no matching distribution")
    failed = start(api, workflow, dataset, layers=[name])
    assert failed.status == 422 and "is FAILED" in failed.error["message"], "the rule runs use at mount time"


# -- Pennsieve refuses, or cannot be reached -----------------------------------------------------


def test_a_missing_dataset_is_404_naming_dataset_id(api, workflow, pennsieve):
    reply = api.start(workflow, datasetId="N:dataset:00000000-0000-0000-0000-00000000ffff")

    assert reply.status == 404, reply.body
    assert reply.error["code"] == "pennsieve_not_found"
    assert reply.fields() == {("body", "datasetId")}
    assert runs_of(api, workflow) == []


def test_a_package_outside_the_dataset_is_404_naming_package_ids(api, workflow, dataset):
    reply = start(api, workflow, dataset, packageIds=["N:package:00000000-0000-0000-0000-00000000ffff"])

    assert reply.status == 404, reply.body
    assert reply.fields() == {("body", "packageIds")}
    assert runs_of(api, workflow) == []


def test_a_dataset_the_key_may_not_read_is_403_naming_dataset_id(api, workflow, dataset, pennsieve):
    pennsieve.faults.fail(r"^/datasets/", status=403, times=5)

    reply = start(api, workflow, dataset, dryRun=True)

    assert reply.status == 403, reply.body
    assert reply.error["code"] == "pennsieve_forbidden" and reply.fields() == {("body", "datasetId")}


def test_pennsieve_unreachable_is_503_and_nothing_is_created(api, workflow, dataset, monkeypatch):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    monkeypatch.setenv("PENNSIEVE_API_HOST", f"http://127.0.0.1:{closed}")
    from lambdas import api as module

    module.run_planning.cache_clear()

    reply = start(api, workflow, dataset)

    assert reply.status == 503, reply.body
    assert reply.error["code"] == "pennsieve_unavailable" and "Traceback" not in json.dumps(reply.body)
    assert runs_of(api, workflow) == [] and api.launcher.run_ids == []
