"""The local engine with layers, end to end: real processes read their pinned layers read-only,
see no other layer, fail to start on a missing one, and persistent-layer targets publish versions."""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pennflow.cli import app
from pennflow.engine import local, run_layers
from pennflow.engine.home import PennflowHome
from pennflow.engine.local import run_workflow
from pennflow.layers.models import LayerType
from pennflow.layers.sandbox import SandboxMode, detect_mode, enforced
from pennflow.layers.service import LocalLayers, begin_build, fail_build
from pennflow.stores.sqlite import SqliteRunStore
from pennflow.workflow.definition import parse_definition
from pennflow.workflow.runs import RunRecord, Status
from tests.integration.test_layers_local import fill, make_wheel

REFUSED = {"EROFS", "EACCES"}
SOURCE = "name: flow\nprocessors:\n  - id: src\n    type: data-source\n"

# What a processor saw of the layers: its view, the layer it asked for, and the real layers root.
PROBE = r"""
import errno, json, os
from pathlib import Path

view = Path(os.environ["LAYERS_DIR"])
real = Path(os.environ["REAL_LAYERS"])
report = {"view": sorted(os.listdir(view))}
atlas = os.environ.get("LAYER_ATLAS_DIR")
if atlas:
    report["read"] = Path(atlas, "data.txt").read_text()
    for label, name, mode in (("create", "new.txt", "w"), ("overwrite", "data.txt", "a")):
        try:
            open(os.path.join(atlas, name), mode).close()
            report[label] = "written"
        except OSError as exc:
            report[label] = errno.errorcode[exc.errno]
# [] under the layers sandbox (covered by an empty folder); "absent" under the processor sandbox,
# which covers pennflow's whole home.
report["real_layers"] = sorted(os.listdir(real)) if real.is_dir() else "absent"
report["secret_readable"] = (real / "secret" / "key.txt").exists()
Path(os.environ["OUTPUT_DIR"], "report.json").write_text(json.dumps(report))
"""

# Waits until told to go, then copies what its pinned version of `atlas` holds.
READER = r"""
import json, os, time
from pathlib import Path

Path(os.environ["READY_FILE"]).touch()
deadline = time.monotonic() + 30
while not Path(os.environ["GO_FILE"]).exists():
    assert time.monotonic() < deadline, "never told to go"
    time.sleep(0.02)
atlas = Path(os.environ["LAYER_ATLAS_DIR"])
files = {p.relative_to(atlas).as_posix(): p.read_text() for p in sorted(atlas.rglob("*")) if p.is_file()}
Path(os.environ["OUTPUT_DIR"], "snapshot.json").write_text(json.dumps(files))
"""

needs_namespaces = pytest.mark.skipif(
    detect_mode() is not SandboxMode.NAMESPACE, reason="this machine forbids private mount namespaces"
)
needs_write_protection = pytest.mark.skipif(
    not enforced(detect_mode()),
    reason="no mount namespaces and running as root: layers cannot be write-protected (the engine warns)",
)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> PennflowHome:
    monkeypatch.setenv("PENNFLOW_HOME", str(tmp_path / "home"))
    return PennflowHome.resolve()


@pytest.fixture
def layers(home: PennflowHome):
    with LocalLayers.open(home) as service:
        yield service


@pytest.fixture
def scripts(tmp_path: Path) -> Path:
    folder = tmp_path / "definition"
    folder.mkdir()
    (folder / "probe.py").write_text(PROBE)
    (folder / "reader.py").write_text(READER)
    return folder


@pytest.fixture
def input_dir(tmp_path: Path) -> Path:
    return fill(tmp_path / "input", {"x.txt": "x"})


@pytest.fixture
def atlas_and_secret(layers: LocalLayers, tmp_path: Path) -> None:
    layers.populate_from("atlas", fill(tmp_path / "atlas", {"data.txt": "requested data"}))
    layers.populate_from("secret", fill(tmp_path / "secret", {"key.txt": "not for you"}))


def run(
    home: PennflowHome, scripts: Path, input_dir: Path, processors: str, **kwargs
) -> tuple[RunRecord, dict]:
    record = run_workflow(
        parse_definition(SOURCE + processors),
        definition_dir=scripts,
        input_dir=input_dir,
        home=home,
        docker=False,
        **kwargs,
    )
    return record, steps_of(home, record)


def steps_of(home: PennflowHome, record: RunRecord) -> dict:
    with SqliteRunStore(home.db_path) as store:
        return {step.processor_id: step for step in store.list_steps(record.run_id)}


def report(home: PennflowHome, record: RunRecord, pid: str) -> dict:
    return json.loads((home.run_dir(record.run_id) / pid / "output" / "report.json").read_text())


