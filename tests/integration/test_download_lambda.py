"""The data source's download function, as the state machine calls it: one event per batch of the
run's manifest, then one verify event. A temporary folder stands for the runs file system; the
run's slot, the Pennsieve secret and the manifest live in moto; Pennsieve is the fake server."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest

from lambdas import download
from pennflow import aws
from pennflow.data.datasource import (
    DownloadEventError,
    ManifestLocation,
    read_run_manifest,
    write_run_manifest,
)
from pennflow.node.slots import SLOT_TAG, SlotPool, slot_id
from pennflow.pennsieve import BATCHES, ChecksumMismatch, DownloadSettings, PennsieveError, build_manifest

pytest_plugins = ["tests.fakes.pennsieve_fixtures"]
# A failed invocation publishes no metric; Powertools warns about that, which is expected here.
pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")

KiB = 1024
MiB = 1024 * KiB
REGION = "us-east-1"
SOURCE = "recordings"
OUTPUT_DIR = f"/mnt/run/{SOURCE}/output"
SMALL_PLAN = DownloadSettings(range_threshold=200 * KiB, range_size=64 * KiB)


@dataclass
class Context:
    function_name: str = "pennflow-download"
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 1769
    invoked_function_arn: str = f"arn:aws:lambda:{REGION}:123456789012:function:pennflow-download"
    aws_request_id: str = "req-1"

    def get_remaining_time_in_millis(self) -> int:
        return 900_000


@dataclass
class Node:
    run_id: str
    bucket: str
    run_folder: Path

    @property
    def output(self) -> Path:
        return self.run_folder / SOURCE / "output"


@pytest.fixture
def node(pennsieve_aws, pennsieve, cognito_user, tmp_path, monkeypatch) -> Node:
    """A node with one run slot leased to a run, the Pennsieve secret, and the results bucket."""
    suffix = uuid.uuid4().hex[:8]
    dynamodb = boto3.client("dynamodb", region_name=REGION)
    table = f"pennflow-slots-{suffix}"
    dynamodb.create_table(
        TableName=table,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "slot_id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "slot_id", "KeyType": "HASH"}],
    )
    efs = boto3.client("efs", region_name=REGION)
    file_system = efs.create_file_system(CreationToken=suffix)["FileSystemId"]
    efs.create_access_point(
        FileSystemId=file_system,
        RootDirectory={"Path": f"/runs/slots/{slot_id(0)}"},
        Tags=[{"Key": SLOT_TAG, "Value": slot_id(0)}],
    )
    run_id = f"run-{suffix}"
    SlotPool(table, file_system_id=file_system, slot_count=1, client=dynamodb, efs_client=efs).lease(run_id)
    secret = boto3.client("secretsmanager", region_name=REGION).create_secret(
        Name=f"pennflow/pennsieve-{suffix}",
        SecretString=json.dumps({"apiKey": cognito_user.api_key, "apiSecret": cognito_user.api_secret}),
    )["ARN"]
    bucket = f"pennflow-results-{suffix}"
    boto3.client("s3", region_name=REGION).create_bucket(Bucket=bucket)
    runs_mount = tmp_path / "efs"
    for name, value in {
        "RUNS_MOUNT": str(runs_mount),
        "SLOTS_TABLE": table,
        "FILE_SYSTEM_ID": file_system,
        "RUN_SLOTS": "1",
        "PENNSIEVE_SECRET_ARN": secret,
        "PENNSIEVE_API_HOST": pennsieve.api_host,
        "PENNSIEVE_API2_HOST": pennsieve.api2_host,
        # Set but never used: functions read Pennsieve credentials from the secret only.
        "PENNSIEVE_API_KEY": "not-the-key",
        "PENNSIEVE_API_SECRET": "not-the-secret",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_METRICS_NAMESPACE": "pennflow",
        "POWERTOOLS_SERVICE_NAME": "pennflow-download",
    }.items():
        monkeypatch.setenv(name, value)
    aws.reset_clients()
    download.download_node.cache_clear()
    yield Node(run_id, bucket, runs_mount / "slots" / slot_id(0))
    download.download_node.cache_clear()
    aws.reset_clients()


@pytest.fixture
def dataset(pennsieve):
    dataset = pennsieve.add_dataset("eeg-study")
    sub = dataset.add_folder("sub-01")
    for i in range(3):
        dataset.add_package(f"rec-{i}.edf", [(f"rec-{i}.edf", 40 * KiB)], parent=sub)
    dataset.add_package("big.edf", [("big.edf", 330 * KiB)], checksum="multipart", part_size=100 * KiB)
    return dataset


def manifest(pennsieve_client, dataset, node: Node, settings: DownloadSettings = SMALL_PLAN):
    entries = build_manifest(pennsieve_client, dataset.node_id).entries
    location = write_run_manifest(
        node.run_id, entries, bucket=node.bucket, settings=settings, batch_bytes=150 * KiB
    )
    return location, BATCHES.dump_python(read_run_manifest(location), mode="json")  # what the Map hands out


def download_event(node: Node, batch) -> dict:
    """The Map's ItemSelector output, passed whole as the Lambda payload."""
    return {
        "action": "download",
        "runId": node.run_id,
        "processorId": SOURCE,
        "outputDir": OUTPUT_DIR,
        "function": "arn:aws:lambda:us-east-1:123456789012:function:pennflow-download",
        "batch": batch,
    }


