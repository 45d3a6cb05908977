"""The local CLI: run, runs, status, logs, cancel; exit codes 0/1/2 and --json for scripts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pennflow.cli import app
from pennflow.engine.home import PennflowHome
from pennflow.stores.sqlite import SqliteRunStore
from pennflow.workflow.runs import Status

FIXTURES = Path(__file__).parents[1] / "fixtures" / "processors"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> PennflowHome:
    monkeypatch.setenv("PENNFLOW_HOME", str(tmp_path / "home"))
    return PennflowHome(tmp_path / "home")


@pytest.fixture
def input_dir(tmp_path: Path) -> Path:
    (tmp_path / "input" / "sub").mkdir(parents=True)
    (tmp_path / "input" / "a.txt").write_text("a")
    (tmp_path / "input" / "sub" / "b.txt").write_text("b")
    return tmp_path / "input"


def cli(*args: object):
    return CliRunner().invoke(app, [str(arg) for arg in args])


def definition(tmp_path: Path, body: str, name: str = "flow") -> Path:
    """A workflow file beside which nothing lives: commands name the fixture scripts by full path."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        f"name: {name}\nprocessors:\n  - id: src\n    type: data-source\n" + body.replace("@", f"{FIXTURES}/")
    )
    return path


GOOD = """
  - id: mark
    command: [python, "@mark.py"]
    dependsOn: [src]
    defaultParams: {SLEEP: "0"}
  - id: results
    type: data-target
    targetType: s3
    dependsOn: [mark]
"""
BROKEN = """
  - id: broken
    command: [python, "@fail_times.py"]
    dependsOn: [src]
    defaultParams: {COUNTER_FILE: "%COUNT%"}
"""
SLEEPY = """
  - id: sleeper
    command: [python, "@spawn_and_sleep.py"]
    dependsOn: [src]
    defaultParams: {PID_FILE: "%PIDS%"}
"""


def test_run_prints_the_run_id_each_processor_and_where_the_results_are(home, input_dir, tmp_path) -> None:
    result = cli("run", definition(tmp_path, GOOD), "--input", input_dir)
    assert result.exit_code == 0, result.output
    [run] = SqliteRunStore(home.db_path).list_runs().runs
    assert f"run {run.run_id} started: flow, 3 processors" in result.stdout
    assert "mark SUCCEEDED" in result.stdout and "results SUCCEEDED" in result.stdout
    assert f"SUCCEEDED run {run.run_id}" in result.stdout
    assert f"results: {home.run_dir(run.run_id) / 'results' / 'output'}" in result.stdout
    assert (home.run_dir(run.run_id) / "results" / "output" / "mark.json").is_file()


def test_run_json_is_the_final_record_for_scripts(home, input_dir, tmp_path) -> None:
    result = cli("run", definition(tmp_path, GOOD), "--input", input_dir, "--json", "--param", "SLEEP=0.1")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["run"]["status"] == "SUCCEEDED"
    assert data["run"]["params"]["mark"] == {"SLEEP": "0.1"}
    assert [p["processor_id"] for p in data["processors"]] == ["src", "mark", "results"]
    assert data["results"] == [str(home.run_dir(data["run"]["run_id"]) / "results" / "output")]


@pytest.mark.usefixtures("no_sandbox")  # its processor keeps notes outside its run
def test_a_failed_run_exits_1_naming_the_processor_and_its_logs(home, input_dir, tmp_path) -> None:
    body = BROKEN.replace("%COUNT%", str(tmp_path / "count"))
    result = cli("run", definition(tmp_path, body), "--input", input_dir)
    assert result.exit_code == 1
    [run] = SqliteRunStore(home.db_path).list_runs().runs
    assert f"FAILED run {run.run_id}" in result.stdout
    assert "processor 'broken' failed: exit code 3: boom on attempt 1" in result.stdout
    assert f"logs: pennflow logs {run.run_id} broken" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--input", "{tmp}/nowhere"], "is not a folder"),
        (["--input", "{tmp}/empty"], "holds no files"),
        ([], "--input: required"),
        (["--input", "{input}", "--param", "SLEEP"], "--param 'SLEEP': expected KEY=VALUE"),
        (["--input", "{input}", "--param", "SPEED=1"], "no processor declares param(s) 'SPEED'"),
        (["--input", "{input}", "--layer", "absent"], "layer 'absent' (from --layer) not found"),
        (["--input", "{input}", "--dataset", "N:dataset:1"], "--input and --dataset: give one or the other"),
        (["--input", "{input}", "--package", "N:package:1"], "--package: needs --dataset"),
        (["--input", "{input}", "--max-parallel", "0"], "--max-parallel"),
    ],
)
def test_invalid_run_input_exits_2_before_anything_runs(home, input_dir, tmp_path, args, message) -> None:
    (tmp_path / "empty").mkdir()
    args = [arg.format(tmp=tmp_path, input=input_dir) for arg in args]
    result = cli("run", definition(tmp_path, GOOD), *args)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.stderr.split())
    assert "Traceback" not in result.output
    assert not home.runs_dir.exists() or not any(home.runs_dir.iterdir())