def probes(home: PennflowHome) -> str:
    return f"""
  - id: reader
    command: [python, probe.py]
    dependsOn: [src]
    layers: [atlas]
    defaultParams: {{REAL_LAYERS: "{home.layers_dir}"}}
  - id: plain
    command: [python, probe.py]
    dependsOn: [src]
    defaultParams: {{REAL_LAYERS: "{home.layers_dir}"}}
"""


# ------------------------------------------------------------------ isolation


@pytest.mark.usefixtures("atlas_and_secret")
def test_a_processor_reads_its_requested_layer_and_its_view_holds_only_that(home, scripts, input_dir) -> None:
    record, steps = run(home, scripts, input_dir, probes(home))
    assert record.status is Status.SUCCEEDED, record.reason
    seen = report(home, record, "reader")
    assert seen["read"] == "requested data"
    assert seen["view"] == ["atlas"]
    assert report(home, record, "plain")["view"] == []  # asked for none, sees none
    # The views are gone with the run; the layers are as they were.
    assert sorted(p.name for p in (home.run_dir(record.run_id) / "reader").iterdir()) == [
        "output",
        "processor.log",
    ]
    assert (home.layer_dir("atlas") / "data.txt").read_text() == "requested data"


@needs_write_protection
@pytest.mark.usefixtures("atlas_and_secret")
def test_a_processor_cannot_write_its_layer(home, scripts, input_dir) -> None:
    record, _ = run(home, scripts, input_dir, probes(home))
    seen = report(home, record, "reader")
    assert seen["create"] in REFUSED and seen["overwrite"] in REFUSED
    assert not (home.layer_dir("atlas") / "new.txt").exists()
    assert (home.layer_dir("atlas") / "data.txt").read_text() == "requested data"


@needs_namespaces
@pytest.mark.usefixtures("atlas_and_secret")
def test_other_layers_are_hidden_at_their_real_path_too(home, scripts, input_dir) -> None:
    record, _ = run(home, scripts, input_dir, probes(home))
    for pid in ("reader", "plain"):
        seen = report(home, record, pid)
        assert seen["real_layers"] in ([], "absent") and seen["secret_readable"] is False, pid
    assert (home.layer_dir("secret") / "key.txt").read_text() == "not for you"  # only hidden from them


@needs_namespaces
def test_layer_paths_with_blanks_are_mounted(tmp_path, scripts, input_dir, monkeypatch) -> None:
    home = PennflowHome(tmp_path / "my\thome dir")  # the view's fstab escapes blanks in paths
    with LocalLayers.open(home) as layers:
        layers.populate_from("atlas", fill(tmp_path / "atlas", {"data.txt": "requested data"}))
    record, _ = run(home, scripts, input_dir, probes(home))
    assert record.status is Status.SUCCEEDED, record.reason
    assert report(home, record, "reader")["read"] == "requested data"
    assert report(home, record, "reader")["create"] == "EROFS"
    assert report(home, record, "plain")["real_layers"] in ([], "absent")


def test_a_python_env_layer_is_importable_without_the_processor_doing_anything(
    home, layers: LocalLayers, scripts, input_dir, tmp_path
) -> None:
    wheels = make_wheel(tmp_path / "wheels", "tinypkg", "2.0").parent
    layers.create("sci", "python-env", requirements=f"--no-index\n--find-links {wheels}\ntinypkg\n")
    layers.build("sci")
    script = "import os, tinypkg; open(os.environ['OUTPUT_DIR'] + '/v.txt', 'w').write(tinypkg.VERSION)"
    record, _ = run(
        home,
        scripts,
        input_dir,
        f"  - {{id: use, command: [python, -c, {json.dumps(script)}], dependsOn: [src], layers: [sci]}}\n",
    )
    assert record.status is Status.SUCCEEDED, record.reason
    assert (home.run_dir(record.run_id) / "use" / "output" / "v.txt").read_text() == "2.0"


@needs_namespaces
@pytest.mark.usefixtures("atlas_and_secret")
def test_a_missing_command_fails_at_once_when_started_in_the_sandbox(home, scripts, input_dir) -> None:
    record, steps = run(
        home,
        scripts,
        input_dir,
        "  - {id: typo, command: [no-such-program-here], dependsOn: [src], layers: [atlas], "
        "retry: {maxAttempts: 3}}\n",
    )
    assert record.status is Status.FAILED
    assert "cannot start 'no-such-program-here'" in record.reason
    assert steps["typo"].attempts == 1


def test_without_write_protection_the_run_warns_once(
    home, scripts, input_dir, atlas_and_secret, monkeypatch, caplog
) -> None:
    monkeypatch.setattr(run_layers, "detect_mode", lambda: SandboxMode.PERMISSIONS)  # probed when mounting
    monkeypatch.setattr(local, "enforced", lambda mode: mode is not SandboxMode.PERMISSIONS)
    with caplog.at_level(logging.WARNING, logger=local.__name__):
        record, _ = run(home, scripts, input_dir, probes(home))
    assert record.status is Status.SUCCEEDED, record.reason
    assert [r.getMessage() for r in caplog.records] == [local.NOT_WRITE_PROTECTED]
    assert report(home, record, "reader")["read"] == "requested data"  # through the view's symlink
    assert report(home, record, "reader")["view"] == ["atlas"]


