"""Notebook sessions against a real Jupyter server: code runs in a kernel over the kernel websocket.

The layer holds a package only it has; the session imports it, cannot write to the layer or see
pennflow's home, installs a local wheel live, and the next session no longer has that install.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import signal
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pennflow.cli import app
from pennflow.engine.home import PennflowHome
from pennflow.engine.orphans import settled
from pennflow.layers.sandbox import detect_mode, enforced
from pennflow.layers.service import LocalLayers
from pennflow.notebooks.session import (
    NotebookError,
    SessionFailed,
    SessionFiles,
    SessionRequest,
    find_session,
    server_status,
    start_session,
    stop_session,
)
from pennflow.stores.sqlite import SqliteRunStore
from pennflow.workflow.runs import Status
from tests.integration.notebook_support import run_code
from tests.integration.test_layers_local import make_wheel

pytestmark = pytest.mark.xdist_group("notebook-sessions")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> PennflowHome:
    monkeypatch.setenv("PENNFLOW_HOME", str(tmp_path / "home"))
    return PennflowHome.resolve()


@pytest.fixture
def sci_layer(home: PennflowHome, tmp_path: Path) -> str:
    """A python-env layer built (offline) holding ``layerpkg``, which nothing else has."""
    wheels = tmp_path / "wheels"
    make_wheel(wheels, "layerpkg", "2.5.0")
    with LocalLayers.open(home) as layers:
        layers.create(
            "sci", "python-env", requirements=f"--no-index\n--find-links {wheels}\nlayerpkg==2.5.0\n"
        )
        layers.build("sci")
    return "sci"


def test_a_session_imports_from_its_layer_cannot_write_it_and_installs_live_for_itself_only(
    home: PennflowHome, sci_layer: str, tmp_path: Path
) -> None:
    state = start_session(home, SessionRequest(layers=[sci_layer]))
    files = SessionFiles.of(home, state.run_id)
    try:
        with SqliteRunStore(home.db_path) as store:
            assert store.get_run(state.run_id).status is Status.STARTED

        out, error = run_code(state, "import layerpkg; print(layerpkg.VERSION)")
        assert (out.strip(), error) == ("2.5.0", None)

        out, error = run_code(
            state,
            "import errno, os, layerpkg\n"
            "for path in (os.path.join(os.environ['LAYERS_DIR'], 'sci', 'new.txt'), layerpkg.__file__):\n"
            "    try:\n"
            "        open(path, 'a').write('x')\n"
            "        print('wrote', path)\n"
            "    except OSError as exc:\n"
            "        print('refused', errno.errorcode[exc.errno])\n"
            f"print('home visible', os.path.exists({str(home.db_path)!r}))\n"
            "open('notes.txt', 'w').write('kept')\n",
        )
        assert error is None, out
        new_file, package_file, home_line = out.splitlines()
        assert new_file in {"refused EROFS", "refused EACCES"}
        assert package_file in {"refused EROFS", "refused EACCES"}
        assert home_line == "home visible False"  # pennflow's home (other runs, the run database) is covered

        wheel = make_wheel(tmp_path / "live", "livepkg", "0.1")
        shutil.copy(wheel, files.work / wheel.name)  # the user's upload to the working area
        out, error = run_code(
            state,
            "import subprocess, sys, importlib\n"
            f"done = subprocess.run([sys.executable, '-m', 'pip', 'install', '--no-index', {wheel.name!r}],"
            " capture_output=True, text=True)\n"
            "print(done.returncode)\n"
            "importlib.invalidate_caches()\n"
            "import livepkg; print(livepkg.VERSION)\n",
        )
        assert (out.split(), error) == (["0", "0.1"], None)
    finally:
        final = stop_session(home, state.run_id)

    assert final.status is Status.SUCCEEDED
    assert (files.work / "notes.txt").read_text() == "kept"
    assert not Path(state.scratch).exists()
    with LocalLayers.open(home) as layers:
        assert layers.get(sci_layer).refs == {}  # the session's pin on the layer is released

    following = start_session(home, SessionRequest(layers=[sci_layer]))
    try:
        out, error = run_code(following, "import layerpkg\nimport livepkg\n")
        assert error == "ModuleNotFoundError"
    finally:
        stop_session(home, following.run_id)


def test_a_layer_built_for_another_python_is_refused_naming_both_versions(
    home: PennflowHome, sci_layer: str
) -> None:
    with pytest.raises(NotebookError) as refused:
        start_session(home, SessionRequest(layers=[sci_layer]), python_version="3.9.18")
    with LocalLayers.open(home) as layers:
        built = ".".join(layers.get(sci_layer).python_version.split(".")[:2])
    assert str(refused.value) == (
        f"layer 'sci' was built for Python {built}, the session runs Python 3.9: "
        "build the layer again with Python 3.9"
    )
    with SqliteRunStore(home.db_path) as store:
        assert store.list_runs().runs == []  # refused before any run exists


def _wait_for_end(home: PennflowHome, run_id: str, timeout: float = 30):
    deadline = time.monotonic() + timeout
    with SqliteRunStore(home.db_path) as store:
        while time.monotonic() < deadline:
            run = settled(store, store.get_run(run_id))
            if run.status.is_terminal:
                return run
            time.sleep(0.2)
    raise AssertionError(f"session {run_id} still {run.status.value} after {timeout} s")


def test_pennflow_cancel_ends_a_session_canceled_with_its_files(home: PennflowHome) -> None:
    state = start_session(home, SessionRequest())
    run_code(state, "open('draft.ipynb', 'w').write('{}')")

    canceled = CliRunner().invoke(app, ["cancel", state.run_id])
    assert canceled.exit_code == 0, canceled.output

    run = _wait_for_end(home, state.run_id)
    assert (run.status, run.reason) == (Status.CANCELED, "canceled")
    assert (SessionFiles.of(home, state.run_id).work / "draft.ipynb").read_text() == "{}"
    assert server_status(state) is None  # the server is gone, not only the record


def test_a_session_whose_process_is_killed_is_ended_by_the_next_reader(home: PennflowHome) -> None:
    state = start_session(home, SessionRequest())
    assert state.pid is not None
    os.kill(state.pid, signal.SIGKILL)
    _reap(state.pid)  # this test started it: reaped, it no longer looks alive

    run = _wait_for_end(home, state.run_id)
    assert run.status is Status.FAILED
    assert run.reason.startswith("engine stopped")
    deadline = time.monotonic() + 10  # bwrap's --die-with-parent takes the server down with it
    while server_status(state) is not None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert server_status(state) is None


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def test_without_bwrap_the_layers_sandbox_still_mounts_the_layer_and_installs_stay_in_the_session(
    home: PennflowHome, sci_layer: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PENNFLOW_SANDBOX", "off")  # the session's process inherits it
    state = start_session(home, SessionRequest(layers=[sci_layer]))
    files = SessionFiles.of(home, state.run_id)
    try:
        wheel = make_wheel(tmp_path / "live", "livepkg", "0.2")
        out, error = run_code(
            state,
            "import errno, os, subprocess, sys, importlib, layerpkg\n"
            f"done = subprocess.run([sys.executable, '-m', 'pip', 'install', '--no-index', {str(wheel)!r}],"
            " capture_output=True, text=True)\n"
            "importlib.invalidate_caches()\n"
            "import livepkg\n"
            "print(layerpkg.VERSION, livepkg.VERSION, livepkg.__file__.startswith(os.environ['PIP_TARGET']))\n"
            "try:\n"
            "    open(os.path.join(os.environ['LAYERS_DIR'], 'sci', 'new.txt'), 'w')\n"
            "    print('wrote')\n"
            "except OSError as exc:\n"
            "    print('refused', errno.errorcode[exc.errno])\n",
        )
        assert error is None, out
        versions, write = out.splitlines()
        assert versions == "2.5.0 0.2 True"
        if enforced(detect_mode()):
            assert write in {"refused EROFS", "refused EACCES"}
    finally:
        stop_session(home, state.run_id)
    assert "without a sandbox" in files.log.read_text()  # the session says what is not enforced
    assert not Path(state.scratch).exists()


def test_a_session_that_cannot_start_fails_its_run_and_lets_go_of_its_layers(
    home: PennflowHome, sci_layer: str, tmp_path: Path
) -> None:
    missing = str(tmp_path / "no-such-env" / "bin" / "python")
    with pytest.raises(SessionFailed) as failed:
        start_session(home, SessionRequest(layers=[sci_layer]), python=missing)
    assert str(failed.value).startswith("the session could not start: ")
    assert missing in str(failed.value)
    with SqliteRunStore(home.db_path) as store:
        (run,) = store.list_runs().runs
    assert (run.status, run.reason) == (Status.FAILED, str(failed.value))
    with LocalLayers.open(home) as layers:
        assert layers.get(sci_layer).refs == {}


def test_a_session_idle_for_its_timeout_stops_itself_succeeded_saying_why(
    home: PennflowHome, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PENNFLOW_NOTEBOOK_IDLE_SECONDS", "6")  # the setting (no --idle-timeout given)
    started = CliRunner().invoke(app, ["notebook", "start", "--json"])
    assert started.exit_code == 0, started.output
    run_id = json.loads(started.output)["runId"]
    with SqliteRunStore(home.db_path) as store:
        state_seen = store.get_run(run_id)
    assert state_seen.status is Status.STARTED
    state = find_session(home, run_id)
    run_code(state, "open('kept.txt', 'w').write('x')")  # activity: the timeout counts from here

    run = _wait_for_end(home, run_id, timeout=60)
    assert run.status is Status.SUCCEEDED
    assert run.reason.startswith("stopped: idle for ")
    assert "(timeout 6 s, last activity " in run.reason
    assert server_status(state) is None
    assert (state.files.work / "kept.txt").read_text() == "x"
    assert not Path(state.scratch).exists()


def test_layers_list_for_notebooks_hides_layers_of_another_python(
    home: PennflowHome, sci_layer: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheels = tmp_path / "wheels"  # sci_layer's
    with LocalLayers.open(home) as layers:
        layers.create("atlas", "data")
        layers.create("tidy", "r-env")
        layers.create("older", "python-env", requirements=f"--no-index\n--find-links {wheels}\nlayerpkg\n")
        with monkeypatch.context() as elsewhere:  # as if built by another interpreter
            elsewhere.setattr("pennflow.layers.build._python_version", lambda python: "3.9.18")
            layers.build("older")
        assert layers.get("older").python_version == "3.9.18"
    listed = CliRunner().invoke(app, ["layers", "list", "--for-notebooks", "--json"])
    assert listed.exit_code == 0, listed.output
    assert sorted(layer["name"] for layer in json.loads(listed.output)) == ["atlas", "sci"]
    everything = CliRunner().invoke(app, ["layers", "list", "--json"])
    assert len(json.loads(everything.output)) == 4

    refused = CliRunner().invoke(app, ["notebook", "start", "--layer", "older"])
    assert refused.exit_code == 2
    wanted = ".".join(platform.python_version().split(".")[:2])
    assert refused.output.strip() == (
        f"error: layer 'older' was built for Python 3.9, the session runs Python {wanted}: "
        f"build the layer again with Python {wanted}"
    )
