"""Which layers a notebook session may mount, the server's settings, and the CLI's refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from pennflow.cli import app
from pennflow.engine.home import PennflowHome
from pennflow.layers.models import LayerRecord, LayerType
from pennflow.layers.service import LocalLayers
from pennflow.notebooks.environments import for_notebooks, misfit_reason
from pennflow.notebooks.server import jupyter_argv
from pennflow.notebooks.session import SessionFiles, SessionRequest, SessionState


def layer(name: str, kind: LayerType, python: str | None = None) -> LayerRecord:
    return LayerRecord(name=name, type=kind, python_version=python)


def test_only_python_envs_of_the_sessions_minor_version_and_data_layers_fit() -> None:
    records = [
        layer("same", LayerType.PYTHON_ENV, "3.12.1"),
        layer("older", LayerType.PYTHON_ENV, "3.11.9"),
        layer("unknown", LayerType.PYTHON_ENV),
        layer("atlas", LayerType.DATA),
        layer("tidy", LayerType.R_ENV),
    ]
    assert [r.name for r in for_notebooks(records, "3.12.7")] == ["same", "atlas"]
    assert misfit_reason(records[1], "3.12.7") == (
        "layer 'older' was built for Python 3.11, the session runs Python 3.12: "
        "build the layer again with Python 3.12"
    )
    assert "records no Python version" in misfit_reason(records[2], "3.12.7")
    assert "R environment" in misfit_reason(records[4], "3.12.7")


def _state(idle: int = 900) -> SessionState:
    root = Path("/runs/r-1/notebook")
    files = SessionFiles(root=root, work=root / "w", input=root / "i", layers=root / "l", log=root / "log")
    return SessionState(
        run_id="r-1", files=files, request=SessionRequest(idle_timeout_seconds=idle), python="/env/bin/python",
        python_version="3.12.1", port=8123, token="t", scratch="/tmp/s", layers={},
    )  # fmt: skip


def test_the_server_listens_on_loopback_only_and_leaves_the_idle_timeout_to_the_session() -> None:
    argv = jupyter_argv(_state(), Path("/work"))
    assert argv[:3] == ["/env/bin/python", "-m", "jupyter_server"]
    for setting in (
        "--ServerApp.ip=127.0.0.1",
        "--ServerApp.port=8123",
        "--ServerApp.port_retries=0",
        "--ServerApp.root_dir=/work",
    ):
        assert setting in argv
    # IdleWatch stops the session and says why; the server's own timeout or culler would not say
    assert not any("no_activity" in arg or "cull" in arg for arg in argv)
    assert not any("token" in arg.lower() for arg in argv)  # by variable, never on a command line


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> PennflowHome:
    monkeypatch.setenv("PENNFLOW_HOME", str(tmp_path / "home"))
    return PennflowHome.resolve()


def test_start_refuses_bad_options_and_unknown_layers_with_exit_2(home: PennflowHome) -> None:
    runner = CliRunner()
    short = runner.invoke(app, ["notebook", "start", "--idle-timeout", "4"])
    assert short.exit_code == 2
    assert "--idle-timeout: Input should be greater than or equal to 5 (got 4)" in short.output
    orphan = runner.invoke(app, ["notebook", "start", "--package", "N:package:1"])
    assert (orphan.exit_code, orphan.output.strip()) == (2, "error: --package: needs --dataset")
    missing = runner.invoke(app, ["notebook", "start", "--layer", "nope"])
    assert missing.exit_code == 2
    assert "no layer named 'nope'" in missing.output
    assert "Traceback" not in missing.output


def test_stop_refuses_a_run_that_does_not_exist(home: PennflowHome) -> None:
    result = CliRunner().invoke(app, ["notebook", "stop", "r-nope"])
    assert result.exit_code == 2
    assert "no run 'r-nope'" in result.output


def test_layers_list_for_notebooks_hides_layers_of_another_kind(home: PennflowHome, tmp_path: Path) -> None:
    with LocalLayers.open(home) as layers:
        layers.create("atlas", "data")
        layers.create("tidy", "r-env")
    listed = CliRunner().invoke(app, ["layers", "list", "--for-notebooks", "--json"])
    assert listed.exit_code == 0, listed.output
    assert "atlas" in listed.output and "tidy" not in listed.output
