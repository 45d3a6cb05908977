"""`pennflow run ... --publish`: data targets copy their INPUT_DIR into their OUTPUT_DIR, and publish it.

s3 targets go to the bucket in PENNFLOW_RESULTS_BUCKET (moto) under runs/<run_id>/; Pennsieve
Dataset targets go through the fake Pennsieve's upload service. A target that cannot publish is
refused before anything runs (exit 2, naming the target).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import boto3
import pytest
from typer.testing import CliRunner

from pennflow import aws
from pennflow.cli import app
from pennflow.engine.home import PennflowHome
from pennflow.workflow.runs import Status

pytest_plugins = ["tests.fakes.pennsieve_fixtures"]

FIXTURES = Path(__file__).parents[1] / "fixtures" / "processors"
REGION = "us-east-1"
RESULT = "env-listing.json"

WORKFLOW = """
name: listing
processors:
  - id: recordings
    type: data-source
  - id: listing
    command: [python, "{fixtures}/print_env.py"]
    dependsOn: [recordings]
  - id: results
    type: data-target
    targetType: {target}
    dependsOn: [listing]
    defaultParams: {{folder: pennflow-results}}
"""


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> PennflowHome:
    monkeypatch.setenv("PENNFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HOME", str(tmp_path / "user"))  # no ~/.pennsieve/config.ini of this machine
    monkeypatch.delenv("PENNFLOW_RESULTS_BUCKET", raising=False)
    return PennflowHome(tmp_path / "home")


@pytest.fixture
def pennsieve_env(pennsieve, cognito_user, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PENNSIEVE_API_HOST", pennsieve.api_host)
    monkeypatch.setenv("PENNSIEVE_API2_HOST", pennsieve.api2_host)
    monkeypatch.setenv("PENNSIEVE_API_KEY", cognito_user.api_key)
    monkeypatch.setenv("PENNSIEVE_API_SECRET", cognito_user.api_secret)


@pytest.fixture
def bucket(pennsieve_aws, monkeypatch: pytest.MonkeyPatch) -> str:
    name = f"pennflow-results-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", region_name=REGION).create_bucket(Bucket=name)
    aws.reset_clients()  # a client cached outside this moto context would miss the bucket
    monkeypatch.setenv("PENNFLOW_RESULTS_BUCKET", name)
    return name


@pytest.fixture
def input_dir(tmp_path: Path) -> Path:
    (tmp_path / "input" / "sub").mkdir(parents=True)
    (tmp_path / "input" / "sub" / "a.txt").write_text("a")
    return tmp_path / "input"


def workflow(tmp_path: Path, target: str) -> Path:
    path = tmp_path / "listing.yaml"
    path.write_text(WORKFLOW.format(fixtures=FIXTURES, target=target))
    return path


def run_cli(*args: object):
    return CliRunner().invoke(app, ["run", *(str(a) for a in args), "--no-containers", "--json"])


def finished(result) -> tuple[dict, dict[str, dict]]:
    data = json.loads(result.stdout)
    return data["run"], {step["processor_id"]: step for step in data["processors"]}


def copied(home: PennflowHome, run: dict) -> Path:
    return home.run_dir(run["run_id"]) / "results" / "output" / RESULT


def bucket_objects(bucket: str) -> dict[str, bytes]:
    s3 = boto3.client("s3", region_name=REGION)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    return {key: s3.get_object(Bucket=bucket, Key=key)["Body"].read() for key in keys}


def test_publish_puts_an_s3_target_under_the_run_in_the_results_bucket(
    home, pennsieve_aws, bucket, input_dir, tmp_path
) -> None:
    result = run_cli(workflow(tmp_path, "s3"), "--input", input_dir, "--publish")

    assert result.exit_code == 0, result.output
    run, steps = finished(result)
    run_id = run["run_id"]
    assert bucket_objects(bucket) == {f"runs/{run_id}/{RESULT}": copied(home, run).read_bytes()}
    assert steps["results"]["reason"] == (
        f"results in {copied(home, run).parent}; published 1 file to s3://{bucket}/runs/{run_id}/"
    )


def test_without_publish_an_s3_target_only_copies(home, pennsieve_aws, bucket, input_dir, tmp_path) -> None:
    result = run_cli(workflow(tmp_path, "s3"), "--input", input_dir)

    assert result.exit_code == 0, result.output
    run, steps = finished(result)
    assert copied(home, run).is_file()
    assert bucket_objects(bucket) == {}
    assert steps["results"]["reason"] == f"results in {copied(home, run).parent}"


def test_a_failed_s3_publish_fails_the_target_with_the_reason(
    home, pennsieve_aws, input_dir, tmp_path, monkeypatch
) -> None:
    aws.reset_clients()
    monkeypatch.setenv("PENNFLOW_RESULTS_BUCKET", f"absent-{uuid.uuid4().hex[:8]}")

    result = run_cli(workflow(tmp_path, "s3"), "--input", input_dir, "--publish")

    assert result.exit_code == 1, result.output
    run, steps = finished(result)
    assert run["failed_processor"] == "results"
    assert steps["results"]["reason"].startswith("publish failed: S3UploadFailedError")
    assert "NoSuchBucket" in steps["results"]["reason"]


def test_publish_uploads_a_pennsieve_dataset_target_into_the_run_dataset(
    home, pennsieve, pennsieve_env, tmp_path
) -> None:
    dataset = pennsieve.add_dataset("eeg-study")
    dataset.add_package("a.edf", [("a.edf", 2048)])

    result = run_cli(workflow(tmp_path, "Pennsieve Dataset"), "--dataset", dataset.node_id, "--publish")

    assert result.exit_code == 0, result.output
    run, steps = finished(result)
    [manifest_id] = pennsieve.manifests
    manifest = pennsieve.manifests[manifest_id]
    assert manifest["dataset"] is dataset
    [upload] = manifest["files"].values()
    assert (upload["target_path"], upload["target_name"], upload["status"]) == (
        "pennflow-results",
        RESULT,
        "Finalized",
    )
    key = f"O1/D{dataset.int_id}/{manifest_id}/{upload['upload_id']}"
    stored = boto3.client("s3", region_name=REGION).get_object(Bucket=pennsieve.upload_bucket, Key=key)
    assert stored["Body"].read() == copied(home, run).read_bytes()
    assert steps["results"]["reason"].endswith(
        f"published 1 file to pennsieve:{dataset.node_id}/pennflow-results"
    )


def test_without_publish_a_pennsieve_dataset_target_uploads_nothing(
    home, pennsieve, pennsieve_env, input_dir, tmp_path
) -> None:
    result = run_cli(workflow(tmp_path, "Pennsieve Dataset"), "--input", input_dir)

    assert result.exit_code == 0, result.output
    run, steps = finished(result)
    assert steps["results"]["status"] == Status.SUCCEEDED.value and copied(home, run).is_file()
    # Without --dataset or --publish the run does not log in for tokens either: no call at all.
    assert pennsieve.requests == []


@pytest.mark.parametrize(
    ("target", "env", "message"),
    [
        ("s3", {}, "processor 'results': --publish with an s3 target needs a results bucket"),
        (
            "Pennsieve Dataset",
            {},
            "processor 'results': --publish with a Pennsieve Dataset target needs Pennsieve credentials "
            "(no Pennsieve credentials",
        ),
        (
            "Pennsieve Dataset",
            {"PENNSIEVE_API_KEY": "key", "PENNSIEVE_API_SECRET": "secret"},
            "processor 'results': --publish to a Pennsieve Dataset target needs a dataset",
        ),
        (
            "Pennsieve Package Asset",
            {},
            "processor 'results': --publish with a Pennsieve Package Asset target needs Pennsieve credentials",
        ),
    ],
)
def test_a_target_that_cannot_publish_exits_2_before_anything_runs(
    home, pennsieve_aws, input_dir, tmp_path, monkeypatch, target, env, message
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    result = run_cli(workflow(tmp_path, target), "--input", input_dir, "--publish")

    assert result.exit_code == 2, result.output
    assert message in " ".join(result.stderr.split())
    assert "Traceback" not in result.output
    assert not home.runs_dir.exists() or not any(home.runs_dir.iterdir())
