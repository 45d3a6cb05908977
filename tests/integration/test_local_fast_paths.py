"""The local engine's fast paths keep its behaviour: folders and logs laid out ahead of a processor's
start, processes started by posix_spawn when the run's commands start in the engine's folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pennflow.cli import app
from pennflow.engine import spawn
from pennflow.engine.home import PennflowHome
from pennflow.engine.local import run_workflow
from pennflow.engine.run_layers import NO_LAYERS_DIR
from pennflow.stores.sqlite import SqliteRunStore
from pennflow.workflow.definition import parse_definition
from pennflow.workflow.runs import Status

FIXTURES = Path(__file__).parents[1] / "fixtures" / "processors"

# The flaky processor keeps its attempt counter outside its run, which the sandbox refuses.
pytestmark = pytest.mark.usefixtures("no_sandbox")

WORKFLOW = f"""
name: fast
processors:
  - id: src
    type: data-source
  - id: env
    command: [python, "{FIXTURES}/print_env.py"]
    dependsOn: [src]
  - id: flaky
    command: [python, "{FIXTURES}/fail_times.py"]
    dependsOn: [src]
    retry: {{maxAttempts: 1, intervalSeconds: 1}}
    defaultParams: {{COUNTER_FILE: "%COUNT%", FAIL_TIMES: "%FAILS%"}}
  - id: after
    command: [python, "{FIXTURES}/mark.py"]
    dependsOn: [flaky]
"""


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> PennflowHome:
    monkeypatch.setenv("PENNFLOW_HOME", str(tmp_path / "home"))
    (tmp_path / "input").mkdir()
    (tmp_path / "input" / "a.txt").write_text("a")
    return PennflowHome(tmp_path / "home")


@pytest.fixture
def spawned(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The programs started by posix_spawn (the rest went through Popen)."""
    started: list[str] = []
    real = spawn._posix_spawn

    def counted(argv, env, log):
        started.append(argv[-1])
        return real(argv, env, log)

    monkeypatch.setattr(spawn, "_posix_spawn", counted)
    return started


def run(tmp_path: Path, home: PennflowHome, fails: str, definition_dir: Path):
    body = WORKFLOW.replace("%COUNT%", str(tmp_path / "count")).replace("%FAILS%", fails)
    return run_workflow(
        parse_definition(body),
        definition_dir=definition_dir,
        input_dir=tmp_path / "input",
        home=home,
        docker=False,
        max_parallel=1,
    )


def test_from_the_definitions_folder_every_attempt_is_posix_spawned_with_the_contract(
    tmp_path, home, spawned, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    record = run(tmp_path, home, "1", tmp_path)
    assert record.status is Status.SUCCEEDED
    run_dir = home.run_dir(record.run_id)
    env = json.loads((run_dir / "env" / "output" / "env-env.json").read_text())["env"]
    assert env["OUTPUT_DIR"] == str(run_dir / "env" / "output")
    # No layers: the run's one empty, read-only LAYERS_DIR, not a folder of its own per processor.
    assert env["LAYERS_DIR"] == str(run_dir / NO_LAYERS_DIR)
    assert Path(env["LAYERS_DIR"]).is_dir() and list(Path(env["LAYERS_DIR"]).iterdir()) == []
    assert Path(env["LAYERS_DIR"]).stat().st_mode & 0o222 == 0  # no write bits
    assert not (run_dir / "env" / "layers").exists()
    assert "PENNSIEVE_API_KEY" not in env
    # flaky failed once, then its retry started on an emptied OUTPUT_DIR
    assert (run_dir / "flaky" / "output" / "done.txt").read_text() == "succeeded on attempt 2\n"
    log = (run_dir / "flaky" / "processor.log").read_text()
    assert "boom on attempt 1" in log and "attempt 2/2" in log
    assert sorted(Path(program).name for program in spawned) == [
        "fail_times.py",
        "fail_times.py",
        "mark.py",
        "print_env.py",
    ]


def test_elsewhere_popen_starts_them_and_the_run_is_the_same(tmp_path, home, spawned) -> None:
    record = run(tmp_path, home, "1", FIXTURES)
    assert record.status is Status.SUCCEEDED
    assert spawned == []


def test_a_processor_that_never_started_has_no_log_to_show(tmp_path, home, monkeypatch) -> None:
    """Nothing of it was started, so ``pennflow logs`` says so (its folders may have been laid out)."""
    monkeypatch.chdir(tmp_path)
    record = run(tmp_path, home, "always", tmp_path)
    assert record.status is Status.FAILED
    assert record.reason == "processor 'flaky' failed: exit code 3: boom on attempt 2"
    with SqliteRunStore(home.db_path) as store:
        steps = {step.processor_id: step for step in store.list_steps(record.run_id)}
    assert steps["after"].status is Status.CANCELED and steps["after"].started_at is None
    result = CliRunner().invoke(app, ["logs", record.run_id, "after"])
    assert result.exit_code == 0
    assert result.stdout == "(no log: the processor did not start)\n"
    shown = CliRunner().invoke(app, ["logs", record.run_id, "flaky"])
    assert "boom on attempt 2" in shown.stdout


def test_the_folders_ahead_are_the_run_folders_of_every_processor(tmp_path, home, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    record = run(tmp_path, home, "0", tmp_path)
    assert record.status is Status.SUCCEEDED
    run_dir = home.run_dir(record.run_id)
    for pid in ("env", "flaky", "after"):
        assert (run_dir / pid / "output").is_dir()
        assert (run_dir / pid / "processor.log").stat().st_size > 0
    # Nothing staged beside them: the one hidden entry is the run's empty LAYERS_DIR.
    assert [name for name in os.listdir(run_dir) if name.startswith(".")] == [NO_LAYERS_DIR]
    assert not (run_dir / "env" / "layers").exists()  # no processor here has layers: no view of its own
