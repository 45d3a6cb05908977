"""Downloads from the fake's presigned URLs: streaming, verification, resume and byte ranges."""

from __future__ import annotations

import pytest

from pennflow.pennsieve import (
    ChecksumMismatch,
    DownloadSettings,
    NotFound,
    PennsieveError,
    build_manifest,
    download,
    download_entries,
    pool,
)
from pennflow.pennsieve.download import (
    assemble,
    download_entry,
    fetch_range,
    plan_ranges,
    target_path,
)
from pennflow.pennsieve.transfer import Transfer
from tests.fakes.pennsieve_server import content_bytes

pytest_plugins = ["tests.fakes.pennsieve_fixtures"]

KiB = 1024
SMALL = DownloadSettings(max_workers=4, chunk_size=4 * KiB, range_threshold=256 * KiB, range_size=64 * KiB)


@pytest.fixture
def dataset(pennsieve):
    dataset = pennsieve.add_dataset("eeg-study")
    sub = dataset.add_folder("sub-01")
    dataset.add_package("a.edf", [("a.edf", 40 * KiB)], parent=sub)
    dataset.add_package("b.edf", [("b.edf", 70 * KiB)], parent=sub, checksum="md5")
    dataset.add_package("notes.txt", [("notes.txt", 300)], checksum="none")
    dataset.add_package("empty.txt", [("empty.txt", 0)])
    return dataset


def files_by_path(dataset):
    folders = {p.int_id: p.name for p in dataset.packages if p.is_collection}
    found = {}
    for package in dataset.packages:
        for file in package.files:
            prefix = f"{folders[package.parent.int_id]}/" if package.parent else ""
            found[prefix + file.name] = file
    return found


def downloads_of(pennsieve, file):
    return pennsieve.requests_to(f"^/s3/{file.id}$")


def test_downloads_every_file_into_the_folder_structure(pennsieve, pennsieve_client, dataset, tmp_path):
    manifest = build_manifest(pennsieve_client, dataset.node_id)

    report = download_entries(manifest.entries, tmp_path, pennsieve_client, SMALL)

    report.raise_for_failures()
    assert report.downloaded == 4 and report.skipped == 0
    for path, file in files_by_path(dataset).items():
        assert (tmp_path / path).read_bytes() == file.body(), path
    assert sorted(p.name for p in tmp_path.rglob("*") if p.name.endswith((".part", ".ranges"))) == []
    verified = {o.path: o.verified for o in report.outcomes}
    assert verified == {"sub-01/a.edf": True, "sub-01/b.edf": True, "notes.txt": False, "empty.txt": True}


def test_presigned_urls_never_receive_the_authorization_header(
    pennsieve, pennsieve_client, dataset, tmp_path
):
    manifest = build_manifest(pennsieve_client, dataset.node_id)
    download_entries(manifest.entries, tmp_path, pennsieve_client, SMALL).raise_for_failures()

    file_calls = pennsieve.requests_to("^/s3/")
    assert len(file_calls) == 3  # the empty file needs no transfer
    assert all("authorization" not in c.headers and "x-organization-id" not in c.headers for c in file_calls)
    [bulk] = pennsieve.requests_to("^/packages/download-manifest$")  # every URL in one request
    assert "authorization" in bulk.headers
    assert pennsieve.requests_to(r"^/packages/.+/files/\d+$") == []


def test_a_corrupted_body_raises_checksum_mismatch_naming_the_file(
    pennsieve, pennsieve_client, dataset, tmp_path
):
    bad = files_by_path(dataset)["sub-01/b.edf"]
    pennsieve.faults.corrupt(bad.id)
    manifest = build_manifest(pennsieve_client, dataset.node_id)

    report = download_entries(manifest.entries, tmp_path, pennsieve_client, SMALL)

    assert [o.path for o in report.failed] == ["sub-01/b.edf"]
    with pytest.raises(
        ChecksumMismatch, match=r"checksum mismatch for sub-01/b\.edf: expected md5"
    ) as caught:
        report.raise_for_failures()
    assert caught.value.expected == bad.md5() and caught.value.actual != bad.md5()
    assert not (tmp_path / "sub-01/b.edf").exists()
    assert not (tmp_path / "sub-01/b.edf.part").exists()  # a bad copy is not kept for resuming
    assert (tmp_path / "sub-01/a.edf").read_bytes() == files_by_path(dataset)["sub-01/a.edf"].body()


