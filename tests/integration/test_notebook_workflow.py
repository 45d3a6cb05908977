"""`pennflow run` of a workflow whose processor is interactive (Pennsieve's notebook workflows): the
data source downloads the run's dataset from the fake Pennsieve first, the session's INPUT_DIR is its
output, its layer is mounted read-only; the URL (with its token) is said; the run stays STARTED until
`pennflow notebook stop`; then the data target publishes the working area's files to the dataset
through the fake upload service, and the working area is kept. A real Jupyter server throughout.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import boto3
import pytest
from typer.testing import CliRunner

from pennflow.cli import app
from pennflow.engine.home import PennflowHome
from pennflow.layers.service import LocalLayers
from pennflow.notebooks.runs import session_problems
from pennflow.notebooks.session import SessionState, find_session, server_status, stop_session
from pennflow.stores.sqlite import SqliteRunStore
from pennflow.workflow.definition import parse_definition
from pennflow.workflow.runs import Status
from tests.integration.notebook_support import run_code
from tests.integration.test_layers_local import make_wheel

pytest_plugins = ["tests.fakes.pennsieve_fixtures"]
pytestmark = pytest.mark.xdist_group("notebook-sessions")

REGION = "us-east-1"
NOTEBOOK = """
{{
  "name": "Notebook session",
  "processors": [
    {{"id": "data", "type": "data-source"}},
    {{"id": "notebook", "sourceUrl": "https://github.com/example-lab/notebook-env", "tag": "v0.1.0",
      "interactive": true, "sessionType": "jupyter", "dependsOn": ["data"], "layers": ["sci"]}},
    {{"id": "results", "type": "data-target", "targetType": "{target}", "dependsOn": ["notebook"],
      "defaultParams": {{"folder": "notebook-results"}}}}
  ]
}}
"""


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> PennflowHome:
    monkeypatch.setenv("PENNFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HOME", str(tmp_path / "user"))  # no ~/.pennsieve/config.ini of this machine
    return PennflowHome(tmp_path / "home")


@pytest.fixture
def pennsieve_env(pennsieve, cognito_user, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PENNSIEVE_API_HOST", pennsieve.api_host)
    monkeypatch.setenv("PENNSIEVE_API2_HOST", pennsieve.api2_host)
    monkeypatch.setenv("PENNSIEVE_API_KEY", cognito_user.api_key)
    monkeypatch.setenv("PENNSIEVE_API_SECRET", cognito_user.api_secret)


@pytest.fixture
def sci_layer(home: PennflowHome, tmp_path: Path) -> str:
    wheels = tmp_path / "wheels"
    make_wheel(wheels, "layerpkg", "2.5.0")
    with LocalLayers.open(home) as layers:
        layers.create(
            "sci", "python-env", requirements=f"--no-index\n--find-links {wheels}\nlayerpkg==2.5.0\n"
        )
        layers.build("sci")
    return "sci"


def _definition(tmp_path: Path, target: str = "Pennsieve Dataset") -> Path:
    path = tmp_path / "notebook.json"
    path.write_text(NOTEBOOK.format(target=target))
    return path


def _session_of_the_run(home: PennflowHome, timeout: float = 180) -> SessionState:
    """The one run's session, once its server answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with SqliteRunStore(home.db_path) as store:
            runs = store.list_runs().runs
        state = find_session(home, runs[0].run_id) if runs else None
        if state is not None and server_status(state) is not None:
            return state
        time.sleep(0.2)
    raise AssertionError("no session answered")


