"""Local isolation: a processor reads its requested layers, cannot write them, cannot see others."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pennflow.engine.home import PennflowHome
from pennflow.layers import sandbox
from pennflow.layers.sandbox import LayersView, SandboxMode, detect_mode, wrap_command
from pennflow.layers.service import LocalLayers

NOBODY = 65534
REFUSED = {"EROFS", "EACCES"}
# The processor's interpreter: one every user may execute (a virtualenv may live in a private home).
SYSTEM_PYTHON = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
# Runs as the processor: reports what it could read, write and see, as JSON.
PROBE = r"""
import errno, json, os, subprocess, sys
view, hidden = sys.argv[1], sys.argv[2]
report = {"read": open(os.path.join(view, "wanted", "data.txt")).read()}
for label, path, mode in (("create", "new.txt", "w"), ("overwrite", "data.txt", "a")):
    try:
        open(os.path.join(view, "wanted", path), mode).close()
        report[label] = "written"
    except OSError as exc:
        report[label] = errno.errorcode[exc.errno]
report["view"] = sorted(os.listdir(view))
report["hidden"] = sorted(os.listdir(hidden)) if os.path.isdir(hidden) else None
report["secret_visible"] = os.path.exists(os.path.join(hidden, "secret"))
remount = subprocess.run(["mount", "-o", "remount,bind,rw", os.path.join(view, "wanted")], capture_output=True)
report["remount_rw"] = remount.returncode
print(json.dumps(report))
"""


@pytest.fixture
def open_home() -> Iterator[PennflowHome]:
    """A home every user may traverse, so the processor can also run as an unprivileged user."""
    root = Path(tempfile.mkdtemp(prefix="pennflow-sandbox-test-"))
    os.chmod(root, 0o755)
    try:
        yield PennflowHome(root / "home")
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def two_layers(open_home: PennflowHome, tmp_path: Path):
    wanted, secret = tmp_path / "wanted", tmp_path / "secret"
    wanted.mkdir()
    secret.mkdir()
    (wanted / "data.txt").write_text("requested data")
    (secret / "key.txt").write_text("not for you")
    with LocalLayers.open(open_home) as layers:
        layers.populate_from("wanted", wanted)
        layers.populate_from("secret", secret)
        mounts = layers.mount(["wanted"], run_id="r-1")
        yield open_home, mounts


def _probe(argv_prefix: list[str], view: LayersView) -> dict:
    argv = wrap_command([SYSTEM_PYTHON, "-c", PROBE, str(view.root), str(view.hidden)], view)
    done = subprocess.run([*argv_prefix, *argv], capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _view(home: PennflowHome, mounts, mode: SandboxMode) -> LayersView:
    view = LayersView.create(
        home.run_dir("r-1") / "proc" / "layers", mounts, hidden=home.layers_dir, mode=mode
    )
    for folder in (home.root, home.runs_dir, home.run_dir("r-1"), view.root.parent, view.root):
        os.chmod(folder, 0o755)
    return view


needs_namespaces = pytest.mark.skipif(
    detect_mode() is not SandboxMode.NAMESPACE, reason="this machine forbids private mount namespaces"
)


@needs_namespaces
def test_namespace_mode_reads_refuses_writes_and_hides_other_layers(two_layers) -> None:
    home, mounts = two_layers
    view = _view(home, mounts, SandboxMode.NAMESPACE)
    report = _probe([], view)

    assert report["read"] == "requested data"
    assert report["create"] == "EROFS"
    assert report["overwrite"] in REFUSED  # the dropped capabilities make the file mode count too
    assert report["view"] == ["wanted"]
    assert report["hidden"] == [] and report["secret_visible"] is False
    assert report["remount_rw"] != 0  # capabilities are gone: the mounts cannot be undone
    # Outside the namespace nothing changed.
    assert (home.layer_dir("secret") / "key.txt").read_text() == "not for you"
    assert not (home.layer_dir("wanted") / "new.txt").exists()


@needs_namespaces
@pytest.mark.skipif(os.geteuid() != 0, reason="switching to another user needs root")
def test_namespace_mode_works_for_an_unprivileged_user(two_layers, monkeypatch: pytest.MonkeyPatch) -> None:
    home, mounts = two_layers
    view = _view(home, mounts, SandboxMode.NAMESPACE)
    monkeypatch.setattr(sandbox.os, "geteuid", lambda: NOBODY)  # wrap as for a non-root engine
    report = _probe(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"], view)

    assert report["read"] == "requested data"
    assert report["create"] == "EROFS" and report["overwrite"] in REFUSED
    assert report["view"] == ["wanted"] and report["secret_visible"] is False


def test_permissions_mode_refuses_writes_for_a_non_root_processor(two_layers) -> None:
    home, mounts = two_layers
    view = _view(home, mounts, SandboxMode.PERMISSIONS)
    assert wrap_command(["true"], view) == ["true"]
    prefix = (
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"] if os.geteuid() == 0 else []
    )
    report = _probe(prefix, view)

    assert report["read"] == "requested data"
    assert report["create"] == report["overwrite"] == "EACCES"
    assert report["view"] == ["wanted"]  # only what was requested is in the view


def test_the_view_holds_only_the_requested_layers(two_layers) -> None:
    home, mounts = two_layers
    view = LayersView.create(home.run_dir("r-1") / "p" / "layers", mounts, hidden=home.layers_dir)
    assert sorted(p.name for p in view.root.iterdir()) == ["wanted"]
    view.remove()
    assert not view.root.exists()
    assert (home.layer_dir("wanted") / "data.txt").exists()  # removing a view never touches the layer


@needs_namespaces
def test_a_python_env_layer_imports_through_the_view(open_home: PennflowHome, tmp_path: Path) -> None:
    """The contract's PYTHONPATH (<LAYERS_DIR>/<name>/python) works inside the private namespace."""
    from pennflow.workflow.contract import python_path
    from pennflow.workflow.definition import Processor
    from tests.integration.test_layers_local import make_wheel

    wheels = make_wheel(tmp_path / "wheels", "tinypkg", "2.0").parent
    with LocalLayers.open(open_home) as layers:
        layers.create("sci", "python-env", requirements=f"--no-index\n--find-links {wheels}\ntinypkg\n")
        layers.build("sci")
        mounts = layers.mount(["sci"], run_id="r-1")
    view = _view(open_home, mounts, SandboxMode.NAMESPACE)
    processor = Processor.model_validate(
        {"id": "proc", "dependsOn": ["src"], "command": ["x"], "layers": ["sci"]}
    )
    env = {**os.environ, "PYTHONPATH": python_path(processor, view.root)}
    argv = wrap_command([SYSTEM_PYTHON, "-c", "import tinypkg; print(tinypkg.VERSION)"], view)
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=30, check=False)
    assert (done.returncode, done.stdout.strip()) == (0, "2.0"), done.stderr