def test_a_dropped_connection_is_resumed_with_a_range_in_the_same_run(
    pennsieve, pennsieve_client, dataset, tmp_path
):
    file = files_by_path(dataset)["sub-01/b.edf"]
    pennsieve.faults.drop_connection(file.id, at_byte=30 * KiB, times=1)
    manifest = build_manifest(pennsieve_client, dataset.node_id)

    download_entries(manifest.entries, tmp_path, pennsieve_client, SMALL).raise_for_failures()

    assert (tmp_path / "sub-01/b.edf").read_bytes() == file.body()
    ranges = [c.headers.get("range") for c in downloads_of(pennsieve, file)]
    assert ranges[0] is None and ranges[1].startswith("bytes=") and int(ranges[1][6:].split("-")[0]) > 0


def test_an_interrupted_batch_resumes_and_skips_finished_files(
    pennsieve, pennsieve_client, dataset, tmp_path
):
    files = files_by_path(dataset)
    interrupted = files["sub-01/b.edf"]
    pennsieve.faults.drop_connection(
        interrupted.id, at_byte=50 * KiB, times=3
    )  # more than the in-run resumes
    manifest = build_manifest(pennsieve_client, dataset.node_id)

    first = download_entries(manifest.entries, tmp_path, pennsieve_client, SMALL)

    assert [o.path for o in first.failed] == ["sub-01/b.edf"]
    with pytest.raises(PennsieveError, match=r"sub-01/b\.edf: connection lost at byte \d+ of 71680"):
        first.raise_for_failures()
    assert not (tmp_path / "sub-01/b.edf").exists()
    kept = (tmp_path / "sub-01/b.edf.part").stat().st_size
    assert 0 < kept <= 50 * KiB
    calls_before = {path: len(downloads_of(pennsieve, f)) for path, f in files.items()}

    pennsieve.faults.drop_connection(interrupted.id, at_byte=0, times=0)  # the network is back
    second = download_entries(manifest.entries, tmp_path, pennsieve_client, SMALL)

    second.raise_for_failures()
    assert {o.path: o.status for o in second.outcomes} == {
        "sub-01/a.edf": "skipped",
        "sub-01/b.edf": "downloaded",
        "notes.txt": "skipped",
        "empty.txt": "skipped",
    }
    for path, file in files.items():
        expected_calls = calls_before[path] + (1 if path == "sub-01/b.edf" else 0)
        assert len(downloads_of(pennsieve, file)) == expected_calls, path
    assert downloads_of(pennsieve, interrupted)[-1].headers["range"] == f"bytes={kept}-"
    assert (tmp_path / "sub-01/b.edf").read_bytes() == interrupted.body()
    assert second.outcomes[[o.path for o in second.outcomes].index("sub-01/b.edf")].bytes_transferred == (
        interrupted.size - kept
    )


def test_a_tampered_finished_file_is_fetched_again(pennsieve, pennsieve_client, dataset, tmp_path):
    manifest = build_manifest(pennsieve_client, dataset.node_id)
    download_entries(manifest.entries, tmp_path, pennsieve_client, SMALL).raise_for_failures()
    path = tmp_path / "sub-01/a.edf"
    data = bytearray(path.read_bytes())
    data[0] ^= 0xFF
    path.write_bytes(bytes(data))  # same size, wrong bytes

    report = download_entries(manifest.entries, tmp_path, pennsieve_client, SMALL)

    assert {o.path: o.status for o in report.outcomes}["sub-01/a.edf"] == "downloaded"
    assert path.read_bytes() == files_by_path(dataset)["sub-01/a.edf"].body()


