"""Publishing files through the fake upload service (api2) and moto S3."""

from __future__ import annotations

import base64
import hashlib

import pytest

from pennflow.pennsieve import PennsieveError, UploadFailed
from pennflow.pennsieve.checksums import s3_sha256
from pennflow.pennsieve.models import FinalizeFile, UploadFileEntry
from pennflow.pennsieve.upload import LocalFile, UploadSettings, upload_files

pytest_plugins = ["tests.fakes.pennsieve_fixtures"]

MiB = 1024 * 1024
NO_WAIT = UploadSettings(multipart_threshold=5 * MiB, part_size=5 * MiB, poll_interval=0, poll_timeout=1)


def test_upload_registers_puts_finalizes_and_waits_for_every_file(pennsieve, pennsieve_client, tmp_path):
    import boto3

    dataset = pennsieve.add_dataset("results")
    files = []
    for i in range(260):  # more than one register batch and one finalize batch
        path = tmp_path / f"score-{i:03}.csv"
        path.write_text(f"subject,score\n{i},{i * 0.5}\n")
        files.append(LocalFile(path=path, folder="quality/scores"))

    report = upload_files(pennsieve_client, dataset.node_id, files, NO_WAIT)

    assert len(report.finalized) == 260
    assert sorted(report.finalized.values())[0] == "quality/scores/score-000.csv"
    assert len(pennsieve.requests_to(r"^/api2/upload/manifest$")) == 1 + 2  # create + 2 register batches
    assert len(pennsieve.requests_to(r"^/api2/upload/manifest/files/finalize$")) == 2
    assert pennsieve.requests_to(r"^/upload/") == []  # everything went to the api2 host
    manifest = pennsieve.manifests[report.manifest_id]
    assert {f["status"] for f in manifest["files"].values()} == {"Finalized"}
    some_id = next(iter(report.finalized))
    assert manifest["files"][some_id]["target_path"] == "quality/scores"
    prefix = f"O1/D{dataset.int_id}/{report.manifest_id}"
    s3 = boto3.client("s3")
    stored = s3.get_object(Bucket=pennsieve.upload_bucket, Key=f"{prefix}/{some_id}")["Body"].read()
    name = report.finalized[some_id].rsplit("/", 1)[1]
    assert stored == (tmp_path / name).read_bytes()


def test_a_file_above_the_threshold_goes_multipart_with_a_composite_checksum(
    pennsieve, pennsieve_client, tmp_path, monkeypatch
):
    import boto3

    made = []
    real_client = boto3.client
    monkeypatch.setattr(boto3, "client", lambda *a, **kw: made.append((a, kw)) or real_client(*a, **kw))
    dataset = pennsieve.add_dataset("results")
    path = tmp_path / "big.bin"
    path.write_bytes(bytes(range(256)) * (11 * MiB // 256))

    report = upload_files(pennsieve_client, dataset.node_id, [LocalFile(path=path)], NO_WAIT)

    assert list(report.finalized.values()) == ["big.bin"]
    [(args, kwargs)] = [(a, kw) for a, kw in made if a == ("s3",)]
    assert kwargs["aws_access_key_id"] == "ASIAFAKESTORAGEKEY01"  # the manifest's temporary credentials
    assert kwargs["aws_session_token"] == "fake-storage-session"
    parts = [hashlib.sha256(path.read_bytes()[i : i + 5 * MiB]).digest() for i in range(0, 11 * MiB, 5 * MiB)]
    assert (
        s3_sha256(path, 5 * MiB) == base64.b64encode(hashlib.sha256(b"".join(parts)).digest()).decode() + "-3"
    )


def test_finalize_reports_a_checksum_that_does_not_match(pennsieve, pennsieve_client, tmp_path):
    dataset = pennsieve.add_dataset("results")
    manifest_id = pennsieve_client.create_upload_manifest(dataset.node_id)
    entry = UploadFileEntry(upload_id="u-1", s3_key=f"{manifest_id}/u-1", target_path="", target_name="x.txt")
    pennsieve_client.register_upload_files(dataset.node_id, manifest_id, [entry])
    storage = pennsieve_client.storage_credentials(dataset.node_id, manifest_id)
    assert "fake-storage-secret" not in repr(storage)
    import boto3

    s3 = boto3.client("s3")
    s3.put_object(
        Bucket=storage.bucket,
        Key=f"{storage.key_prefix}/u-1",
        Body=b"abc",
        ChecksumAlgorithm="SHA256",
    )

    [result] = pennsieve_client.finalize_upload_files(
        dataset.node_id, manifest_id, [FinalizeFile(upload_id="u-1", size=3, sha256="bm90LXRoZS1oYXNo")]
    )

    assert (result.status, result.error) == ("failed", "sha256 mismatch")


def test_a_failed_finalize_raises_upload_failed_naming_the_file(
    pennsieve, pennsieve_client, tmp_path, monkeypatch
):
    from pennflow.pennsieve import upload

    dataset = pennsieve.add_dataset("results")
    path = tmp_path / "bad.csv"
    path.write_text("a,b\n")
    monkeypatch.setattr(upload, "s3_sha256", lambda *_args: "d3Jvbmc=")

    with pytest.raises(UploadFailed, match=r"1 file\(s\) failed to upload: out/bad\.csv: sha256 mismatch"):
        upload_files(pennsieve_client, dataset.node_id, [LocalFile(path=path, folder="/out/")], NO_WAIT)


def test_waiting_for_finalized_files_times_out_with_a_count(
    pennsieve, pennsieve_client, tmp_path, monkeypatch
):
    dataset = pennsieve.add_dataset("results")
    path = tmp_path / "slow.csv"
    path.write_text("a\n")
    monkeypatch.setattr(type(pennsieve_client), "upload_files_with_status", lambda *_args: [])
    ticks = iter(range(100))

    with pytest.raises(PennsieveError, match=r"1 file\(s\) not finalized after 1s"):
        upload_files(
            pennsieve_client, dataset.node_id, [LocalFile(path=path)], NO_WAIT, clock=lambda: next(ticks)
        )


def test_status_pages_follow_the_continuation_token(pennsieve, pennsieve_client):
    dataset = pennsieve.add_dataset("results")
    pennsieve.status_page_size = 2
    manifest_id = pennsieve_client.create_upload_manifest(dataset.node_id)
    for uid in ("a", "b", "c", "d", "e"):
        pennsieve.manifests[manifest_id]["files"][uid] = {"upload_id": uid, "status": "Finalized"}

    assert pennsieve_client.upload_files_with_status(manifest_id, "Finalized") == ["a", "b", "c", "d", "e"]
    tokens = [c.query.get("continuation_token") for c in pennsieve.requests_to("/upload/manifest/status")]
    assert tokens == [None, ["b"], ["d"]]


def test_local_files_must_exist_and_stay_inside_the_dataset(pennsieve_client, tmp_path):
    with pytest.raises(ValueError, match="folder path inside the dataset"):
        LocalFile(path=tmp_path / "x", folder="../elsewhere")
    with pytest.raises(FileNotFoundError, match="absent.csv"):
        upload_files(pennsieve_client, "N:dataset:x", [LocalFile(path=tmp_path / "absent.csv")], NO_WAIT)
