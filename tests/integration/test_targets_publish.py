"""Data targets: the s3 target into the results bucket (moto), the Pennsieve Dataset target through the
fake upload service, and the built-in entry point that runs them in the built-in image."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import boto3
import pytest

from pennflow import aws
from pennflow.data.targets import (
    TargetError,
    local_target_plan,
    publish,
    publish_to_dataset,
    publish_to_s3,
)
from pennflow.node.builtins.__main__ import main
from pennflow.pennsieve import CredentialsNotFound
from pennflow.pennsieve.node_secret import secret_credentials

pytest_plugins = ["tests.fakes.pennsieve_fixtures"]

REGION = "us-east-1"


@pytest.fixture
def bucket(pennsieve_aws) -> str:
    name = f"pennflow-results-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", region_name=REGION).create_bucket(Bucket=name)
    aws.reset_clients()
    return name


@pytest.fixture
def results(tmp_path) -> Path:
    """A target's INPUT_DIR as a report processor leaves it (one file a link, as scatter makes)."""
    root = tmp_path / "input"
    (root / "figures" / "sub-01").mkdir(parents=True)
    (root / "figures" / "sub-01" / "bandpower.png").write_bytes(b"\x89PNG fake")
    (root / "scores.csv").write_text("subject,score\nsub-01,0.93\n")
    (root / "report.html").write_text("<html>ok</html>")
    (tmp_path / "elsewhere.bin").write_bytes(b"\x00\x01\x02")
    (root / "raw.bin").symlink_to(tmp_path / "elsewhere.bin")
    return root


def objects(bucket: str, prefix: str) -> dict[str, dict]:
    s3 = boto3.client("s3", region_name=REGION)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]
    return {key: s3.get_object(Bucket=bucket, Key=key) for key in keys}


def test_s3_target_uploads_relative_paths_under_the_run_with_sse_and_content_types(bucket, results):
    report = publish_to_s3(results, bucket=bucket, run_id="run-7")

    stored = objects(bucket, "runs/run-7/")
    assert sorted(stored) == [
        "runs/run-7/figures/sub-01/bandpower.png",
        "runs/run-7/raw.bin",
        "runs/run-7/report.html",
        "runs/run-7/scores.csv",
    ]
    types = {key.rsplit("/", 1)[1]: obj["ContentType"] for key, obj in stored.items()}
    assert types == {
        "bandpower.png": "image/png",
        "raw.bin": "application/octet-stream",
        "report.html": "text/html",
        "scores.csv": "text/csv",
    }
    assert {obj["ServerSideEncryption"] for obj in stored.values()} == {"AES256"}
    assert stored["runs/run-7/raw.bin"]["Body"].read() == b"\x00\x01\x02"  # the link's target was sent
    assert report.destination == f"s3://{bucket}/runs/run-7/"
    assert report.total_bytes == sum(len(p.read_bytes()) for p in results.rglob("*") if p.is_file())


def test_s3_target_never_overwrites_the_runs_own_files(bucket, results):
    (results / "manifest.json").write_text("{}")

    with pytest.raises(TargetError, match=r"manifest.json would replace the run's own file\(s\)"):
        publish_to_s3(results, bucket=bucket, run_id="run-8")
    assert objects(bucket, "runs/run-8/") == {}

    publish(
        "s3", results, run_id="run-8", params={"prefix": "/published/"}, results_bucket=bucket
    )  # in a folder it is fine
    assert "runs/run-8/published/manifest.json" in objects(bucket, "runs/run-8/")
    with pytest.raises(TargetError, match=r"the prefix param must be a relative folder without '\.\.'"):
        publish_to_s3(results, bucket=bucket, run_id="run-8", prefix="../other-run")


def test_pennsieve_dataset_target_uploads_keeping_folders(pennsieve, pennsieve_client, results):
    run_dataset = pennsieve.add_dataset("eeg-study")
    chosen = pennsieve.add_dataset("eeg-results")

    report = publish(
        "Pennsieve Dataset",
        results,
        run_id="run-9",
        params={"datasetId": chosen.node_id, "folder": "pennflow/run-9"},
        run_dataset_id=run_dataset.node_id,
        pennsieve=lambda: pennsieve_client,
    )

    [manifest] = pennsieve.manifests.values()
    assert manifest["dataset"] is chosen  # the target's datasetId wins over the run's dataset
    registered = sorted((f["target_path"], f["target_name"], f["status"]) for f in manifest["files"].values())
    assert registered == [
        ("pennflow/run-9", "raw.bin", "Finalized"),
        ("pennflow/run-9", "report.html", "Finalized"),
        ("pennflow/run-9", "scores.csv", "Finalized"),
        ("pennflow/run-9/figures/sub-01", "bandpower.png", "Finalized"),
    ]
    assert report.destination == f"pennsieve:{chosen.node_id}/pennflow/run-9"
    assert {f.destination for f in report.files} >= {"pennflow/run-9/figures/sub-01/bandpower.png"}


def test_pennsieve_dataset_target_defaults_to_the_runs_dataset_and_needs_one(
    pennsieve, pennsieve_client, results
):
    run_dataset = pennsieve.add_dataset("eeg-study")

    publish_to_dataset(results, client=pennsieve_client, dataset_id=run_dataset.node_id)
    publish(
        "Pennsieve Dataset",
        results,
        run_id="r",
        params={},
        run_dataset_id=run_dataset.node_id,
        pennsieve=lambda: pennsieve_client,
    )

    assert [m["dataset"] for m in pennsieve.manifests.values()] == [run_dataset, run_dataset]
    paths = {f["target_path"] for m in pennsieve.manifests.values() for f in m["files"].values()}
    assert paths == {"", "figures/sub-01"}
    with pytest.raises(TargetError, match="set defaultParams.datasetId or start the run on a dataset"):
        publish("Pennsieve Dataset", results, run_id="r", params={}, pennsieve=lambda: pennsieve_client)