def test_a_large_file_is_split_into_ranges_and_assembled(pennsieve, pennsieve_client, tmp_path):
    dataset = pennsieve.add_dataset("big")
    package = dataset.add_package("big.bin", [("big.bin", 1_000_003)])
    file = package.files[0]
    manifest = build_manifest(pennsieve_client, dataset.node_id)

    report = download_entries(manifest.entries, tmp_path, pennsieve_client, SMALL)

    report.raise_for_failures()
    assert (tmp_path / "big.bin").read_bytes() == file.body()
    assert report.outcomes[0].verified and report.outcomes[0].bytes_transferred == 1_000_003
    ranges = sorted(c.headers["range"] for c in downloads_of(pennsieve, file))
    expected = sorted(f"bytes={r.start}-{r.end}" for r in plan_ranges(file.size, SMALL))
    assert ranges == expected and len(expected) == 16
    url_requests = pennsieve.requests_to(r"/files/\d+$") + pennsieve.requests_to("download-manifest")
    assert len(url_requests) == 1  # one URL shared by the ranges
    assert not (tmp_path / "big.bin.ranges").exists()


def test_ranges_fetched_by_separate_invocations_assemble_into_the_file(pennsieve, pennsieve_client, tmp_path):
    dataset = pennsieve.add_dataset("big")
    file = dataset.add_package("big.bin", [("big.bin", 600 * KiB)], checksum="md5").files[0]
    [entry] = build_manifest(pennsieve_client, dataset.node_id).entries
    ranges = plan_ranges(entry.size, SMALL)

    # Each "invocation" has its own Transfer (its own URL), as separate Lambdas would.
    for rng in reversed(ranges):
        fetch_range(entry, rng, tmp_path, Transfer.for_client(pennsieve_client, SMALL))
    assert not target_path(tmp_path, entry).exists()
    assert assemble(entry, tmp_path, ranges) is True

    assert (tmp_path / "big.bin").read_bytes() == file.body()
    # A retried invocation finds its range done and fetches nothing.
    before = len(downloads_of(pennsieve, file))
    assert download_entry(entry, tmp_path, Transfer.for_client(pennsieve_client, SMALL)).status == "skipped"
    assert len(downloads_of(pennsieve, file)) == before


def test_assembling_before_every_range_is_in_names_the_missing_ones(pennsieve, pennsieve_client, tmp_path):
    dataset = pennsieve.add_dataset("big")
    dataset.add_package("big.bin", [("big.bin", 300 * KiB)])
    [entry] = build_manifest(pennsieve_client, dataset.node_id).entries
    ranges = plan_ranges(entry.size, SMALL)
    fetch_range(entry, ranges[0], tmp_path, Transfer.for_client(pennsieve_client, SMALL))

    with pytest.raises(
        PennsieveError, match=rf"big\.bin: byte ranges {ranges[1].marker}, .* are not fetched yet"
    ):
        assemble(entry, tmp_path, ranges)


def test_a_dropped_range_is_resumed_within_the_range(pennsieve, pennsieve_client, tmp_path):
    dataset = pennsieve.add_dataset("big")
    file = dataset.add_package("big.bin", [("big.bin", 400 * KiB)]).files[0]
    pennsieve.faults.drop_connection(file.id, at_byte=100 * KiB, times=1)
    manifest = build_manifest(pennsieve_client, dataset.node_id)

    download_entries(manifest.entries, tmp_path, pennsieve_client, SMALL).raise_for_failures()

    assert (tmp_path / "big.bin").read_bytes() == file.body()
    assert f"bytes={100 * KiB}-{128 * KiB - 1}" in [c.headers["range"] for c in downloads_of(pennsieve, file)]


