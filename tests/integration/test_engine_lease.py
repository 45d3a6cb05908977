"""No run outlives its engine unnoticed: ``kill -9`` of a real ``pennflow run``, its lease, its supervisor."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pennflow.cli import app
from pennflow.engine import lease as lease_module
from pennflow.engine.home import PennflowHome
from pennflow.engine.lease import boot_id, engine_gone, process_start
from pennflow.engine.local import run_workflow
from pennflow.layers.service import LocalLayers
from pennflow.stores.leases import EngineLease
from pennflow.stores.sqlite import SqliteRunStore
from pennflow.workflow.definition import parse_definition
from pennflow.workflow.runs import RunRecord, Status, utcnow

FIXTURES = Path(__file__).parents[1] / "fixtures" / "processors"
LAYER = "pinned"

WORKFLOW = f"""
name: orphan
processors:
  - id: src
    type: data-source
  - id: sleeper
    command: [python, "{FIXTURES}/spawn_and_sleep.py"]
    dependsOn: [src]
    defaultParams: {{PID_FILE: "%PIDS%"}}
  - id: after
    command: [python, "{FIXTURES}/mark.py"]
    dependsOn: [sleeper]
"""


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_sandbox: None) -> PennflowHome:
    # Unsandboxed: the processor writes its pids outside its run (test_processor_sandbox kills a
    # sandboxed one).
    monkeypatch.setenv("PENNFLOW_HOME", str(tmp_path / "home"))
    home = PennflowHome(tmp_path / "home")
    (tmp_path / "layer").mkdir()
    (tmp_path / "layer" / "table.csv").write_text("a,b\n")
    with LocalLayers.open(home) as layers:
        layers.populate_from(LAYER, tmp_path / "layer")
    return home


def cli(*args: object):
    return CliRunner().invoke(app, [str(arg) for arg in args])


def alive(pid: int) -> bool:
    return process_start(pid) is not None


def wait_until(condition, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout}s"
        time.sleep(0.05)


def stored_run(home: PennflowHome) -> RunRecord:
    with SqliteRunStore(home.db_path) as store:
        [run] = store.list_runs().runs
    return run


def start_engine(home: PennflowHome, tmp_path: Path) -> tuple[subprocess.Popen, list[int], EngineLease]:
    """A real ``pennflow run`` whose processor (and the child it started) sleep; their pids, its lease."""
    (tmp_path / "input").mkdir()
    (tmp_path / "input" / "a.txt").write_text("a")
    path = tmp_path / "orphan.yaml"
    path.write_text(WORKFLOW.replace("%PIDS%", str(tmp_path / "pids")))
    engine = subprocess.Popen(
        [sys.executable, "-m", "pennflow.cli", "run", path, "--input", tmp_path / "input", "--layer", LAYER],
        env={**os.environ, "PENNFLOW_HOME": str(home.root)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # as a login shell would: the test's own group never gets its signals
    )
    wait_until(lambda: (tmp_path / "pids").exists() or engine.poll() is not None, "the processor's start")
    assert engine.poll() is None, "pennflow run ended early"
    pids = [int(pid) for pid in (tmp_path / "pids").read_text().split()]
    with SqliteRunStore(home.db_path) as store:
        lease = store.leases.get(stored_run(home).run_id)
    assert lease is not None and lease.pid == engine.pid
    return engine, pids, lease


def kill_9(process: subprocess.Popen | int) -> None:
    pid = process if isinstance(process, int) else process.pid
    os.kill(pid, signal.SIGKILL)
    if not isinstance(process, int):
        process.wait(10)


def layer_refs(home: PennflowHome) -> dict:
    with LocalLayers.open(home) as layers:
        return dict(layers.get(LAYER).refs)


def test_kill_9_of_pennflow_run_kills_its_processors_and_fails_the_run_at_once(home, tmp_path) -> None:
    engine, pids, lease = start_engine(home, tmp_path)
    run_id = lease.run_id
    assert list(layer_refs(home)) == [run_id]

    kill_9(engine)

    # The supervisor sees the engine's pipe close: the processor and the child it started die with it.
    wait_until(lambda: not any(alive(pid) for pid in pids), "the processors' death")
    assert lease.supervisor_pid is not None
    wait_until(lambda: not alive(lease.supervisor_pid), "the supervisor's exit once it ended the run")
    run = stored_run(home)
    assert run.status is Status.FAILED
    assert run.reason is not None and run.reason.startswith(f"engine stopped (pid {engine.pid}, last seen ")
    with SqliteRunStore(home.db_path) as store:
        steps = {step.processor_id: step for step in store.list_steps(run_id)}
        assert store.leases.get(run_id) is None and store.leases.processes(run_id) == []
    assert steps["sleeper"].status is Status.FAILED and steps["sleeper"].reason == run.reason
    assert steps["after"].status is Status.CANCELED
    assert layer_refs(home) == {}
    deleted = cli("layers", "delete", LAYER)  # no longer "in use by active run(s)"
    assert deleted.exit_code == 0, deleted.output


def test_a_command_reading_a_run_whose_engine_and_supervisor_are_gone_ends_it(home, tmp_path) -> None:
    engine, pids, lease = start_engine(home, tmp_path)
    assert lease.supervisor_pid is not None
    kill_9(lease.supervisor_pid)
    kill_9(engine)
    time.sleep(0.5)
    assert all(alive(pid) for pid in pids)  # nobody watched: the processes are orphans for now
    assert stored_run(home).status is Status.STARTED

    listed = cli("runs")
    assert listed.exit_code == 0, listed.output
    assert "FAILED" in listed.stdout and "STARTED" not in listed.stdout
    wait_until(lambda: not any(alive(pid) for pid in pids), "the orphans' death", timeout=5)
    shown = cli("status", lease.run_id)
    assert shown.exit_code == 0, shown.output
    assert f"engine stopped (pid {engine.pid}, last seen" in shown.stdout
    assert layer_refs(home) == {}


def test_a_layer_pinned_by_a_run_whose_engine_is_gone_can_be_deleted(home, tmp_path) -> None:
    engine, pids, lease = start_engine(home, tmp_path)
    assert lease.supervisor_pid is not None
    kill_9(lease.supervisor_pid)
    kill_9(engine)

    deleted = cli("layers", "delete", LAYER)  # not "in use by active run(s)": that run is over
    assert deleted.exit_code == 0, deleted.output
    assert stored_run(home).status is Status.FAILED
    wait_until(lambda: not any(alive(pid) for pid in pids), "the orphans' death", timeout=5)


def test_cancel_of_a_run_whose_engine_is_gone_ends_it_at_once(home, tmp_path) -> None:
    engine, pids, lease = start_engine(home, tmp_path)
    assert lease.supervisor_pid is not None
    kill_9(lease.supervisor_pid)
    kill_9(engine)

    canceled = cli("cancel", lease.run_id)
    assert canceled.exit_code == 0, canceled.output
    assert f"run {lease.run_id} CANCELED at once" in canceled.stdout
    run = stored_run(home)
    assert run.status is Status.CANCELED
    assert run.reason is not None
    assert run.reason.startswith(f"canceled (pennflow cancel); engine stopped (pid {engine.pid}, last seen ")
    wait_until(lambda: not any(alive(pid) for pid in pids), "the orphans' death", timeout=5)
    assert layer_refs(home) == {}


def test_a_run_that_ends_drops_its_lease_and_its_supervisor(home, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(lease_module, "HEARTBEAT_SECONDS", 0.05)
    beats = []
    original = lease_module.RunLeases.heartbeat

    def heartbeat(self, run_id, moment):
        beats.append(moment)
        original(self, run_id, moment)

    monkeypatch.setattr(lease_module.RunLeases, "heartbeat", heartbeat)
    (tmp_path / "input").mkdir()
    (tmp_path / "input" / "a.txt").write_text("a")
    workflow = parse_definition(
        "name: quick\nprocessors:\n  - id: src\n    type: data-source\n  - id: nap\n    dependsOn: [src]\n"
        "    command: [python, -c, 'import time; time.sleep(0.4)']\n"
    )
    record = run_workflow(
        workflow, definition_dir=FIXTURES, input_dir=tmp_path / "input", home=home, docker=False
    )
    assert record.status is Status.SUCCEEDED, record.reason
    assert len(beats) >= 3
    with SqliteRunStore(home.db_path) as store:
        assert store.leases.get(record.run_id) is None


def lease(**changes) -> EngineLease:
    me = os.getpid()
    fields = dict(
        run_id="r-x",
        pid=me,
        process_start=process_start(me) or "",
        boot_id=boot_id(),
        host=socket.gethostname(),
        heartbeat_at=utcnow(),
    )
    return EngineLease(**{**fields, **changes})


def test_engine_gone_tells_a_live_engine_from_a_dead_reused_or_rebooted_one() -> None:
    assert not engine_gone(lease())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert engine_gone(lease(pid=child.pid))  # exited
    assert engine_gone(lease(process_start="1"))  # the pid now belongs to a later process
    assert engine_gone(lease(boot_id="another-boot"))
    stale = utcnow() - timedelta(minutes=5)
    # On another host the pid says nothing: only the heartbeat does.
    assert not engine_gone(lease(host="elsewhere", pid=child.pid))
    assert engine_gone(lease(host="elsewhere", heartbeat_at=stale))