def test_an_invalid_definition_exits_2_listing_its_faults(home, input_dir, tmp_path) -> None:
    bad = definition(tmp_path, "  - id: orphan\n    command: [python, x.py]\n    dependOn: [src]\n")
    result = cli("run", bad, "--input", input_dir)
    assert result.exit_code == 2
    assert "processor 'orphan', field 'dependOn': unknown field; did you mean dependsOn?" in result.stderr


def _finished_runs(
    tmp_path: Path, input_dir: Path, count: int, body: str = GOOD, name: str = "flow"
) -> list[str]:
    path = definition(tmp_path, body, name)
    for _ in range(count):
        assert cli("run", path, "--input", input_dir).exit_code in (0, 1)
    return [r["run_id"] for r in json.loads(cli("runs", "--json").stdout)["runs"]]


def test_runs_lists_newest_first_with_filters_and_pages(home, input_dir, tmp_path) -> None:
    good = _finished_runs(tmp_path, input_dir, 3)
    broken_body = BROKEN.replace("%COUNT%", str(tmp_path / "count"))
    everything = _finished_runs(tmp_path, input_dir, 1, broken_body, "other")
    assert everything[1:] == good and len(everything) == 4

    listed = json.loads(cli("runs", "--json", "--workflow", "other").stdout)
    assert [(r["workflow"], r["status"]) for r in listed["runs"]] == [("other", "FAILED")]
    failed = json.loads(cli("runs", "--json", "--status", "failed").stdout)["runs"]
    assert [r["run_id"] for r in failed] == everything[:1]

    first = json.loads(cli("runs", "--json", "--limit", "3").stdout)
    second = json.loads(cli("runs", "--json", "--limit", "3", "--cursor", first["cursor"]).stdout)
    assert [r["run_id"] for r in first["runs"] + second["runs"]] == everything
    assert second["cursor"] is None

    table = cli("runs", "--limit", "3")
    assert table.exit_code == 0 and everything[0] in table.stdout and "FAILED" in table.stdout
    assert f"--cursor {first['cursor']}" in table.stdout
    assert cli("runs", "--cursor", "garbage").exit_code == 2


def test_runs_on_a_fresh_home_says_there_are_none(home) -> None:
    result = cli("runs")
    assert result.exit_code == 0 and result.stdout == f"no runs yet in PENNFLOW_HOME {home.root}\n"
    assert json.loads(cli("runs", "--json").stdout) == {"runs": [], "cursor": None}


@pytest.mark.usefixtures("no_sandbox")  # its processor keeps notes outside its run
def test_status_shows_every_processor(home, input_dir, tmp_path) -> None:
    body = BROKEN.replace("%COUNT%", str(tmp_path / "count")) + GOOD.replace("[src]", "[broken]")
    [run_id] = _finished_runs(tmp_path, input_dir, 1, body)

    data = json.loads(cli("status", run_id, "--json").stdout)
    assert data["run"]["status"] == "FAILED" and data["run"]["failed_processor"] == "broken"
    steps = {p["processor_id"]: p for p in data["processors"]}
    assert (steps["broken"]["status"], steps["broken"]["exit_code"], steps["broken"]["attempts"]) == (
        "FAILED",
        3,
        1,
    )
    assert steps["broken"]["duration_seconds"] > 0
    assert steps["mark"]["status"] == "CANCELED" and steps["mark"]["started_at"] is None

    table = cli("status", run_id)
    assert table.exit_code == 0
    assert f"run {run_id}: flow FAILED" in table.stdout
    for line in ("src SUCCEEDED 1", "broken FAILED 1 3", "mark CANCELED - -"):  # never started: no try
        assert line in " ".join(table.stdout.split())