def test_a_multipart_etag_is_verified_with_its_part_size(pennsieve, pennsieve_client, tmp_path):
    dataset = pennsieve.add_dataset("mp")
    good = dataset.add_package(
        "good.bin", [("good.bin", 700 * KiB)], checksum="multipart", part_size=256 * KiB
    )
    bad = dataset.add_package("bad.bin", [("bad.bin", 700 * KiB)], checksum="multipart", part_size=256 * KiB)
    pennsieve.faults.corrupt(bad.files[0].id)
    manifest = build_manifest(pennsieve_client, dataset.node_id)
    assert {e.checksum for e in manifest.entries} >= {good.files[0].multipart_etag()}

    report = download_entries(manifest.entries, tmp_path, pennsieve_client, SMALL)

    outcomes = {o.path: o for o in report.outcomes}
    assert outcomes["good.bin"].status == "downloaded" and outcomes["good.bin"].verified
    assert outcomes["bad.bin"].status == "failed" and "-3" in outcomes["bad.bin"].error


def test_an_expired_presigned_url_is_fetched_again(pennsieve, pennsieve_client, tmp_path):
    dataset = pennsieve.add_dataset("big")
    file = dataset.add_package("big.bin", [("big.bin", 300 * KiB)]).files[0]
    [entry] = build_manifest(pennsieve_client, dataset.node_id).entries
    transfer = Transfer.for_client(pennsieve_client, SMALL)
    ranges = plan_ranges(entry.size, SMALL)
    fetch_range(entry, ranges[0], tmp_path, transfer)

    pennsieve.expire_download_urls()
    for rng in ranges[1:]:
        fetch_range(entry, rng, tmp_path, transfer)
    assemble(entry, tmp_path, ranges)

    assert (tmp_path / "big.bin").read_bytes() == file.body()
    assert len(pennsieve.requests_to(r"/files/\d+$")) == 2


def test_memory_stays_bounded_for_a_large_file(pennsieve, pennsieve_client, tmp_path):
    import tracemalloc

    dataset = pennsieve.add_dataset("huge")
    file = dataset.add_package("huge.bin", [("huge.bin", 24 * 1024 * KiB)], checksum="md5").files[0]
    manifest = build_manifest(pennsieve_client, dataset.node_id)
    settings = DownloadSettings(max_workers=2, chunk_size=64 * KiB, range_threshold=8 * 1024 * KiB)

    tracemalloc.start()
    try:
        download_entries(manifest.entries, tmp_path, pennsieve_client, settings).raise_for_failures()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert (tmp_path / "huge.bin").stat().st_size == file.size
    assert peak < 4 * 1024 * KiB  # a few chunks in flight, not the 24 MiB file
    assert content_bytes(file.seed, 1000) == (tmp_path / "huge.bin").read_bytes()[:1000]


# -- checksums computed while the bytes arrive -----------------------------------------------------


def test_a_split_file_with_a_multipart_etag_is_verified_without_reading_it_back(
    pennsieve, pennsieve_client, tmp_path, monkeypatch
):
    dataset = pennsieve.add_dataset("mp")
    file = dataset.add_package(
        "rec.bin", [("rec.bin", 1_000_000)], checksum="multipart", part_size=32 * KiB
    ).files[0]
    [entry] = build_manifest(pennsieve_client, dataset.node_id).entries
    read_back = []
    monkeypatch.setattr(download, "hash_file_range", lambda *args: read_back.append(args))
    monkeypatch.setattr(download, "read_chunks", lambda *args: pytest.fail("the whole file was read back"))

    report = download_entries([entry], tmp_path, pennsieve_client, SMALL)  # 64 KiB ranges, 32 KiB parts

    report.raise_for_failures()
    assert report.outcomes[0].verified and read_back == []
    assert (tmp_path / "rec.bin").read_bytes() == file.body()


def test_parts_a_range_boundary_cuts_are_read_back_and_checked(
    pennsieve, pennsieve_client, tmp_path, monkeypatch
):
    dataset = pennsieve.add_dataset("mp")
    file = dataset.add_package(
        "rec.bin", [("rec.bin", 600 * KiB)], checksum="multipart", part_size=48 * KiB
    ).files[0]
    [entry] = build_manifest(pennsieve_client, dataset.node_id).entries
    read_back = []
    real = download.hash_file_range
    monkeypatch.setattr(
        download,
        "hash_file_range",
        lambda path, start, length: read_back.append(start) or real(path, start, length),
    )

    download_entries([entry], tmp_path, pennsieve_client, SMALL).raise_for_failures()

    # 64 KiB ranges over 48 KiB parts: a part that straddles a range boundary has no single hasher.
    cut = [
        i * 48 * KiB
        for i in range(13)
        if (i * 48 * KiB) // (64 * KiB) != ((i + 1) * 48 * KiB - 1) // (64 * KiB)
    ]
    assert sorted(read_back) == cut and 0 < len(cut) < 13
    assert (tmp_path / "rec.bin").read_bytes() == file.body()