def test_an_empty_input_publishes_nothing(pennsieve, pennsieve_client, bucket, tmp_path):
    dataset = pennsieve.add_dataset("eeg-study")

    assert publish_to_dataset(tmp_path, client=pennsieve_client, dataset_id=dataset.node_id).files == []
    assert publish_to_s3(tmp_path, bucket=bucket, run_id="run-e").files == []
    assert pennsieve.manifests == {}


def test_unknown_targets_are_refused_precisely(tmp_path):
    with pytest.raises(TargetError, match="unknown target type 'ftp'"):
        publish("ftp", tmp_path, run_id="r", params={})
    with pytest.raises(TargetError, match="RESULTS_BUCKET is not set"):
        publish("s3", tmp_path, run_id="r", params={})


def test_local_runs_copy_and_publish_only_when_asked(tmp_path):
    assert (
        local_target_plan("s3", publish_requested=False, has_credentials=False, results_bucket=None) == "copy"
    )
    assert (
        local_target_plan("s3", publish_requested=True, has_credentials=False, results_bucket="b")
        == "copy+publish"
    )
    with pytest.raises(TargetError, match="needs a results bucket"):
        local_target_plan("s3", publish_requested=True, has_credentials=True, results_bucket=None)
    with pytest.raises(TargetError, match="needs Pennsieve credentials"):
        local_target_plan(
            "Pennsieve Dataset", publish_requested=True, has_credentials=False, results_bucket=None
        )


# -- the built-in entry point --------------------------------------------------------------------


@pytest.fixture
def builtin_env(pennsieve_aws, pennsieve, cognito_user, results, tmp_path, monkeypatch):
    secret = boto3.client("secretsmanager", region_name=REGION).create_secret(
        Name=f"pennflow/pennsieve-{uuid.uuid4().hex[:8]}",
        SecretString=json.dumps({"apiKey": cognito_user.api_key, "apiSecret": cognito_user.api_secret}),
    )["ARN"]
    env = {
        "RUN_ID": "run-42",
        "PROCESSOR_ID": "results",
        "WORKFLOW_NAME": "eeg-quality",
        "INPUT_DIR": str(results),
        "OUTPUT_DIR": str(tmp_path / "output"),
        "PENNSIEVE_SECRET_ARN": secret,
        "PENNSIEVE_API_HOST": pennsieve.api_host,
        "PENNSIEVE_API2_HOST": pennsieve.api2_host,
        # An override could set these: the built-in must not use them.
        "PENNSIEVE_API_KEY": "override-key",
        "PENNSIEVE_API_SECRET": "override-secret",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    aws.reset_clients()
    return env


def test_builtin_publishes_to_a_dataset_with_the_secrets_credentials(
    builtin_env, pennsieve, monkeypatch, capsys
):
    dataset = pennsieve.add_dataset("eeg-results")
    monkeypatch.setenv("DATASET_ID", dataset.node_id)

    code = main(["data-target", "--target-type", "Pennsieve Dataset"])

    assert code == 0, capsys.readouterr().err
    assert "results: published 4 file(s)" in capsys.readouterr().out
    [manifest] = pennsieve.manifests.values()
    assert len(manifest["files"]) == 4
    assert secret_credentials().source == f"secret {builtin_env['PENNSIEVE_SECRET_ARN']}"


def test_builtin_s3_target_uses_the_results_bucket(builtin_env, bucket, monkeypatch, capsys):
    monkeypatch.setenv("RESULTS_BUCKET", bucket)

    assert main(["data-target", "--target-type", "s3"]) == 0
    assert f"to s3://{bucket}/runs/run-42/" in capsys.readouterr().out
    assert len(objects(bucket, "runs/run-42/")) == 4


def test_builtin_refuses_a_bad_environment_with_exit_code_2(builtin_env, monkeypatch, capsys):
    monkeypatch.delenv("INPUT_DIR")
    assert main(["data-target", "--target-type", "s3"]) == 2
    assert "INPUT_DIR: required" in capsys.readouterr().err

    monkeypatch.delenv("RUN_ID")
    assert main(["data-target", "--target-type", "s3"]) == 2
    assert "RUN_ID: required" in capsys.readouterr().err


def test_builtin_reads_credentials_only_from_the_secret(builtin_env, monkeypatch):
    monkeypatch.delenv("PENNSIEVE_SECRET_ARN")

    with pytest.raises(CredentialsNotFound, match="PENNSIEVE_SECRET_ARN is not set: built-ins read"):
        secret_credentials()  # PENNSIEVE_API_KEY/SECRET are in the environment, and ignored
    assert os.environ["PENNSIEVE_API_KEY"] == "override-key"


def test_builtin_data_source_downloads_the_runs_dataset(
    builtin_env, pennsieve, monkeypatch, tmp_path, capsys
):
    dataset = pennsieve.add_dataset("eeg-study")
    dataset.add_package("rec.edf", [("rec.edf", 4096)])
    monkeypatch.setenv("DATASET_ID", dataset.node_id)

    assert main(["data-source"]) == 0
    assert "1 file(s), 4096 bytes" in capsys.readouterr().out
    assert (tmp_path / "output" / "rec.edf").read_bytes() == dataset.packages[0].files[0].body()
