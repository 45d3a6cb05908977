"""``pennflow notebook connect`` and the --remote forms of start, stop and layers list --for-notebooks.

The node is a fake client (the routes themselves are tested in tests/integration/test_api_notebooks.py);
the session-manager-plugin is a fake on PATH that records the argv it is given, as the AWS CLI would
give it to the real one.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from pennflow.cli import app, notebook_remote, remote

RUN = "r-mx7abc12-0a1b2c3d"
TARGET = "ecs:pennflow-cluster_0a1b2c3d4e_0a1b2c3d4e-3811061257"
TOKEN_PARAMETER = "/pennflow/slots/slot-01/notebook-token"


class FakeSsm:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def get_parameter(self, **asked: Any) -> dict[str, Any]:
        self.calls.append(("get_parameter", asked))
        return {"Parameter": {"Value": "s3cr3t-token", "Type": "SecureString"}}

    def start_session(self, **asked: Any) -> dict[str, Any]:
        self.calls.append(("start_session", asked))
        return {"SessionId": "jo-0a1b", "TokenValue": "stream-token", "StreamUrl": "wss://ssmmessages/x"}

    def terminate_session(self, **asked: Any) -> dict[str, Any]:
        self.calls.append(("terminate_session", asked))
        return {}


class FakeSession:
    profile_name = "lab"

    def __init__(self) -> None:
        self.ssm = FakeSsm()

    def client(self, service: str, region_name: str | None = None) -> FakeSsm:
        assert service == "ssm" and region_name == "eu-west-1"
        return self.ssm


class FakeNode:
    region = "eu-west-1"

    def __init__(self, views: list[dict[str, Any]]) -> None:
        self.views = views
        self.requests: list[tuple[str, str, Any]] = []
        self.session = FakeSession()

    def request(self, method: str, path: str, *, body: Any = None, **_: Any) -> dict[str, Any]:
        self.requests.append((method, path, body))
        if path == "/notebooks":
            return {"runId": RUN, "status": "NOT_STARTED", "layers": body["layers"], "pythonVersion": "3.12",
                    "idleMinutes": 60, "connect": f"pennflow notebook connect {RUN}"}  # fmt: skip
        if path.endswith("/stop"):
            return {"runId": RUN, "status": "STARTED"}
        if path == "/notebooks/layers":
            return {"pythonVersion": "3.12", "layers": [
                {"name": "scipy-env", "type": "python-env", "version": 2, "pythonVersion": "3.12.4"}]}  # fmt: skip
        return self.views.pop(0) if len(self.views) > 1 else self.views[0]


RUNNING = {
    "runId": RUN,
    "status": "STARTED",
    "connect": {"target": TARGET, "document": "AWS-StartPortForwardingSession", "port": 8888,
                "tokenParameter": TOKEN_PARAMETER},
}  # fmt: skip


@pytest.fixture
def fake_node(monkeypatch: pytest.MonkeyPatch):
    def install(views: list[dict[str, Any]]) -> FakeNode:
        node = FakeNode(views)
        monkeypatch.setattr(remote, "connect", lambda target: node)
        monkeypatch.setattr(notebook_remote, "connect", lambda target: node)
        monkeypatch.setattr(notebook_remote, "WAIT_POLL_SECONDS", 0.01)
        return node

    return install


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A session-manager-plugin on PATH that writes its argv (as JSON) to argv.json and exits 0."""
    folder = tmp_path / "bin"
    folder.mkdir()
    record = tmp_path / "argv.json"
    script = folder / "session-manager-plugin"
    script.write_text(
        f"#!{sys.executable}\nimport json, sys\nopen({str(record)!r}, 'w').write(json.dumps(sys.argv[1:]))\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ.get('PATH', '')}")
    return record