def test_a_corrupted_range_of_a_multipart_file_raises_checksum_mismatch_naming_it(
    pennsieve, pennsieve_client, tmp_path
):
    dataset = pennsieve.add_dataset("mp")
    bad = dataset.add_package("bad.bin", [("bad.bin", 512 * KiB)], checksum="multipart", part_size=64 * KiB)
    pennsieve.faults.corrupt(bad.files[0].id)
    manifest = build_manifest(pennsieve_client, dataset.node_id)

    report = download_entries(manifest.entries, tmp_path, pennsieve_client, SMALL)

    with pytest.raises(
        ChecksumMismatch, match=r"checksum mismatch for bad\.bin: expected s3-etag .*-8"
    ) as caught:
        report.raise_for_failures()
    assert caught.value.expected == bad.files[0].multipart_etag()
    assert not (tmp_path / "bad.bin").exists() and not (tmp_path / "bad.bin.part").exists()
    assert not (tmp_path / "bad.bin.ranges").exists()  # the next run fetches every range again


def test_a_resumed_file_hashes_the_bytes_it_already_had_from_disk(
    pennsieve, pennsieve_client, dataset, tmp_path
):
    file = files_by_path(dataset)["sub-01/b.edf"]
    manifest = build_manifest(pennsieve_client, dataset.node_id)
    part = tmp_path / "sub-01/b.edf.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"\0" * 20 * KiB)  # a prefix left by an earlier process, and wrong

    first = download_entries(manifest.entries, tmp_path, pennsieve_client, SMALL)

    with pytest.raises(ChecksumMismatch, match=r"sub-01/b\.edf"):
        first.raise_for_failures()
    assert downloads_of(pennsieve, file)[-1].headers["range"] == f"bytes={20 * KiB}-"  # only the rest came
    assert not part.exists()
    download_entries(manifest.entries, tmp_path, pennsieve_client, SMALL).raise_for_failures()
    assert (tmp_path / "sub-01/b.edf").read_bytes() == file.body()


def test_a_split_file_with_a_plain_md5_is_hashed_in_order_while_it_downloads(
    pennsieve, pennsieve_client, tmp_path, monkeypatch
):
    dataset = pennsieve.add_dataset("md5")
    file = dataset.add_package("rec.bin", [("rec.bin", 1_000_003)], checksum="md5").files[0]
    [entry] = build_manifest(pennsieve_client, dataset.node_id).entries
    fed = []
    feed = pool.feed_ranges
    monkeypatch.setattr(
        pool, "feed_ranges", lambda e, d, ranges, v: fed.extend(ranges) or feed(e, d, ranges, v)
    )
    real_assemble = pool.assemble
    monkeypatch.setattr(
        pool, "assemble", lambda *args: real_assemble(*args[:3], args[3] or pytest.fail("no verifier"))
    )

    report = download_entries([entry], tmp_path, pennsieve_client, SMALL)

    report.raise_for_failures()
    assert report.outcomes[0].verified and fed == plan_ranges(file.size, SMALL)  # each range once, in order
    assert (tmp_path / "rec.bin").read_bytes() == file.body()


