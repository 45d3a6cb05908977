"""What the CLI says when a container cannot start: docker's own reason, in the progress lines, the
summary of ``pennflow run`` and ``pennflow status``; attempts counted from 1, a retry saying why."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pennflow.cli import app, local

FIXTURES = Path(__file__).parents[1] / "fixtures" / "processors"
DAEMON_DOWN = "docker: Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?"
SHOWN = (
    "the docker daemon is not running (Cannot connect to the Docker daemon at "
    "unix:///var/run/docker.sock. Is the docker daemon running?): start it, or run with --no-containers"
)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PENNFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(local.out, "width", 200)
    return tmp_path / "home"


@pytest.fixture
def input_dir(tmp_path: Path) -> Path:
    (tmp_path / "input").mkdir()
    (tmp_path / "input" / "a.txt").write_text("a")
    return tmp_path / "input"


def stopped_daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``docker`` first on PATH that fails as the real client does when its daemon is not running."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    script = (
        f"#!{sys.executable}\nimport sys\nprint({DAEMON_DOWN!r}, file=sys.stderr)\n"
        "print(\"Run 'docker run --help' for more information\", file=sys.stderr)\nsys.exit(125)\n"
    )
    (fake_bin / "docker").write_text(script)
    (fake_bin / "docker").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")


def flow(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "flow.yaml"
    path.write_text("name: flow\nprocessors:\n  - id: src\n    type: data-source\n" + body)
    return path


def test_a_stopped_docker_daemon_is_the_reason_run_and_status_show(
    home, input_dir, tmp_path, monkeypatch
) -> None:
    stopped_daemon(tmp_path, monkeypatch)
    definition = flow(
        tmp_path,
        "  - id: boxed\n    image: eeg/convert:1\n    dependsOn: [src]\n"
        "    retry: {maxAttempts: 2, intervalSeconds: 1}\n"
        "  - id: after\n    command: [python, x.py]\n    dependsOn: [boxed]\n",
    )
    ran = CliRunner().invoke(app, ["run", str(definition), "--input", str(input_dir), "--containers"])
    assert ran.exit_code == 1, ran.output
    assert "boxed STARTED (attempt 1/3)" in ran.stdout and "attempt 0" not in ran.stdout
    assert "boxed FAILED in " in ran.stdout and f": {SHOWN}" in ran.stdout  # the progress line
    assert f"processor 'boxed' failed: {SHOWN}" in ran.stdout  # the summary under the table
    assert "docker run --help" not in ran.stdout
    assert "(attempt 2/3)" not in ran.stdout  # a stopped daemon is not retried

    run_id = json.loads(CliRunner().invoke(app, ["runs", "--json"]).stdout)["runs"][0]["run_id"]
    status = CliRunner().invoke(app, ["status", run_id])
    assert SHOWN in status.stdout
    rows = {
        line.split()[0]: line.split()
        for line in status.stdout.splitlines()
        if line.startswith(" ") and line.strip()
    }
    assert rows["boxed"][1:4] == ["FAILED", "1", "125"]  # one attempt, docker's exit code
    assert rows["after"][1:3] == ["CANCELED", "-"]  # it never started: no attempt, not "0"
