"""A run's data source: its manifest in S3 as download batches, its summary, and the local download."""

from __future__ import annotations

import json

import boto3
import pytest

from pennflow.data.datasource import (
    DownloadEventError,
    ManifestLocation,
    download_dataset,
    ensure_run_manifest,
    entries_of,
    manifest_key,
    read_run_manifest,
    settings_for,
    summarize,
    summarize_folder,
    write_run_manifest,
)
from pennflow.pennsieve import (
    ChecksumMismatch,
    DownloadSettings,
    NotFound,
    build_manifest,
    plan_batches,
)

pytest_plugins = ["tests.fakes.pennsieve_fixtures"]

KiB = 1024
SMALL_PLAN = DownloadSettings(
    max_workers=3, chunk_size=4 * KiB, range_threshold=200 * KiB, range_size=64 * KiB
)


@pytest.fixture
def bucket(pennsieve_aws):
    name = "pennflow-results-manifest"
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket=name)
    yield name
    for item in s3.list_objects_v2(Bucket=name).get("Contents", []):
        s3.delete_object(Bucket=name, Key=item["Key"])
    s3.delete_bucket(Bucket=name)


@pytest.fixture
def dataset(pennsieve):
    dataset = pennsieve.add_dataset("eeg-study")
    sub = dataset.add_folder("sub-01")
    for i in range(4):
        dataset.add_package(f"rec-{i}.edf", [(f"rec-{i}.edf", 20 * KiB)], parent=sub)
    dataset.add_package("big.edf", [("big.edf", 300 * KiB)], checksum="md5")
    dataset.add_package("notes.txt", [("notes.txt", 2 * KiB)], checksum="none")
    return dataset


def test_the_manifest_lands_in_s3_as_the_batches_the_map_reads(pennsieve_client, dataset, bucket):
    manifest = build_manifest(pennsieve_client, dataset.node_id)

    location = write_run_manifest("run-1", manifest.entries, bucket=bucket, settings=SMALL_PLAN)

    assert location == ManifestLocation(bucket=bucket, key="runs/run-1/manifest.json")
    obj = boto3.client("s3", region_name="us-east-1").get_object(Bucket=bucket, Key=location.key)
    assert obj["ContentType"] == "application/json"
    body = json.loads(obj["Body"].read())
    assert isinstance(body, list) and all(isinstance(batch, list) for batch in body)  # one Map item per batch
    batches = read_run_manifest(location)
    assert batches == plan_batches(manifest.entries, SMALL_PLAN)
    big = [item.range for batch in batches for item in batch if item.entry.path == "big.edf"]
    assert [(r.start, r.end) for r in big] == [
        (0, 65535),
        (65536, 131071),
        (131072, 196607),
        (196608, 262143),
        (262144, 307199),
    ]
    assert entries_of(batches) == manifest.entries  # each file once, in manifest order


def test_verify_splits_files_as_the_manifest_did_whatever_settings_wrote_it(
    pennsieve_client, dataset, bucket
):
    manifest = build_manifest(pennsieve_client, dataset.node_id)
    batches = plan_batches(manifest.entries, SMALL_PLAN)

    derived = settings_for(batches, DownloadSettings())  # the Lambda's defaults: 256 MiB threshold

    assert (derived.range_threshold, derived.range_size) == (20 * KiB, 64 * KiB)
    assert plan_batches(manifest.entries, derived) == batches
    unsplit = plan_batches(manifest.entries, DownloadSettings())
    assert settings_for(unsplit, DownloadSettings()).range_threshold == 300 * KiB  # nothing is split
    tampered = [[i for i in batch if not (i.range and i.range.start == 196608)] for batch in batches]
    tampered = [batch for batch in tampered if batch]
    with pytest.raises(DownloadEventError, match="byte ranges of big.edf"):
        settings_for(tampered, DownloadSettings())