def test_ranges_an_earlier_run_fetched_are_hashed_from_disk(pennsieve, pennsieve_client, tmp_path):
    dataset = pennsieve.add_dataset("md5")
    file = dataset.add_package("rec.bin", [("rec.bin", 600 * KiB)], checksum="md5").files[0]
    [entry] = build_manifest(pennsieve_client, dataset.node_id).entries
    ranges = plan_ranges(entry.size, SMALL)
    for rng in ranges[:3]:  # an earlier process got this far
        fetch_range(entry, rng, tmp_path, Transfer.for_client(pennsieve_client, SMALL))
    with (tmp_path / "rec.bin.part").open("r+b") as part:
        part.seek(70 * KiB)
        part.write(b"\0")  # and its bytes went bad on disk since

    report = download_entries([entry], tmp_path, pennsieve_client, SMALL)

    with pytest.raises(ChecksumMismatch, match=r"checksum mismatch for rec\.bin: expected md5"):
        report.raise_for_failures()
    assert len(downloads_of(pennsieve, file)) == len(ranges)  # the 3 earlier ranges were not fetched again
    download_entries([entry], tmp_path, pennsieve_client, SMALL).raise_for_failures()
    assert (tmp_path / "rec.bin").read_bytes() == file.body()


def test_the_report_exposes_each_failures_own_exception(pennsieve, pennsieve_client, dataset, tmp_path):
    bad = files_by_path(dataset)["sub-01/b.edf"]
    pennsieve.faults.corrupt(bad.id)
    manifest = build_manifest(pennsieve_client, dataset.node_id)

    report = download_entries(manifest.entries, tmp_path, pennsieve_client, SMALL)

    assert list(report.errors) == ["sub-01/b.edf"]
    assert isinstance(report.errors["sub-01/b.edf"], ChecksumMismatch)
    with pytest.raises(TypeError):
        report.errors["notes.txt"] = PennsieveError("no")  # read-only


# -- presigned URLs in bulk ----------------------------------------------------------------------


def url_requests(pennsieve):
    return len(pennsieve.requests_to(r"^/packages/.+/files/\d+$")), len(
        pennsieve.requests_to("^/packages/download-manifest$")
    )


def test_urls_of_many_files_come_in_bulk_requests(pennsieve, pennsieve_client, tmp_path):
    dataset = pennsieve.add_dataset("many")
    for i in range(25):
        dataset.add_package(f"f{i:02d}.edf", [(f"f{i:02d}.edf", 2 * KiB + i)])
    manifest = build_manifest(pennsieve_client, dataset.node_id)

    report = download_entries(
        manifest.entries, tmp_path, pennsieve_client, SMALL.model_copy(update={"bulk_urls": 10})
    )

    report.raise_for_failures()
    assert url_requests(pennsieve) == (0, 3)
    for package in dataset.packages:
        assert (tmp_path / package.name).read_bytes() == package.files[0].body()


def test_a_package_with_several_files_gets_each_files_own_url(pennsieve, pennsieve_client, tmp_path):
    dataset = pennsieve.add_dataset("multi")
    package = dataset.add_package("session", [("left.edf", 3 * KiB), ("right.edf", 5 * KiB)])
    manifest = build_manifest(pennsieve_client, dataset.node_id)

    download_entries(manifest.entries, tmp_path, pennsieve_client, SMALL).raise_for_failures()

    for file in package.files:
        assert (tmp_path / "session" / file.name).read_bytes() == file.body()
    assert url_requests(pennsieve) == (1, 1)  # the answer names packages: one file each request


def test_a_failed_bulk_request_falls_back_to_one_url_per_file(pennsieve, pennsieve_client, dataset, tmp_path):
    pennsieve.faults.fail("download-manifest", status=500, times=10)
    manifest = build_manifest(pennsieve_client, dataset.node_id)

    download_entries(manifest.entries, tmp_path, pennsieve_client, SMALL).raise_for_failures()

    assert url_requests(pennsieve)[0] == 3
    for path, file in files_by_path(dataset).items():
        assert (tmp_path / path).read_bytes() == file.body()


def test_expired_bulk_urls_are_fetched_again_file_by_file(pennsieve, pennsieve_client, dataset, tmp_path):
    entries = [e for e in build_manifest(pennsieve_client, dataset.node_id).entries if e.size]
    transfer = Transfer.for_client(pennsieve_client, SMALL)
    for request in transfer.fetch_urls_ahead(entries):
        request()
    pennsieve.expire_download_urls()

    for entry in entries:
        assert download_entry(entry, tmp_path, transfer).status == "downloaded"

    assert url_requests(pennsieve) == (3, 1)
    assert (tmp_path / "sub-01/a.edf").read_bytes() == files_by_path(dataset)["sub-01/a.edf"].body()