def _pennflow(*args: str) -> str:
    """``pennflow ARGS`` in its own process (this one's environment: the test's PENNFLOW_HOME)."""
    command = [sys.executable, "-c", "from pennflow.cli import main; main()", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_notebook_workflow_runs_upstream_first_serves_until_stopped_then_publishes_its_work(
    home: PennflowHome, sci_layer: str, pennsieve, pennsieve_env, tmp_path: Path
) -> None:
    dataset = pennsieve.add_dataset("eeg-study")
    dataset.add_package("a.edf", [("a.edf", 2048)])
    seen: dict = {}

    def work_in_the_session() -> None:
        try:
            state = _session_of_the_run(home)
            with SqliteRunStore(home.db_path) as store:
                seen["run"] = store.get_run(state.run_id).status
                seen["steps"] = {s.processor_id: s.status for s in store.list_steps(state.run_id)}
            # Real processes: a second CliRunner in this thread would swap sys.stdout/stderr under the
            # run's own CliRunner, and the run's lines could land in the wrong capture.
            seen["listed"] = json.loads(_pennflow("runs", "--json"))["runs"][0]
            seen["status"] = _pennflow("status", state.run_id)
            seen["code"] = run_code(
                state,
                "import os, layerpkg\n"
                "names = sorted(os.listdir(os.environ['INPUT_DIR']))\n"
                "open('summary.txt', 'w').write(f'{names} {layerpkg.VERSION}')\n"
                "print(names, layerpkg.VERSION, os.getcwd() == os.environ['OUTPUT_DIR'])\n",
            )
            seen["stopped"] = stop_session(home, state.run_id, timeout=120)
            seen["state"] = state
        except BaseException as exc:  # said by the main thread's assertions
            seen["error"] = exc

    helper = threading.Thread(target=work_in_the_session)
    helper.start()
    result = CliRunner().invoke(
        app, ["run", str(_definition(tmp_path)), "--dataset", dataset.node_id, "--publish", "--json"]
    )
    helper.join(300)
    assert "error" not in seen, seen.get("error")
    assert result.exit_code == 0, result.output

    state: SessionState = seen["state"]
    assert seen["run"] is Status.STARTED  # while the user works: the run goes on
    assert seen["steps"] == {
        "data": Status.SUCCEEDED,
        "notebook": Status.STARTED,
        "results": Status.NOT_STARTED,
    }
    assert f"  url:      {state.url}" in result.stderr  # said once the server answered, token included
    assert seen["listed"]["kind"] == "notebook" and seen["listed"]["sessionUrl"] == state.url
    assert f"notebook session: running at {state.url}" in seen["status"]
    assert seen["code"] == ("['a.edf'] 2.5.0 True\n", None)
    assert (seen["stopped"].status, seen["stopped"].reason) == (Status.SUCCEEDED, "stopped")

    data = json.loads(result.stdout)
    steps = {step["processor_id"]: step for step in data["processors"]}
    assert data["run"]["status"] == Status.SUCCEEDED.value
    assert steps["results"]["reason"].endswith(
        f"published 1 file to pennsieve:{dataset.node_id}/notebook-results"
    )
    [manifest] = pennsieve.manifests.values()
    [upload] = manifest["files"].values()
    assert (upload["target_path"], upload["target_name"]) == ("notebook-results", "summary.txt")
    key = f"O1/D{dataset.int_id}/{next(iter(pennsieve.manifests))}/{upload['upload_id']}"
    stored = boto3.client("s3", region_name=REGION).get_object(Bucket=pennsieve.upload_bucket, Key=key)
    assert stored["Body"].read() == b"['a.edf'] 2.5.0"
    assert (state.files.work / "summary.txt").read_bytes() == b"['a.edf'] 2.5.0"  # kept, as a run's
    assert state.files.work == home.run_dir(state.run_id) / "notebook" / "output"
    assert not Path(state.scratch).exists()
    with LocalLayers.open(home) as layers:
        assert layers.get(sci_layer).refs == {}  # the run let go of its pin

    after = CliRunner().invoke(app, ["status", state.run_id])
    assert "notebook session: not running" in after.output


def test_a_canceled_notebook_workflow_ends_its_server_and_resumes_into_a_new_session_that_idles_out(
    home: PennflowHome, sci_layer: str, tmp_path: Path
) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text("a")
    seen: dict = {}

    def cancel() -> None:
        try:
            state = _session_of_the_run(home)
            seen["state"] = state
            seen["cancel"] = CliRunner().invoke(app, ["cancel", state.run_id])
        except BaseException as exc:
            seen["error"] = exc

    helper = threading.Thread(target=cancel)
    helper.start()
    result = CliRunner().invoke(
        app, ["run", str(_definition(tmp_path, "s3")), "--input", str(tmp_path / "in"), "--json"]
    )
    helper.join(60)
    assert "error" not in seen, seen.get("error")
    assert result.exit_code == 1, result.output
    steps = {step["processor_id"]: step for step in json.loads(result.stdout)["processors"]}
    assert steps["notebook"]["status"] == Status.CANCELED.value
    assert steps["results"]["status"] in {Status.CANCELED.value, Status.NOT_STARTED.value}
    assert server_status(seen["state"]) is None  # the server is gone, not only the record

    # resumed, the session starts again (its URL said again); idle for the setting's time, it stops itself
    run_id = seen["state"].run_id
    with pytest.MonkeyPatch.context() as setting:
        setting.setenv("PENNFLOW_NOTEBOOK_IDLE_SECONDS", "5")
        resumed = CliRunner().invoke(app, ["resume", run_id, "--json"])
    assert resumed.exit_code == 0, resumed.output
    data = json.loads(resumed.stdout)
    steps = {step["processor_id"]: step for step in data["processors"]}
    assert data["run"]["status"] == Status.SUCCEEDED.value and data["run"]["attempt"] == 2
    assert steps["notebook"]["status"] == Status.SUCCEEDED.value
    assert steps["notebook"]["reason"].startswith("stopped: idle for ")
    assert "(timeout 5 s, last activity " in steps["notebook"]["reason"]
    again = find_session(home, run_id)
    assert again.port != seen["state"].port or again.token != seen["state"].token  # a new server
    assert f"  url:      {again.url}" in resumed.stderr


def test_a_session_layer_of_another_python_refuses_the_run_naming_both_versions(
    home: PennflowHome, sci_layer: str, tmp_path: Path
) -> None:
    workflow = parse_definition(_definition(tmp_path).read_text(), "json")
    with LocalLayers.open(home) as layers:
        built = ".".join(layers.get(sci_layer).python_version.split(".")[:2])
    assert session_problems(home, workflow, [], python_version="3.9.18") == [
        f"processor 'notebook': layer 'sci' was built for Python {built}, the session runs Python 3.9: "
        "build the layer again with Python 3.9"
    ]
    assert session_problems(home, workflow, []) == []  # this installation's Python: it fits


def test_pennflow_run_refuses_a_session_layer_of_another_python_before_anything_runs(
    home: PennflowHome, sci_layer: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with LocalLayers.open(home) as layers:  # sci's wheel, recorded as built by another interpreter
        layers.create(
            "older", "python-env", requirements=f"--no-index\n--find-links {tmp_path / 'wheels'}\nlayerpkg\n"
        )
        with monkeypatch.context() as elsewhere:
            elsewhere.setattr("pennflow.layers.build._python_version", lambda python: "3.9.18")
            layers.build("older")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text("a")
    result = CliRunner().invoke(
        app, ["run", str(_definition(tmp_path, "s3")), "--input", str(tmp_path / "in"), "--layer", "older"]
    )
    assert result.exit_code == 2, result.output
    wanted = ".".join(platform.python_version().split(".")[:2])
    assert (
        f"  - processor 'notebook': layer 'older' was built for Python 3.9, the session runs Python {wanted}: "
        f"build the layer again with Python {wanted}"
    ) in result.output
    with SqliteRunStore(home.db_path) as store:
        assert store.list_runs().runs == []  # refused before any run exists