def test_a_manifest_already_written_is_reused_so_the_keyed_files_are_the_downloaded_ones(
    pennsieve, pennsieve_client, dataset, bucket
):
    location, first = ensure_run_manifest(
        "run-2", dataset.node_id, None, bucket=bucket, client=pennsieve_client
    )
    listings = len(pennsieve.requests_to(r"/packages$"))
    dataset.add_package("late.edf", [("late.edf", KiB)])  # arrives after the key was computed

    again, second = ensure_run_manifest(
        "run-2", dataset.node_id, None, bucket=bucket, client=pennsieve_client
    )

    assert again == location == ManifestLocation(bucket=bucket, key=manifest_key("run-2"))
    assert second == first and second.file_count == 6
    assert len(pennsieve.requests_to(r"/packages$")) == listings  # no second listing


def test_the_summary_lists_every_file_and_ignores_listing_order(pennsieve_client, dataset):
    manifest = build_manifest(pennsieve_client, dataset.node_id)

    summary = summarize(manifest.entries, dataset_id=dataset.node_id, package_ids=["N:b", "N:a"])
    backwards = summarize(
        list(reversed(manifest.entries)), dataset_id=dataset.node_id, package_ids=["N:a", "N:b"]
    )

    assert summary == backwards
    assert (summary.file_count, summary.total_bytes) == (6, 4 * 20 * KiB + 300 * KiB + 2 * KiB)
    assert summary.without_checksum == 1  # notes.txt has neither md5 nor ETag
    big = next(p for p in dataset.packages if p.name == "big.edf").files[0]
    assert any(
        f.file_id == str(big.id) and f.checksum == big.md5() and f.path == "big.edf" for f in summary.entries
    )
    dumped = summary.model_dump()
    assert "entries" not in dumped and len(dumped["files_sha256"]) == 64  # a plan response stays small


def test_local_folder_summary_keys_files_by_content(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.edf").write_bytes(b"one")
    first = summarize_folder(tmp_path)
    (tmp_path / "a" / "x.edf").write_bytes(b"two")

    assert summarize_folder(tmp_path).files_sha256 != first.files_sha256
    assert [f.path for f in first.entries] == ["a/x.edf"]


def test_local_download_of_a_dataset_or_selected_packages(pennsieve_client, dataset, tmp_path):
    sub = next(p for p in dataset.packages if p.name == "sub-01")

    summary, report = download_dataset(
        pennsieve_client, dataset.node_id, tmp_path / "all", settings=SMALL_PLAN
    )
    selected, _ = download_dataset(
        pennsieve_client, dataset.node_id, tmp_path / "sub", package_ids=[sub.node_id], settings=SMALL_PLAN
    )

    assert report.downloaded == 6 and summary.file_count == 6
    big = next(p for p in dataset.packages if p.name == "big.edf").files[0]
    assert (tmp_path / "all" / "big.edf").read_bytes() == big.body()  # split into ranges, assembled
    assert sorted(p.name for p in (tmp_path / "sub" / "sub-01").iterdir()) == [
        f"rec-{i}.edf" for i in range(4)
    ]
    assert selected.package_ids == [sub.node_id] and selected.file_count == 4
    with pytest.raises(NotFound, match="package N:package:missing"):
        download_dataset(pennsieve_client, dataset.node_id, tmp_path / "x", package_ids=["N:package:missing"])


def test_local_download_raises_the_checksum_mismatch_before_other_failures(
    pennsieve, pennsieve_client, dataset, tmp_path
):
    early = dataset.add_package("a-gone.edf", [("a-gone.edf", KiB)])  # listed before big.edf
    pennsieve.faults.fail(rf"^/s3/{early.files[0].id}$", status=404, times=10)  # gone from storage
    big = next(p for p in dataset.packages if p.name == "big.edf").files[0]
    pennsieve.faults.corrupt(big.id)

    with pytest.raises(ChecksumMismatch, match="checksum mismatch for big.edf") as caught:
        download_dataset(pennsieve_client, dataset.node_id, tmp_path, settings=SMALL_PLAN)

    assert caught.value.__notes__ == ["1 more file(s) failed: a-gone.edf"]
    assert (tmp_path / "sub-01" / "rec-0.edf").is_file()  # the others still arrived
