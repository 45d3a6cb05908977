"""Downloads cut into batches for a Distributed Map: one Lambda per batch, then a finishing call."""

from __future__ import annotations

import pytest

from pennflow.pennsieve import (
    BATCHES,
    ChecksumMismatch,
    DownloadSettings,
    PennsieveError,
    Transfer,
    build_manifest,
    download,
    finish_downloads,
    plan_batches,
    run_batch,
)

pytest_plugins = ["tests.fakes.pennsieve_fixtures"]

KiB = 1024
SETTINGS = DownloadSettings(max_workers=3, chunk_size=4 * KiB, range_threshold=200 * KiB, range_size=64 * KiB)


@pytest.fixture
def dataset(pennsieve):
    dataset = pennsieve.add_dataset("eeg-study")
    sub = dataset.add_folder("sub-01")
    for i in range(5):
        dataset.add_package(f"small-{i}.edf", [(f"small-{i}.edf", 30 * KiB)], parent=sub)
    dataset.add_package("big.edf", [("big.edf", 330 * KiB)], checksum="md5")
    return dataset


def test_batches_pack_whole_files_and_byte_ranges_by_bytes(pennsieve_client, dataset):
    manifest = build_manifest(pennsieve_client, dataset.node_id)

    batches = plan_batches(manifest.entries, SETTINGS, batch_bytes=128 * KiB)

    items = [item for batch in batches for item in batch]
    assert [i.entry.path for i in items if i.range is None] == [f"sub-01/small-{i}.edf" for i in range(5)]
    big = [i.range for i in items if i.range is not None]
    assert [(r.start, r.end) for r in big] == [
        (n * 64 * KiB, min((n + 1) * 64 * KiB, 330 * KiB) - 1) for n in range(6)
    ]
    assert all(sum(i.size for i in b) <= 128 * KiB for b in batches)
    assert len(plan_batches(manifest.entries, SETTINGS, max_items=2)[0]) == 2
    assert BATCHES.validate_json(BATCHES.dump_json(batches)) == batches  # the S3 object the Map reads


def test_each_batch_in_its_own_invocation_then_finish_assembles(
    pennsieve, pennsieve_client, dataset, tmp_path
):
    manifest = build_manifest(pennsieve_client, dataset.node_id)
    batches = plan_batches(manifest.entries, SETTINGS, batch_bytes=100 * KiB)

    for batch in batches:  # separate Lambda invocations: separate transfers
        run_batch(batch, tmp_path, Transfer.for_client(pennsieve_client, SETTINGS)).raise_for_failures()
    assert not (tmp_path / "big.edf").exists()  # ranges only land in the .part

    report = finish_downloads(manifest.entries, tmp_path, SETTINGS)

    report.raise_for_failures()
    assert {o.path: o.status for o in report.outcomes}["big.edf"] == "downloaded"
    big = next(p for p in dataset.packages if p.name == "big.edf").files[0]
    assert (tmp_path / "big.edf").read_bytes() == big.body()
    for i in range(5):
        small = next(p for p in dataset.packages if p.name == f"small-{i}.edf").files[0]
        assert (tmp_path / f"sub-01/small-{i}.edf").read_bytes() == small.body()


def test_a_retried_batch_skips_what_it_already_fetched(pennsieve, pennsieve_client, dataset, tmp_path):
    manifest = build_manifest(pennsieve_client, dataset.node_id)
    [batch] = plan_batches(manifest.entries, SETTINGS)
    big = next(p for p in dataset.packages if p.name == "big.edf").files[0]
    pennsieve.faults.drop_connection(big.id, at_byte=70 * KiB, times=3)

    first = run_batch(batch, tmp_path, Transfer.for_client(pennsieve_client, SETTINGS))
    assert [o.path for o in first.failed] == [f"big.edf [bytes {64 * KiB}-{128 * KiB - 1}]"]
    with pytest.raises(PennsieveError, match="connection lost in range"):
        first.raise_for_failures()
    file_gets = len(pennsieve.requests_to("^/s3/"))

    second = run_batch(batch, tmp_path, Transfer.for_client(pennsieve_client, SETTINGS))

    second.raise_for_failures()
    assert [o.status for o in second.outcomes].count("downloaded") == 1
    assert len(pennsieve.requests_to("^/s3/")) == file_gets + 1
    finish_downloads(manifest.entries, tmp_path, SETTINGS).raise_for_failures()
    assert (tmp_path / "big.edf").read_bytes() == big.body()