# ------------------------------------------------------------------ pinning and refusing


def test_the_run_record_keeps_each_layers_version_and_checksum(
    home, layers: LocalLayers, scripts, input_dir, atlas_and_secret
) -> None:
    record, _ = run(home, scripts, input_dir, probes(home), layers=["secret"])
    assert record.status is Status.SUCCEEDED, record.reason
    assert record.layers == [
        {"name": name, "version": "1", "checksum": layers.get(name).checksum} for name in ("secret", "atlas")
    ]
    assert SqliteRunStore(home.db_path).get_run(record.run_id).layers == record.layers
    assert layers.get("atlas").refs == {} and layers.get("secret").refs == {}  # released at the end
    assert report(home, record, "plain")["view"] == ["secret"]  # a run-level layer reaches every processor


def test_missing_or_unready_layers_exit_2_naming_each(home, layers: LocalLayers, tmp_path) -> None:
    layers.populate_from("good", fill(tmp_path / "good", {"a": "1"}))
    layers.create("empty-one", "data")
    layers.create("broken", "data")
    begin_build(layers.registry, "broken", kind=LayerType.DATA)
    fail_build(layers.registry, "broken", "disk full")
    definition = tmp_path / "flow.yaml"
    definition.write_text(
        SOURCE + "  - {id: p, command: [python, x.py], dependsOn: [src], layers: [good, empty-one, broken]}\n"
    )
    result = CliRunner().invoke(
        app, ["run", str(definition), "--input", str(fill(tmp_path / "in", {"x": "x"})), "--layer", "ghost"]
    )
    assert result.exit_code == 2, result.output
    stderr = " ".join(result.stderr.split())
    assert "layer 'ghost' (from --layer) not found" in stderr
    assert "layer 'empty-one' (from processor 'p') is EMPTY: populate it first" in stderr
    assert "layer 'broken' (from processor 'p') is FAILED (its last build failed: disk full)" in stderr
    assert "Traceback" not in result.output
    assert SqliteRunStore(home.db_path).list_runs().runs == []
    assert layers.get("good").refs == {}  # nothing stays referenced by a run that never started


# ------------------------------------------------------------------ persistent-layer targets

PUBLISH = """
  - id: publish
    type: data-target
    targetType: persistent-layer
    dependsOn: [src]
    defaultParams: {layerName: atlas}
"""


@pytest.mark.usefixtures("no_sandbox")  # its reader and the test talk through files outside the run
def test_a_persistent_layer_target_publishes_versions_while_readers_keep_theirs(
    home, layers: LocalLayers, scripts, tmp_path
) -> None:
    first, steps = run(home, scripts, fill(tmp_path / "v1", {"a.txt": "v1", "sub/b.txt": "v1"}), PUBLISH)
    assert first.status is Status.SUCCEEDED, first.reason
    assert steps["publish"].reason == "layer 'atlas' version 1 (2 files)"
    assert local.result_dirs(parse_definition(SOURCE + PUBLISH), home.run_dir(first.run_id)) == []

    ready, go = tmp_path / "ready", tmp_path / "go"
    reading: list[RunRecord] = []
    reader = threading.Thread(
        target=lambda: reading.append(
            run(
                home,
                scripts,
                tmp_path / "v1",
                "  - {id: read, command: [python, reader.py], dependsOn: [src], layers: [atlas], "
                f'defaultParams: {{READY_FILE: "{ready}", GO_FILE: "{go}"}}}}\n',
            )[0]
        )
    )
    reader.start()
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert reader.is_alive() and time.monotonic() < deadline, "the reader never started"
            time.sleep(0.02)
        second, steps = run(home, scripts, fill(tmp_path / "v2", {"a.txt": "v2", "c.txt": "v2"}), PUBLISH)
        assert steps["publish"].reason == "layer 'atlas' version 2 (2 files)"
        assert layers.get("atlas").version == 2
        assert (home.layer_dir("atlas") / "a.txt").read_text() == "v2"  # new runs get version 2
        assert layers.storage.versions("atlas") == [1, 2]  # version 1 is kept for the reader
    finally:
        go.touch()
        reader.join(30)
    [record] = reading
    assert record.status is Status.SUCCEEDED, record.reason
    assert record.layers[0]["version"] == "1"
    snapshot = json.loads((home.run_dir(record.run_id) / "read" / "output" / "snapshot.json").read_text())
    assert snapshot == {"a.txt": "v1", "sub/b.txt": "v1"}  # all of version 1, none of version 2
    assert layers.storage.versions("atlas") == [2]  # released by the reader, then collected