@pytest.mark.usefixtures("no_sandbox")  # its processor keeps notes outside its run
def test_logs_prints_one_processor_or_all_of_them(home, input_dir, tmp_path) -> None:
    [run_id] = _finished_runs(tmp_path, input_dir, 1, BROKEN.replace("%COUNT%", str(tmp_path / "count")))
    one = cli("logs", run_id, "broken")
    assert one.exit_code == 0
    assert one.stdout.startswith("==== ") and "broken attempt 1/1" in one.stdout
    assert "boom on attempt 1" in one.stdout
    every = cli("logs", run_id)
    assert "==> src (SUCCEEDED) <==" in every.stdout and "==> broken (FAILED) <==" in every.stdout
    assert "copied 2 files" in every.stdout
    unknown = cli("logs", run_id, "nope")
    assert unknown.exit_code == 2 and "has no processor 'nope' (processors: src, broken)" in unknown.stderr


@pytest.mark.parametrize("command", ["status", "logs", "cancel"])
def test_an_unknown_run_id_exits_2(home, command) -> None:
    result = cli(command, "r-nope")
    assert result.exit_code == 2
    assert f"no run 'r-nope' in PENNFLOW_HOME {home.root} (see `pennflow runs`)" in result.stderr


def test_canceling_a_finished_run_changes_nothing(home, input_dir, tmp_path) -> None:
    [run_id] = _finished_runs(tmp_path, input_dir, 1)
    result = cli("cancel", run_id)
    assert result.exit_code == 1
    assert "has already ended (SUCCEEDED)" in result.stderr
    assert SqliteRunStore(home.db_path).get_run(run_id).status is Status.SUCCEEDED


# ------------------------------------------------------------------ a run in another process


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _start_cli_run(home: PennflowHome, tmp_path: Path, input_dir: Path) -> tuple[subprocess.Popen, list[int]]:
    path = definition(tmp_path, SLEEPY.replace("%PIDS%", str(tmp_path / "pids")))
    process = subprocess.Popen(
        [sys.executable, "-m", "pennflow.cli", "run", str(path), "--input", str(input_dir)],
        env={**os.environ, "PENNFLOW_HOME": str(home.root)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 20
    while not (tmp_path / "pids").exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the processor never started"
        time.sleep(0.02)
    return process, [int(pid) for pid in (tmp_path / "pids").read_text().split()]


def _assert_stopped(home: PennflowHome, process: subprocess.Popen, pids: list[int]) -> str:
    stdout, stderr = process.communicate(timeout=20)
    assert process.returncode == 1, stdout + stderr
    assert "Traceback" not in stderr
    [run] = SqliteRunStore(home.db_path).list_runs().runs
    assert run.status is Status.CANCELED
    assert not any(_alive(pid) for pid in pids)
    return stdout + stderr


@pytest.mark.usefixtures("no_sandbox")  # its processor keeps notes outside its run
def test_ctrl_c_cancels_the_run_cleanly(home, input_dir, tmp_path) -> None:
    process, pids = _start_cli_run(home, tmp_path, input_dir)
    process.send_signal(signal.SIGINT)
    printed = _assert_stopped(home, process, pids)
    assert "canceling the run" in printed and "CANCELED run" in printed


@pytest.mark.usefixtures("no_sandbox")  # its processor keeps notes outside its run
def test_pennflow_cancel_from_another_terminal_stops_the_run(home, input_dir, tmp_path) -> None:
    process, pids = _start_cli_run(home, tmp_path, input_dir)
    [run] = SqliteRunStore(home.db_path).list_runs().runs
    result = cli("cancel", run.run_id)
    assert result.exit_code == 0 and "cancel requested" in result.stdout
    assert "cancel already requested" in cli("cancel", run.run_id).stdout
    _assert_stopped(home, process, pids)


def test_containers_can_be_forced_on_or_off(home, input_dir, tmp_path, monkeypatch) -> None:
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "docker").write_text(f"#!{sys.executable}\n" + (FIXTURES / "fake_docker.py").read_text())
    (fake_bin / "docker").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_DOCKER_LOG", str(tmp_path / "docker.log"))
    path = definition(
        tmp_path,
        GOOD.replace('command: [python, "@mark.py"]', 'image: img:1\n    command: [python, "@mark.py"]'),
    )

    assert cli("run", path, "--input", input_dir, "--no-containers").exit_code == 0
    assert not (tmp_path / "docker.log").exists()
    assert cli("run", path, "--input", input_dir, "--containers").exit_code == 0
    [argv] = [json.loads(line) for line in (tmp_path / "docker.log").read_text().splitlines()]
    assert argv[0] == "run" and argv[-1] == "img:1"