def test_finish_names_files_never_fetched_and_bad_checksums(pennsieve, pennsieve_client, dataset, tmp_path):
    manifest = build_manifest(pennsieve_client, dataset.node_id)
    batches = plan_batches(manifest.entries, SETTINGS, batch_bytes=100 * KiB)
    assert [i.entry.path for i in batches[-1]] == ["sub-01/small-3.edf", "sub-01/small-4.edf"]
    big = next(p for p in dataset.packages if p.name == "big.edf").files[0]
    pennsieve.faults.corrupt(big.id)
    for batch in batches[:-1]:  # the last batch never ran
        run_batch(batch, tmp_path, Transfer.for_client(pennsieve_client, SETTINGS)).raise_for_failures()

    report = finish_downloads(manifest.entries, tmp_path, SETTINGS)

    failed = {o.path: o.error for o in report.failed}
    assert set(failed) == {"big.edf", "sub-01/small-3.edf", "sub-01/small-4.edf"}
    assert failed["sub-01/small-3.edf"] == "sub-01/small-3.edf was not downloaded"
    with pytest.raises(ChecksumMismatch, match="checksum mismatch for big.edf") as caught:
        report.raise_for_failures()
    assert "2 more file(s) failed" in caught.value.__notes__[0]
    assert not (tmp_path / "big.edf").exists()


def test_finish_names_the_ranges_still_missing(pennsieve_client, dataset, tmp_path):
    manifest = build_manifest(pennsieve_client, dataset.node_id)
    batches = plan_batches(manifest.entries, SETTINGS, batch_bytes=100 * KiB)
    skipped = batches[2]
    for batch in batches:
        if batch is not skipped:
            run_batch(batch, tmp_path, Transfer.for_client(pennsieve_client, SETTINGS)).raise_for_failures()

    report = finish_downloads(manifest.entries, tmp_path, SETTINGS)

    [failure] = report.failed
    assert failure.path == "big.edf"
    assert failure.error == f"big.edf: byte ranges {skipped[0].range.marker} are not fetched yet"


def test_a_batch_asks_for_its_urls_in_one_request(pennsieve, pennsieve_client, dataset, tmp_path):
    manifest = build_manifest(pennsieve_client, dataset.node_id)
    [batch] = plan_batches(manifest.entries, SETTINGS)

    run_batch(batch, tmp_path, Transfer.for_client(pennsieve_client, SETTINGS)).raise_for_failures()

    assert len(pennsieve.requests_to("^/packages/download-manifest$")) == 1
    assert pennsieve.requests_to(r"^/packages/.+/files/\d+$") == []
    assert len(pennsieve.requests_to("^/s3/")) == 5 + 6  # small files, then big.edf's ranges


def test_ranges_from_separate_invocations_carry_their_part_digests_to_finish(
    pennsieve, pennsieve_client, tmp_path, monkeypatch
):
    dataset = pennsieve.add_dataset("mp")
    file = dataset.add_package(
        "rec.bin", [("rec.bin", 400 * KiB)], checksum="multipart", part_size=32 * KiB
    ).files[0]
    manifest = build_manifest(pennsieve_client, dataset.node_id)
    batches = plan_batches(manifest.entries, SETTINGS, batch_bytes=128 * KiB)
    assert len(batches) == 4
    for batch in batches:
        run_batch(batch, tmp_path, Transfer.for_client(pennsieve_client, SETTINGS)).raise_for_failures()
    markers = sorted((tmp_path / "rec.bin.ranges").iterdir())
    assert len(markers) == 7 and all('"parts":{"' in m.read_text() for m in markers)
    monkeypatch.setattr(download, "hash_file_range", lambda *a: pytest.fail("a part was read back"))

    report = finish_downloads(manifest.entries, tmp_path, SETTINGS)

    report.raise_for_failures()
    assert report.outcomes[0].verified
    assert (tmp_path / "rec.bin").read_bytes() == file.body()


def test_a_range_marker_without_digests_is_checked_by_reading_its_parts(
    pennsieve, pennsieve_client, tmp_path
):
    dataset = pennsieve.add_dataset("mp")
    dataset.add_package("rec.bin", [("rec.bin", 400 * KiB)], checksum="multipart", part_size=32 * KiB)
    manifest = build_manifest(pennsieve_client, dataset.node_id)
    for batch in plan_batches(manifest.entries, SETTINGS):
        run_batch(batch, tmp_path, Transfer.for_client(pennsieve_client, SETTINGS)).raise_for_failures()
    [first, *_] = sorted((tmp_path / "rec.bin.ranges").iterdir(), key=lambda m: int(m.name.split("-")[0]))
    first.write_text("")  # as an earlier version wrote them
    with (tmp_path / "rec.bin.part").open("r+b") as part:
        part.write(b"\0")  # so a part hashed from disk shows

    report = finish_downloads(manifest.entries, tmp_path, SETTINGS)

    with pytest.raises(ChecksumMismatch, match="checksum mismatch for rec.bin"):
        report.raise_for_failures()
