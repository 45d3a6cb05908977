"""Local layers end to end: folders and versions, pip builds, concurrent re-populate, delete, CLI."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import threading
import time
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pennflow.cli import layers as cli
from pennflow.cli.layers import layers_app
from pennflow.engine.home import PennflowHome
from pennflow.layers.build import tree_stats
from pennflow.layers.models import (
    InvalidLayerName,
    InvalidLayerRequest,
    LayerBuildFailed,
    LayerInUse,
    LayerStatus,
    LayersUnavailable,
)
from pennflow.layers.service import LocalLayers
from pennflow.stores.sqlite import SqliteRunStore
from pennflow.workflow.runs import RunRecord, Status


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> PennflowHome:
    monkeypatch.setenv("PENNFLOW_HOME", str(tmp_path / "home"))
    return PennflowHome.resolve()


@pytest.fixture
def layers(home: PennflowHome):
    service = LocalLayers.open(home)
    yield service
    service.close()


def make_wheel(folder: Path, name: str = "tinypkg", version: str = "1.0") -> Path:
    """A minimal pure-Python wheel (no build backend needed, so pip installs it offline)."""
    dist_info = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": f"VERSION = {version!r}\n",
        f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist_info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record_lines = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record_lines.append(f"{path},sha256={digest},{len(text.encode())}")
    record_lines.append(f"{dist_info}/RECORD,,")
    files[f"{dist_info}/RECORD"] = "\n".join(record_lines) + "\n"
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
    return wheel


def fill(folder: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return folder


# ------------------------------------------------------------------ data layers


def test_populate_publishes_a_read_only_version_behind_a_symlink(layers: LocalLayers, home, tmp_path) -> None:
    source = fill(tmp_path / "src", {"atlas/mni.txt": "brain", "labels.csv": "a,b\n"})
    record = layers.populate_from("atlas", source)

    assert (record.status, record.version, record.file_count) == (LayerStatus.READY, 1, 2)
    assert record.size_bytes == len("brain") + len("a,b\n")
    assert record.checksum == tree_stats(source).checksum
    link = home.layer_dir("atlas")
    assert link.is_symlink() and (link / "atlas" / "mni.txt").read_text() == "brain"
    assert os.readlink(link) == os.path.join(".versions", "atlas", "1")
    assert not os.stat(link / "labels.csv").st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)


def test_repopulate_increases_the_version_and_collects_unused_ones(
    layers: LocalLayers, home, tmp_path
) -> None:
    layers.populate_from("atlas", fill(tmp_path / "v1", {"a.txt": "1"}))
    [mount] = layers.mount(["atlas"], run_id="r-1")  # a run keeps version 1 alive
    layers.populate_from("atlas", fill(tmp_path / "v2", {"a.txt": "2"}))
    record = layers.populate_from("atlas", fill(tmp_path / "v3", {"a.txt": "3", "b.txt": "3"}))

    assert record.version == 3
    assert layers.storage.versions("atlas") == [1, 3]  # 2 was never mounted: collected
    assert Path(mount.path, "a.txt").read_text() == "1"
    assert (home.layer_dir("atlas") / "a.txt").read_text() == "3"
    layers.release(["atlas"], "r-1")
    assert layers.storage.versions("atlas") == [3]


def test_checksum_covers_paths_and_contents(tmp_path) -> None:
    one = tree_stats(fill(tmp_path / "one", {"a.txt": "x", "b/c.txt": "y"}))
    same = tree_stats(fill(tmp_path / "same", {"b/c.txt": "y", "a.txt": "x"}))
    moved = tree_stats(fill(tmp_path / "moved", {"a.txt": "x", "b/d.txt": "y"}))
    edited = tree_stats(fill(tmp_path / "edited", {"a.txt": "x", "b/c.txt": "z"}))
    assert one == same
    assert len({one.checksum, moved.checksum, edited.checksum}) == 3


def test_readers_never_see_a_mix_of_versions(layers: LocalLayers, tmp_path) -> None:
    """A reader thread mounts and reads the layer over and over while it is re-populated."""
    files = [f"part-{i}.txt" for i in range(8)]

    def version_folder(version: int) -> Path:
        return fill(tmp_path / f"src-{version}", {name: f"{version}\n" for name in files})

    layers.populate_from("atlas", version_folder(1))
    stop = threading.Event()
    seen: list[set[str]] = [{"1\n"}]
    errors: list[BaseException] = []

    def reader() -> None:
        deadline = time.monotonic() + 30
        try:
            # Until the writer is done and the last version has been read (or the deadline).
            while (not stop.is_set() or "11\n" not in seen[-1]) and time.monotonic() < deadline:
                run_id = f"reader-{len(seen)}"
                [mount] = layers.mount(["atlas"], run_id=run_id)
                seen.append({Path(mount.path, name).read_text() for name in files})
                layers.release(["atlas"], run_id)
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    for version in range(2, 12):
        assert layers.populate_from("atlas", version_folder(version)).version == version
    stop.set()
    thread.join(timeout=30)

    assert not errors
    assert all(len(contents) == 1 for contents in seen), [c for c in seen if len(c) > 1]
    assert seen[-1] == {"11\n"}


def test_populate_refuses_bad_input(layers: LocalLayers, tmp_path) -> None:
    with pytest.raises(InvalidLayerName, match="lower-case"):
        layers.populate_from("Atlas", tmp_path)
    with pytest.raises(InvalidLayerRequest, match="not a folder"):
        layers.populate_from("atlas", tmp_path / "missing")
    layers.create("env", "python-env", requirements="x\n")
    with pytest.raises(InvalidLayerRequest, match="python-env"):
        layers.populate_from("env", tmp_path)


def test_mount_names_each_unavailable_layer(layers: LocalLayers, tmp_path) -> None:
    layers.create("empty-one", "data")
    layers.populate_from("good", fill(tmp_path / "g", {"a": "1"}))
    with pytest.raises(LayersUnavailable) as caught:
        layers.mount(["good", "empty-one", "ghost"], run_id="r-1")
    assert caught.value.problems == [
        "layer 'empty-one' is EMPTY: populate it first",
        "layer 'ghost' not found",
    ]


def test_delete_is_refused_while_an_active_run_uses_it(layers: LocalLayers, home, tmp_path) -> None:
    layers.populate_from("atlas", fill(tmp_path / "s", {"a": "1"}))
    layers.mount(["atlas"], run_id="r-active")
    with pytest.raises(LayerInUse, match="r-active"):
        layers.delete("atlas", is_active=lambda run_id: True)
    assert (home.layer_dir("atlas") / "a").read_text() == "1"
    layers.delete("atlas", is_active=lambda run_id: False)
    assert not os.path.lexists(home.layer_dir("atlas"))
    assert layers.storage.versions("atlas") == []
    assert layers.registry.get("atlas") is None


# ------------------------------------------------------------------ python environments


def test_build_installs_requirements_and_lists_packages(layers: LocalLayers, home, tmp_path) -> None:
    wheels = tmp_path / "wheels"
    make_wheel(wheels, "tinypkg", "1.2.3")
    requirements = f"--no-index\n--find-links {wheels}\ntinypkg==1.2.3\n"
    layers.create("sci", "python-env", requirements=requirements)
    record = layers.build("sci")

    assert (record.status, record.version) == (LayerStatus.READY, 1)
    assert [(p.name, p.version) for p in record.packages] == [("tinypkg", "1.2.3")]
    assert record.python_version and record.python_version.count(".") == 2
    assert record.file_count >= 4 and record.size_bytes > 0
    minor = ".".join(record.python_version.split(".")[:2])  # Pennsieve's layout, built by pennflow
    installed = home.layer_dir("sci") / "lib" / f"python{minor}" / "site-packages" / "tinypkg" / "__init__.py"
    assert installed.read_text() == "VERSION = '1.2.3'\n"


def test_a_failed_build_records_pips_error(layers: LocalLayers, home) -> None:
    layers.create("broken", "python-env", requirements="--no-index\nno-such-package-xyz==9.9\n")
    with pytest.raises(LayerBuildFailed) as caught:
        layers.build("broken")
    record = layers.get("broken")
    assert record.status is LayerStatus.FAILED and record.version == 0
    assert "no-such-package-xyz" in record.error
    assert len(record.error.splitlines()) <= 20
    assert "no-such-package-xyz" in str(caught.value)
    assert layers.storage.versions("broken") == []
    assert not any(p.name.startswith(".staging") for p in layers.storage.versions_dir("broken").iterdir())


# ------------------------------------------------------------------ CLI


def _cli(*args: str):
    return CliRunner().invoke(layers_app, list(args))


def test_cli_create_populate_list_show_delete(home, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli.out, "width", 160)
    source = fill(tmp_path / "src", {"ref.fa": "ACGT" * 100})
    assert _cli("create", "genome", "--type", "data", "--description", "reference").exit_code == 0
    result = _cli("populate", "genome", "--from", str(source))
    assert result.exit_code == 0, result.output
    assert "version 1" in result.output

    listing = json.loads(_cli("list", "--json").stdout)
    assert listing[0]["name"] == "genome" and listing[0]["status"] == "READY"
    assert listing[0]["storageClass"] == "Standard" and listing[0]["fileCount"] == 1
    table = _cli("list").stdout
    for heading in ("layer", "status", "size", "tier", "$/month", "last used", "runs"):
        assert heading in table
    shown = json.loads(_cli("show", "genome", "--json").stdout)
    assert shown["sizeBytes"] == 400 and shown["path"].endswith("genome")

    assert _cli("delete", "genome").exit_code == 0
    assert json.loads(_cli("list", "--json").stdout) == []


def test_cli_errors_are_one_message_and_exit_2(home, tmp_path) -> None:
    bad = _cli("create", "Bad_Name", "--type", "data")
    assert bad.exit_code == 2 and "lower-case" in bad.output and "Traceback" not in bad.output
    wrong_type = _cli("create", "x", "--type", "conda")
    assert wrong_type.exit_code == 2 and "type: expected one of" in wrong_type.output
    no_req = _cli("create", "env", "--type", "python-env")
    assert no_req.exit_code == 2 and "requirements" in no_req.output
    missing = _cli("show", "ghost")
    assert missing.exit_code == 2 and "no layer named 'ghost'" in missing.output
    unreadable = _cli("create", "env", "--type", "python-env", "--requirements", str(tmp_path / "nope.txt"))
    assert unreadable.exit_code == 2 and "--requirements" in unreadable.output


def test_cli_refuses_to_delete_a_layer_an_active_run_uses(home, tmp_path) -> None:
    assert _cli("populate", "atlas", "--from", str(fill(tmp_path / "s", {"a": "1"}))).exit_code == 0
    with SqliteRunStore(home.db_path) as store:
        store.create_run(RunRecord(run_id="r-live", workflow="wf", definition_hash="h"), [])
        store.update_run("r-live", Status.STARTED)
    with LocalLayers.open(home) as layers:
        layers.mount(["atlas"], run_id="r-live")
    refused = _cli("delete", "atlas")
    assert refused.exit_code == 2 and "in use by active run(s) r-live" in refused.output
    with SqliteRunStore(home.db_path) as store:
        store.update_run("r-live", Status.SUCCEEDED)
    assert _cli("delete", "atlas").exit_code == 0  # the run ended: its reference no longer counts


def test_cli_build_failure_exits_1_with_the_pip_excerpt(home, tmp_path) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("--no-index\nno-such-package-xyz\n")
    result = _cli("create", "env", "--type", "python-env", "--requirements", str(requirements))
    assert result.exit_code == 1
    assert "no-such-package-xyz" in result.output and "Traceback" not in result.output


def test_a_collector_never_removes_a_version_published_after_it_read_the_current_one(tmp_path) -> None:
    """The race behind a reader's FileNotFoundError: a release's collector read version 2 as current,
    then a re-populate published version 3 before the collector listed the folders."""
    from pennflow.layers.storage import LocalLayerStorage

    storage = LocalLayerStorage(tmp_path / "layers")
    for version in (1, 2):
        storage.publish("atlas", storage.new_staging("atlas"), version)
    current_when_read = 2
    storage.publish("atlas", storage.new_staging("atlas"), 3)  # published meanwhile
    assert storage.collect_garbage("atlas", set(), below=current_when_read) == [1]
    assert storage.versions("atlas") == [2, 3]