def test_bulk_download_manifest_paths_name_a_package_of_several_files(pennsieve, pennsieve_client):
    dataset = pennsieve.add_dataset("multi")
    folder = dataset.add_folder("sub-01")
    dataset.add_package("one.edf", parent=folder)
    several = dataset.add_package("session", [("l.edf", 10), ("r.edf", 20)], parent=folder)

    everything = pennsieve_client.download_manifest([folder.node_id])
    only_r = pennsieve_client.download_manifest([several.node_id], [several.files[1].id])

    paths = {item.file_name: item.path for item in everything.data}
    assert paths == {"one.edf": ["sub-01"], "l.edf": ["sub-01", "session"], "r.edf": ["sub-01", "session"]}
    assert [(i.file_name, i.size) for i in only_r.data] == [("r.edf", 20)] and only_r.header.size == 20


# -- scheduling ----------------------------------------------------------------------------------


def test_files_are_handed_to_the_pool_a_few_at_a_time(pennsieve, pennsieve_client, tmp_path, monkeypatch):
    dataset = pennsieve.add_dataset("many")
    for i in range(60):
        dataset.add_package(f"f{i:02d}.edf", [(f"f{i:02d}.edf", KiB)])
    manifest = build_manifest(pennsieve_client, dataset.node_id)
    in_flight = []
    submit = pool._PoolRun._submit

    def counting_submit(run, *args, **kwargs):
        submit(run, *args, **kwargs)
        in_flight.append(len(run.steps))

    monkeypatch.setattr(pool._PoolRun, "_submit", counting_submit)
    settings = SMALL.model_copy(update={"max_workers": 2})

    download_entries(manifest.entries, tmp_path, pennsieve_client, settings).raise_for_failures()

    assert len(in_flight) == 60 and max(in_flight) == 2 * pool._PoolRun.IN_FLIGHT_PER_WORKER
    assert len(list(tmp_path.glob("*.edf"))) == 60


def test_a_failed_bulk_request_names_a_few_packages_not_hundreds(pennsieve_client, dataset):
    packages = [p.node_id for p in dataset.packages if not p.is_collection]
    with pytest.raises(NotFound, match=rf"download manifest of {packages[0]}, .* and 2 more not found"):
        pennsieve_client.download_manifest([*packages, "N:package:gone"])


def test_a_finished_files_url_is_let_go(pennsieve, pennsieve_client, dataset, tmp_path, monkeypatch):
    transfers = []
    for_client = Transfer.for_client
    monkeypatch.setattr(Transfer, "for_client", lambda *a: transfers.append(for_client(*a)) or transfers[-1])
    manifest = build_manifest(pennsieve_client, dataset.node_id)

    download_entries(manifest.entries, tmp_path, pennsieve_client, SMALL).raise_for_failures()

    [transfer] = transfers
    assert len(pennsieve.requests_to("download-manifest")) == 1 and len(transfer.urls) == 0


def test_every_worker_keeps_its_connection(pennsieve, pennsieve_client, tmp_path, caplog):
    dataset = pennsieve.add_dataset("many")
    for i in range(60):
        dataset.add_package(f"f{i:02d}.edf", [(f"f{i:02d}.edf", 20 * KiB)])
    manifest = build_manifest(pennsieve_client, dataset.node_id)
    settings = SMALL.model_copy(update={"max_workers": 24})  # more than the default pool of 16

    with caplog.at_level("WARNING", logger="urllib3"):
        download_entries(manifest.entries, tmp_path, pennsieve_client, settings).raise_for_failures()

    assert "Connection pool is full" not in caplog.text
    adapter = Transfer.for_client(pennsieve_client, settings).session.get_adapter(pennsieve.base_url)
    assert adapter.poolmanager.connection_pool_kw["maxsize"] == 24
