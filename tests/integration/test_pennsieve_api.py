"""Typed API calls against the fake Pennsieve: shapes, pagination, retries and precise errors."""

from __future__ import annotations

import time

import pytest

from pennflow.pennsieve import NotFound, PennsieveError, PermissionDenied

pytest_plugins = ["tests.fakes.pennsieve_fixtures"]


@pytest.fixture
def dataset(pennsieve):
    dataset = pennsieve.add_dataset("eeg-study")
    sub = dataset.add_folder("sub-01")
    dataset.add_package("rec1.edf", [("rec1.edf", 2048)], parent=sub, package_type="TimeSeries")
    dataset.add_package("notes.txt", checksum="md5")
    dataset.add_package("gone.txt", state="DELETED")
    return dataset


def test_get_dataset_reads_node_id_int_id_and_name(pennsieve_client, dataset):
    found = pennsieve_client.get_dataset(dataset.node_id)
    assert (found.node_id, found.int_id, found.name) == (dataset.node_id, dataset.int_id, "eeg-study")


def test_packages_follow_the_cursor_across_pages(pennsieve, pennsieve_client):
    dataset = pennsieve.add_dataset("many")
    made = [dataset.add_package(f"file-{i}.bin") for i in range(7)]

    packages = list(pennsieve_client.iter_packages(dataset.node_id, page_size=3))

    assert [p.node_id for p in packages] == [p.node_id for p in made]
    calls = pennsieve.requests_to(r"/datasets/.+/packages$")
    assert [c.query.get("cursor") for c in calls] == [
        None,
        [f"package:{made[2].int_id}"],
        [f"package:{made[5].int_id}"],
    ]
    assert all(c.query["includeSourceFiles"] == ["true"] and c.query["pageSize"] == ["3"] for c in calls)
    assert all(p.sources[0].display_name == p.content.name for p in packages)


def test_listing_hides_deleted_packages_and_keeps_folders(pennsieve_client, dataset):
    packages = list(pennsieve_client.iter_packages(dataset.node_id))
    names = {p.content.name: p for p in packages}
    assert set(names) == {"sub-01", "rec1.edf", "notes.txt"}
    assert names["sub-01"].is_collection and names["sub-01"].node_id.startswith("N:collection:")
    assert names["rec1.edf"].content.parent_id == names["sub-01"].int_id


def test_page_size_outside_the_api_limits_is_refused_before_calling(pennsieve_client, dataset):
    with pytest.raises(ValueError, match="page_size must be between 1 and 1000"):
        pennsieve_client.iter_packages(dataset.node_id, page_size=1001)


def test_get_package_reads_the_wrapped_shape_with_sources(pennsieve_client, dataset):
    node_id = next(p.node_id for p in dataset.packages if p.name == "notes.txt")
    package = pennsieve_client.get_package(node_id)
    assert package.node_id == node_id and package.int_id > 0
    [source] = package.sources
    assert source.md5 and len(source.md5) == 32 and source.checksum is None


def test_package_sources_pages_by_offset(pennsieve, pennsieve_client):
    dataset = pennsieve.add_dataset("multi")
    package = dataset.add_package("scan", [(f"slice-{i}.dcm", 10 + i) for i in range(5)])

    sources = pennsieve_client.package_sources(package.node_id, page_size=2)

    assert [s.display_name for s in sources] == [f"slice-{i}.dcm" for i in range(5)]
    assert [c.query["offset"] for c in pennsieve.requests_to("/sources-paged")] == [["0"], ["2"], ["4"]]


def test_rate_limited_calls_are_retried_until_they_succeed(pennsieve, pennsieve_client, dataset):
    pennsieve.faults.rate_limit(r"^/datasets/", times=2)

    assert pennsieve_client.get_dataset(dataset.node_id).name == "eeg-study"
    assert len(pennsieve.requests_to(r"^/datasets/")) == 3


def test_retry_after_is_honoured(pennsieve, pennsieve_client, dataset):
    pennsieve.faults.rate_limit(r"^/datasets/", times=1, retry_after=1)
    started = time.monotonic()
    pennsieve_client.get_dataset(dataset.node_id)
    assert time.monotonic() - started >= 0.95  # the backoff alone would be ~0.01s


def test_server_errors_are_retried_then_reported_with_their_status(pennsieve, pennsieve_client, dataset):
    pennsieve.faults.fail(r"^/datasets/", status=503, times=2)
    assert pennsieve_client.get_dataset(dataset.node_id).name == "eeg-study"

    pennsieve.faults.fail(r"^/datasets/", status=500, times=10)
    with pytest.raises(PennsieveError) as caught:
        pennsieve_client.get_dataset(dataset.node_id)
    assert caught.value.status == 500
    assert f"dataset {dataset.node_id}: HTTP 500: injected failure" in str(caught.value)
    assert len(pennsieve.requests_to(r"^/datasets/")) == 3 + 4  # 1 + 3 retries each time


def test_a_missing_package_is_not_found_naming_it(pennsieve_client):
    with pytest.raises(NotFound, match="package N:package:does-not-exist not found") as caught:
        pennsieve_client.get_package("N:package:does-not-exist")
    assert caught.value.status == 404


def test_a_missing_file_names_file_and_package(pennsieve_client, dataset):
    package = next(p for p in dataset.packages if p.name == "notes.txt")
    with pytest.raises(NotFound, match=f"file 999 of package {package.node_id} not found"):
        pennsieve_client.download_url(package.node_id, 999)


def test_a_file_that_failed_its_scan_is_permission_denied(pennsieve_client, dataset):
    package = next(p for p in dataset.packages if p.name == "notes.txt")
    package.files[0].scan_failed = True
    with pytest.raises(PermissionDenied, match="malware scan"):
        pennsieve_client.download_url(package.node_id, package.files[0].id)


def test_download_manifest_expands_folders(pennsieve_client, dataset):
    folder = next(p for p in dataset.packages if p.is_collection)
    manifest = pennsieve_client.download_manifest([folder.node_id])
    [item] = manifest.data
    assert (item.file_name, item.path, item.size) == ("rec1.edf", ["sub-01"], 2048)
    assert manifest.header.count == 1 and manifest.header.size == 2048
    assert item.url.startswith("http://127.0.0.1")


def test_idempotent_posts_are_retried_and_others_are_not(pennsieve, pennsieve_client, dataset):
    folder = next(p for p in dataset.packages if p.is_collection)
    pennsieve.faults.fail("download-manifest", status=502, times=1)
    assert pennsieve_client.download_manifest([folder.node_id]).header.count == 1
    assert len(pennsieve.requests_to("download-manifest")) == 2

    pennsieve.faults.fail(r"^/api2/upload/manifest$", status=502, times=1)
    with pytest.raises(PennsieveError, match="HTTP 502"):
        pennsieve_client.create_upload_manifest(dataset.node_id)  # creating twice would leave two manifests
    assert len(pennsieve.requests_to(r"^/api2/upload/manifest$")) == 1


def test_an_unexpected_response_shape_names_the_field(pennsieve_client, dataset, monkeypatch):
    original = type(dataset).dto

    def without_int_id(self):
        dto = original(self)
        del dto["content"]["intId"]
        return dto

    monkeypatch.setattr(type(dataset), "dto", without_int_id)
    with pytest.raises(PennsieveError, match=r"unexpected response shape at content\.intId"):
        pennsieve_client.get_dataset(dataset.node_id)