def verify_event(node: Node, location) -> dict:
    return {
        "action": "verify",
        "runId": node.run_id,
        "processorId": SOURCE,
        "outputDir": OUTPUT_DIR,
        "manifest": location.model_dump(),
    }


def body_of(dataset, name: str) -> bytes:
    return next(p for p in dataset.packages if p.name == name).files[0].body()


def test_each_batch_lands_in_the_run_folder_and_verify_assembles_the_split_file(
    node, pennsieve_client, dataset
):
    location, batches = manifest(pennsieve_client, dataset, node)
    assert len(batches) > 1 and any(item["range"] for batch in batches for item in batch)

    results = [download.handler(download_event(node, batch), Context()) for batch in batches]
    assert not (node.output / "big.edf").exists()  # only its byte ranges so far, in big.edf.part
    assert (node.output / "big.edf.part").stat().st_size == 330 * KiB
    verified = download.handler(verify_event(node, location), Context())

    assert sum(r["bytes"] for r in results) == 3 * 40 * KiB + 330 * KiB
    assert verified == {
        "action": "verify",
        "files": 4,
        "bytes": 3 * 40 * KiB + 330 * KiB,
        "assembled": 1,
        "verified_on_assembly": 1,  # the multipart ETag checked over the assembled file
    }
    assert (node.output / "big.edf").read_bytes() == body_of(dataset, "big.edf")
    for i in range(3):
        assert (node.output / "sub-01" / f"rec-{i}.edf").read_bytes() == body_of(dataset, f"rec-{i}.edf")
    assert sorted(p.name for p in node.output.iterdir()) == ["big.edf", "sub-01"]  # no .part, no markers


def test_a_corrupt_file_fails_the_batch_with_ChecksumMismatch_naming_it(
    node, pennsieve, pennsieve_client, dataset
):
    location, batches = manifest(pennsieve_client, dataset, node)
    rec = next(p for p in dataset.packages if p.name == "rec-1.edf").files[0]
    pennsieve.faults.corrupt(rec.id)
    batch = next(b for b in batches if any(i["entry"]["path"] == "sub-01/rec-1.edf" for i in b))

    with pytest.raises(ChecksumMismatch, match="checksum mismatch for sub-01/rec-1.edf") as caught:
        download.handler(download_event(node, batch), Context())

    assert type(caught.value).__name__ == "ChecksumMismatch"  # the Lambda errorType the state machine sees
    assert not (node.output / "sub-01" / "rec-1.edf").exists()
    assert not (node.output / "sub-01" / "rec-1.edf.part").exists()  # a bad copy is never resumed


