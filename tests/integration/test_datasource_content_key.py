"""Content keys against real-shaped services: ECR digests (moto), a Pennsieve dataset's manifest (the
fake), and finding a succeeded run with the same key in the DynamoDB (moto) and SQLite stores."""

from __future__ import annotations

import json
import textwrap
import uuid

import boto3
import pytest

from pennflow import aws
from pennflow.data.content_key import find_duplicate, plan_run, resolve_image
from pennflow.data.datasource import summarize
from pennflow.pennsieve import build_manifest
from pennflow.stores import dynamodb as ddb
from pennflow.stores.sqlite import SqliteRunStore
from pennflow.workflow.contract import run_parameters
from pennflow.workflow.definition import parse_definition
from pennflow.workflow.runs import RunRecord, Status, StepRecord

pytest_plugins = ["tests.fakes.pennsieve_fixtures"]

REGION = "us-east-1"
ACCOUNT = "123456789012"
WORKFLOW = parse_definition(
    textwrap.dedent(
        f"""
        name: eeg-quality
        processors:
          - {{id: recordings, type: data-source}}
          - {{id: convert, image: "{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/lab/convert:1.2", dependsOn: [recordings]}}
        """
    ),
    "yaml",
)


@pytest.fixture
def ecr(pennsieve_aws):
    client = boto3.client("ecr", region_name=REGION)
    client.create_repository(repositoryName="lab/convert")
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                           "config": {"digest": "sha256:" + "c" * 64}, "layers": []})  # fmt: skip
    client.put_image(repositoryName="lab/convert", imageManifest=manifest, imageTag="1.2")
    aws.reset_clients()
    yield client
    client.delete_repository(repositoryName="lab/convert", force=True)


def test_an_ecr_image_resolves_to_its_digest_and_a_missing_tag_does_not(ecr):
    image = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/lab/convert"
    expected = ecr.describe_images(repositoryName="lab/convert")["imageDetails"][0]["imageDigest"]

    found = resolve_image(f"{image}:1.2")
    missing = resolve_image(f"{image}:9.9")

    assert (found.source, found.digest) == ("ecr", expected)
    assert (missing.source, missing.digest) == ("unresolved", None)
    assert missing.detail == "ecr:DescribeImages failed: ImageNotFoundException"


def test_a_dry_run_plan_over_a_pennsieve_dataset_changes_when_a_file_changes(
    pennsieve, pennsieve_client, ecr
):
    dataset = pennsieve.add_dataset("eeg-study")
    dataset.add_package("rec-1.edf", [("rec-1.edf", 4096)])
    params = run_parameters(WORKFLOW)

    def plan():
        manifest = build_manifest(pennsieve_client, dataset.node_id)
        return plan_run(
            WORKFLOW, params=params, inputs=summarize(manifest.entries, dataset_id=dataset.node_id)
        )

    first, again = plan(), plan()
    dataset.add_package("rec-2.edf", [("rec-2.edf", 4096)])
    grown = plan()

    assert first.content_key == again.content_key
    assert grown.content_key != first.content_key
    assert (grown.inputs.file_count, grown.inputs.total_bytes) == (2, 8192)
    assert first.warnings == []  # every image resolved, every file has a checksum
    assert first.processors[1].image.source == "ecr"


# -- duplicates ----------------------------------------------------------------------------------


def run(key: str | None, status: Status, created: str) -> RunRecord:
    return RunRecord(
        run_id=f"run-{uuid.uuid4().hex[:10]}",
        workflow="eeg-quality",
        definition_hash="h",
        status=status,
        content_key=key,
        created_at=created,
    )


def fill(store, runs):
    for record in runs:
        store.create_run(record, [StepRecord(run_id=record.run_id, processor_id="convert")])


@pytest.fixture
def dynamo_store(pennsieve_aws):
    """The runs table with the content-key index the store queries."""
    table = f"pennflow-runs-{uuid.uuid4().hex[:8]}"
    client = boto3.client("dynamodb", region_name=REGION)
    attributes = (ddb.PK, ddb.SK, ddb.CREATED_ATTR, "content_key")
    client.create_table(
        TableName=table,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": a, "AttributeType": "S"} for a in attributes],
        KeySchema=[
            {"AttributeName": ddb.PK, "KeyType": "HASH"},
            {"AttributeName": ddb.SK, "KeyType": "RANGE"},
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": ddb.BY_CONTENT_KEY,
                "KeySchema": [
                    {"AttributeName": "content_key", "KeyType": "HASH"},
                    {"AttributeName": ddb.CREATED_ATTR, "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "INCLUDE", "NonKeyAttributes": [ddb.STATUS_ATTR]},
            }
        ],
    )
    return ddb.DynamoRunStore(table, client=client)


@pytest.fixture
def sqlite_store(tmp_path):
    with SqliteRunStore(tmp_path / "pennflow.db") as store:
        yield store


@pytest.mark.parametrize("store_name", ["dynamo_store", "sqlite_store"])
def test_the_newest_succeeded_run_with_the_key_is_the_duplicate(store_name, request):
    store = request.getfixturevalue(store_name)
    older = run("k1", Status.SUCCEEDED, "2025-01-01T00:00:00Z")
    newer = run("k1", Status.SUCCEEDED, "2025-02-01T00:00:00Z")
    fill(
        store,
        [
            older,
            newer,
            run("k1", Status.FAILED, "2025-03-01T00:00:00Z"),  # newest, but it did not succeed
            run("k2", Status.SUCCEEDED, "2025-04-01T00:00:00Z"),
            run(None, Status.SUCCEEDED, "2025-05-01T00:00:00Z"),
        ],
    )

    assert find_duplicate(store, "k1").run_id == newer.run_id
    assert find_duplicate(store, "k3") is None
    assert find_duplicate(store, "k2").content_key == "k2"


def test_a_store_with_the_proposed_port_method_answers_itself():
    class Store:
        def find_succeeded_by_content_key(self, key):
            return f"asked for {key}"

    assert find_duplicate(Store(), "k9") == "asked for k9"