def test_connect_hands_the_port_forwarding_session_to_the_plugin_and_prints_the_url(fake_node, plugin):
    node = fake_node([RUNNING])

    result = CliRunner().invoke(app, ["notebook", "connect", RUN, "--port", "18888", "--node", "lab"])

    assert result.exit_code == 0, result.output
    assert "http://127.0.0.1:18888/?token=s3cr3t-token" in result.output
    response, region, operation, profile, parameters, endpoint = json.loads(plugin.read_text())
    assert json.loads(response) == {"SessionId": "jo-0a1b", "TokenValue": "stream-token",
                                    "StreamUrl": "wss://ssmmessages/x"}  # fmt: skip
    assert (region, operation, profile, endpoint) == (
        "eu-west-1", "StartSession", "lab", "https://ssm.eu-west-1.amazonaws.com"
    )  # fmt: skip
    expected = {
        "Target": TARGET,
        "DocumentName": "AWS-StartPortForwardingSession",
        "Parameters": {"portNumber": ["8888"], "localPortNumber": ["18888"]},
    }
    assert json.loads(parameters) == expected
    calls = dict(node.session.ssm.calls)
    assert calls["get_parameter"] == {"Name": TOKEN_PARAMETER, "WithDecryption": True}
    assert calls["start_session"] == expected
    assert calls["terminate_session"] == {"SessionId": "jo-0a1b"}  # nothing is left open


def test_connect_waits_for_the_task_to_run(fake_node, plugin):
    pending = {"runId": RUN, "status": "STARTED", "taskStatus": "PROVISIONING", "connect": None}
    node = fake_node([{"runId": RUN, "status": "NOT_STARTED"}, pending, RUNNING])

    result = CliRunner().invoke(app, ["notebook", "connect", RUN, "--node", "lab"])

    assert result.exit_code == 0, result.output
    assert [path for _, path, _ in node.requests] == [f"/notebooks/{RUN}"] * 3
    local = json.loads(json.loads(plugin.read_text())[4])["Parameters"]["localPortNumber"][0]
    assert int(local) > 0 and f"http://127.0.0.1:{local}/?token=" in result.output


def test_without_the_plugin_connect_says_exactly_what_to_install(fake_node, monkeypatch, tmp_path):
    fake_node([RUNNING])
    monkeypatch.setenv("PATH", str(tmp_path))

    result = CliRunner().invoke(app, ["notebook", "connect", RUN, "--node", "lab"])

    assert result.exit_code == 2
    assert "session-manager-plugin" in result.output
    assert "session-manager-working-with-install-plugin.html" in result.output


def test_connect_to_an_ended_session_fails_saying_so(fake_node, plugin):
    fake_node([{"runId": RUN, "status": "SUCCEEDED", "reason": "the server shut down (idle timeout)"}])

    result = CliRunner().invoke(app, ["notebook", "connect", RUN, "--node", "lab"])

    assert (
        result.exit_code == 1
        and "has ended (SUCCEEDED: the server shut down (idle timeout))" in result.output
    )
    assert not plugin.exists()


def test_connect_gives_up_after_wait_naming_the_task_status(fake_node, plugin):
    fake_node([{"runId": RUN, "status": "STARTED", "taskStatus": "PENDING"}])

    result = CliRunner().invoke(app, ["notebook", "connect", RUN, "--node", "lab", "--wait", "0"])

    assert result.exit_code == 1 and "STARTED (PENDING)" in result.output


def test_start_remote_sends_the_session_request(fake_node):
    node = fake_node([RUNNING])

    result = CliRunner().invoke(
        app, ["notebook", "start", "--remote", "--layer", "scipy-env", "--cpu", "2", "--memory", "8192"]
    )

    assert result.exit_code == 0, result.output
    assert node.requests == [("POST", "/notebooks", {"layers": ["scipy-env"], "cpu": 2048, "memory": 8192})]
    assert f"pennflow notebook connect {RUN}" in result.output


def test_stop_remote_asks_the_node(fake_node):
    node = fake_node([RUNNING])

    result = CliRunner().invoke(app, ["notebook", "stop", RUN, "--remote"])

    assert result.exit_code == 0 and node.requests == [("POST", f"/notebooks/{RUN}/stop", None)]
    assert "files are kept" in result.output


def test_layers_for_notebooks_on_the_node_are_the_nodes_fitting_ones(fake_node):
    node = fake_node([RUNNING])

    result = CliRunner().invoke(app, ["layers", "list", "--for-notebooks", "--remote"])

    assert result.exit_code == 0, result.output
    assert node.requests == [("GET", "/notebooks/layers", None)]
    assert "scipy-env" in result.output and "Python 3.12" in result.output