def test_a_corrupt_split_file_fails_verify_with_ChecksumMismatch(node, pennsieve, pennsieve_client, dataset):
    location, batches = manifest(pennsieve_client, dataset, node)
    big = next(p for p in dataset.packages if p.name == "big.edf").files[0]
    pennsieve.faults.corrupt(big.id)
    for batch in batches:  # ranges carry no checksum of their own: the batches succeed
        download.handler(download_event(node, batch), Context())

    with pytest.raises(ChecksumMismatch, match="checksum mismatch for big.edf"):
        download.handler(verify_event(node, location), Context())

    assert not (node.output / "big.edf").exists()


def test_an_interrupted_download_is_resumed_by_the_retried_batch(node, pennsieve, pennsieve_client, dataset):
    long = dataset.add_package("long.edf", [("long.edf", 3 * MiB)], checksum="md5")
    location, batches = manifest(pennsieve_client, dataset, node, settings=DownloadSettings())
    batch = next(b for b in batches if any(i["entry"]["path"] == "long.edf" for i in b))
    pennsieve.faults.drop_connection(long.files[0].id, at_byte=2 * MiB + 512 * KiB, times=3)

    with pytest.raises(PennsieveError, match="long.edf: connection lost at byte 2097152"):
        download.handler(download_event(node, batch), Context())  # 3 drops: over the in-run resumes
    assert (node.output / "long.edf.part").stat().st_size == 2 * MiB
    before = len(pennsieve.requests_to(f"^/s3/{long.files[0].id}$"))

    retried = download.handler(download_event(node, batch), Context())  # the state machine's Retry

    resumed = pennsieve.requests_to(f"^/s3/{long.files[0].id}$")[before:]
    assert [r.headers.get("range") for r in resumed] == ["bytes=2097152-"]
    assert retried["bytes"] == 1 * MiB  # only the rest; the other files of the batch were already there
    assert retried["skipped"] == len(batch) - 1
    assert (node.output / "long.edf").read_bytes() == long.files[0].body()
    for other in batches:
        download.handler(download_event(node, other), Context())
    assert download.handler(verify_event(node, location), Context())["files"] == 5


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"action": "fetch"}, "does not match any of the expected tags: 'download', 'verify'"),
        ({"batch": []}, "batch: List should have at least 1 item"),
        ({"batch": [{"entry": {"path": "x"}}]}, "batch.0.entry.dataset_id: Field required"),
        ({"runId": ""}, "runId: String should have at least 1 character"),
        ({"manifest": {"bucket": "b"}, "action": "verify"}, "verify.manifest.key: Field required"),
    ],
)
def test_a_malformed_event_is_refused_naming_the_field(monkeypatch, change, problem):
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    download.download_node.cache_clear()
    event = download_event(Node("run-1", "bucket", Path("unused")), [])
    event["batch"] = [
        {
            "entry": {
                "dataset_id": "N:dataset:1",
                "package_node_id": "N:package:1",
                "package_id": 1,
                "file_id": 2,
                "path": "a.edf",
                "size": 1,
            }
        }
    ]
    event.update(change)

    with pytest.raises(DownloadEventError) as caught:
        download.handler(event, Context())

    assert problem in str(caught.value)
    assert download.download_node.cache_info().currsize == 0  # refused before any setting or client was read


@pytest.mark.parametrize(
    "output_dir", ["/mnt/efs/recordings/output", "/mnt/run/../../etc", "recordings/output"]
)
def test_an_output_dir_outside_the_runs_folder_is_refused(node, output_dir):
    event = verify_event(node, ManifestLocation(bucket=node.bucket, key=f"runs/{node.run_id}/manifest.json"))
    event["outputDir"] = output_dir

    with pytest.raises(
        DownloadEventError, match=rf"outputDir '{re.escape(output_dir)}' must be a folder under /mnt/run"
    ):
        download.handler(event, Context())


def test_a_run_without_a_slot_is_refused(node):
    event = verify_event(node, ManifestLocation(bucket=node.bucket, key="runs/x/manifest.json"))
    event["runId"] = "run-not-running"

    with pytest.raises(DownloadEventError, match="run 'run-not-running' holds no run slot"):
        download.handler(event, Context())
