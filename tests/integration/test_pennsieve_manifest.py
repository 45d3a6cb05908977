"""Download manifests: folder structure from integer parentIds, selection, order, JSON lines."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from pennflow.pennsieve import ManifestEntry, NotFound, build_manifest, read_jsonl

pytest_plugins = ["tests.fakes.pennsieve_fixtures"]


@pytest.fixture
def dataset(pennsieve):
    dataset = pennsieve.add_dataset("eeg-study")
    sub1 = dataset.add_folder("sub-01")
    ses = dataset.add_folder("ses-a", parent=sub1)
    sub2 = dataset.add_folder("sub-02")
    dataset.add_package("run-2.edf", [("run-2.edf", 300)], parent=ses)
    dataset.add_package("run-1.edf", [("run-1.edf", 200)], parent=ses, checksum="md5")
    dataset.add_package("scan", [("a.dcm", 10), ("b.dcm", 20)], parent=sub2)  # several sources
    dataset.add_package("README.md", [("README.md", 50)], checksum="none")
    dataset.add_package(
        "big.bin", [("big.bin", 12_000_000)], parent=sub2, checksum="multipart", part_size=5 << 20
    )
    dataset.add_folder("empty", parent=sub2)
    return dataset


def test_paths_keep_the_dataset_folders(pennsieve_client, dataset):
    manifest = build_manifest(pennsieve_client, dataset.node_id)

    assert [e.path for e in manifest.entries] == [
        "README.md",
        "sub-01/ses-a/run-1.edf",
        "sub-01/ses-a/run-2.edf",
        "sub-02/big.bin",
        "sub-02/scan/a.dcm",
        "sub-02/scan/b.dcm",
    ]
    assert manifest.dataset_id == dataset.node_id and manifest.dataset_name == "eeg-study"
    assert manifest.total_size == 50 + 200 + 300 + 12_000_000 + 10 + 20


def test_entries_carry_ids_sizes_and_checksums_with_their_kind(pennsieve_client, dataset):
    by_path = {e.path: e for e in build_manifest(pennsieve_client, dataset.node_id).entries}
    run1 = next(p for p in dataset.packages if p.name == "run-1.edf")
    run2 = next(p for p in dataset.packages if p.name == "run-2.edf")
    big = next(p for p in dataset.packages if p.name == "big.bin")

    entry = by_path["sub-01/ses-a/run-1.edf"]
    assert (entry.package_node_id, entry.package_id, entry.file_id) == (
        run1.node_id,
        run1.int_id,
        run1.files[0].id,
    )
    assert (entry.size, entry.checksum, entry.checksum_kind) == (200, run1.files[0].md5(), "md5")
    assert by_path["sub-01/ses-a/run-2.edf"].checksum_kind == "s3-etag"
    assert by_path["sub-01/ses-a/run-2.edf"].checksum == run2.files[0].md5()  # single-part ETag
    assert by_path["sub-02/big.bin"].checksum == big.files[0].multipart_etag()
    assert by_path["sub-02/big.bin"].checksum_part_size == 5 << 20
    assert by_path["README.md"].checksum is None and by_path["README.md"].checksum_kind is None


def test_the_order_does_not_depend_on_paging(pennsieve_client, dataset, pennsieve):
    whole = build_manifest(pennsieve_client, dataset.node_id).to_jsonl()
    from pennflow.pennsieve.manifest import manifest_from_packages

    paged = manifest_from_packages(
        pennsieve_client.get_dataset(dataset.node_id),
        reversed(list(pennsieve_client.iter_packages(dataset.node_id, page_size=2))),
    )
    assert paged.to_jsonl() == whole


def test_selecting_a_folder_brings_its_contents_with_full_paths(pennsieve_client, dataset):
    ses = next(p for p in dataset.packages if p.name == "ses-a")
    readme = next(p for p in dataset.packages if p.name == "README.md")

    manifest = build_manifest(pennsieve_client, dataset.node_id, [ses.node_id, readme.node_id])

    assert [e.path for e in manifest.entries] == [
        "README.md",
        "sub-01/ses-a/run-1.edf",
        "sub-01/ses-a/run-2.edf",
    ]


def test_an_unknown_selected_package_is_not_found_naming_it(pennsieve_client, dataset):
    with pytest.raises(NotFound, match=f"package N:package:nope not found in dataset {dataset.node_id}"):
        build_manifest(pennsieve_client, dataset.node_id, ["N:package:nope"])


def test_clashing_names_get_the_file_id_and_unsafe_names_are_neutralised(pennsieve, pennsieve_client):
    dataset = pennsieve.add_dataset("clash")
    first = dataset.add_package("data.csv")
    second = dataset.add_package("data.csv")
    dataset.add_package("../escape", [("../../etc/passwd", 5)])

    paths = [e.path for e in build_manifest(pennsieve_client, dataset.node_id).entries]

    assert paths == sorted([".._.._etc_passwd", "data.csv", f"data ({second.files[0].id}).csv"])
    assert first.files[0].id < second.files[0].id


def test_json_lines_round_trip(pennsieve_client, dataset):
    manifest = build_manifest(pennsieve_client, dataset.node_id)
    text = manifest.to_jsonl()

    assert len(text.splitlines()) == len(manifest.entries)
    assert read_jsonl(text) == manifest.entries


def test_entries_from_outside_cannot_point_outside_the_destination():
    base = {
        "dataset_id": "N:dataset:x",
        "package_node_id": "N:package:y",
        "package_id": 1,
        "file_id": 2,
        "size": 1,
    }
    for bad in ("/etc/passwd", "a/../../b", "", "a\\..\\b"):
        with pytest.raises(ValidationError, match="relative path inside the destination"):
            ManifestEntry(**base, path=bad)
    with pytest.raises(ValueError, match="manifest line 2"):
        read_jsonl(ManifestEntry(**base, path="ok").model_dump_json() + "\n" + '{"path": "/x"}\n')
