"""A local processor sees its own run and nothing of the user's: real runs, real processes, bwrap.

Run A leaves a file; a processor of run B tries to read it and the user's credentials, to write
outside its run, to change its layer, and reports what it saw from inside. Then: the engine's
``kill -9`` and a cancel still reach a sandboxed processor, and without a sandbox the run says so.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pennflow.engine import processes
from pennflow.engine.environment import PROCESSOR_PATH_ENV, SYSTEM_PATH, is_secret_name
from pennflow.engine.home import PennflowHome
from pennflow.engine.local import run_workflow
from pennflow.engine.sandbox import SANDBOX_ENV, detect
from pennflow.layers.service import LocalLayers
from pennflow.workflow.definition import parse_definition
from pennflow.workflow.runs import RunRecord, Status

# Skipped only off CI (which installs bubblewrap and sets this): there a missing sandbox fails.
pytestmark = pytest.mark.skipif(
    not detect({}).available and not os.environ.get("PENNFLOW_TEST_REQUIRE_SANDBOX"),
    reason=f"no bwrap sandbox on this machine: {detect({}).why_not}",
)

# Set in the engine's environment: none may reach a processor.
SECRETS = {
    "AWS_CONTAINER_AUTHORIZATION_TOKEN": "aws-token",
    "PENNSIEVE_SECRET_ARN": "arn:aws:secretsmanager:us-east-1:1:secret:x",
    "PENNSIEVE_API_KEY": "key",
    "PENNSIEVE_API_SECRET": "secret",
    "GITHUB_TOKEN": "gh",
    "DB_PASSWORD": "hunter2",
    "OPENAI_API_KEY": "sk",
    "MY_SECRET_THING": "s",
}
# pennflow's own virtual environment: not a processor's.
VENV = {"VIRTUAL_ENV": "/some/venv", "PYTHONPATH": "/some/site-packages"}

WRITER = """
import os
from pathlib import Path
Path(os.environ["OUTPUT_DIR"], "private.txt").write_text("run A's data")
"""

PROBE = r"""
import errno, json, os
from pathlib import Path

def attempt(action):
    try:
        action()
        return "done"
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))

def read(path):
    return lambda: Path(path).read_bytes()

def write(path):
    return lambda: Path(path).write_text("escaped")

out = Path(os.environ["OUTPUT_DIR"])
atlas = Path(os.environ["LAYER_ATLAS_DIR"])
report = {
    "other_run": attempt(read(os.environ["OTHER_RUN_FILE"])),
    "aws_credentials": attempt(read(os.environ["USER_HOME"] + "/.aws/credentials")),
    "pennsieve_config": attempt(read(os.environ["USER_HOME"] + "/.pennsieve/config.ini")),
    "relative_escape": attempt(write(out / "../../../ESCAPED")),
    "absolute_escape": attempt(write(os.environ["OUTSIDE_FILE"])),
    "run_folder": attempt(write(out / ".." / "BESIDE_OUTPUT")),
    "layer_read": Path(atlas, "table.csv").read_text(),
    "layer_write": attempt(write(atlas / "new.csv")),
    "layer_overwrite": attempt(lambda: open(atlas / "table.csv", "a").close()),
    "other_runs": sorted(os.listdir(Path(os.environ["OTHER_RUN_FILE"]).parents[3])),
    "own_output": attempt(write(out / "result.txt")),
    "env": dict(os.environ),
}
(out / "report.json").write_text(json.dumps(report))
"""


@pytest.fixture
def user_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A HOME holding the credentials a processor must not see, and the engine's secrets set."""
    home = tmp_path / "user"
    (home / ".aws").mkdir(parents=True)
    (home / ".aws" / "credentials").write_text("[default]\naws_secret_access_key = x\n")
    (home / ".pennsieve").mkdir()
    (home / ".pennsieve" / "config.ini").write_text("[default]\napi_secret = y\n")
    monkeypatch.setenv("HOME", str(home))
    for name, value in {**SECRETS, **VENV}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv(SANDBOX_ENV, raising=False)
    return home


@pytest.fixture
def home(tmp_path: Path) -> PennflowHome:
    home = PennflowHome(tmp_path / "pennflow")
    (tmp_path / "layer").mkdir()
    (tmp_path / "layer" / "table.csv").write_text("a,b\n")
    with LocalLayers.open(home) as layers:
        layers.populate_from("atlas", tmp_path / "layer")
    return home


def run(definition: str, home: PennflowHome, definition_dir: Path, input_dir: Path, **kwargs) -> RunRecord:
    return run_workflow(
        parse_definition(definition),
        definition_dir=definition_dir,
        input_dir=input_dir,
        home=home,
        docker=False,
        **kwargs,
    )


def flow(step: str) -> str:
    return f"name: sandboxed\nprocessors:\n  - {{id: src, type: data-source}}\n  - {step}\n"


@pytest.fixture
def scripts(tmp_path: Path) -> Path:
    folder = tmp_path / "definitions"
    folder.mkdir()
    (folder / "writer.py").write_text(WRITER)
    (folder / "probe.py").write_text(PROBE)
    (tmp_path / "input").mkdir()
    (tmp_path / "input" / "a.txt").write_text("a")
    return folder


def test_a_processor_of_run_b_sees_nothing_of_run_a_or_the_users_home(
    user_home, home, scripts, tmp_path, monkeypatch
) -> None:
    run_a = run(
        flow("{id: writer, command: [python, writer.py], dependsOn: [src]}"),
        home,
        scripts,
        tmp_path / "input",
    )
    assert run_a.status is Status.SUCCEEDED, run_a.reason
    private = home.run_dir(run_a.run_id) / "writer" / "output" / "private.txt"
    assert private.read_text() == "run A's data"

    # An interpreter named explicitly, and no PENNFLOW_PROCESSOR_PATH: the processor's own PATH.
    monkeypatch.delenv(PROCESSOR_PATH_ENV)
    outside = Path(sys.prefix) / f"ESCAPED-{tmp_path.name}"  # on the machine's own disk, not /tmp
    params = {"OTHER_RUN_FILE": str(private), "USER_HOME": str(user_home), "OUTSIDE_FILE": str(outside)}
    step = (
        f"{{id: probe, command: [{json.dumps(sys.executable)}, probe.py], dependsOn: [src], "
        f"layers: [atlas], defaultParams: {json.dumps(params)}}}"
    )
    try:
        run_b = run(flow(step), home, scripts, tmp_path / "input")
    finally:
        escaped_to_disk = outside.exists()
        outside.unlink(missing_ok=True)
    assert not escaped_to_disk
    assert run_b.status is Status.SUCCEEDED, run_b.reason
    output = home.run_dir(run_b.run_id) / "probe" / "output"
    report = json.loads((output / "report.json").read_text())

    assert report["other_run"] == "ENOENT"
    assert report["other_runs"] == [run_b.run_id]  # run A's folder is not even listed
    assert report["aws_credentials"] == report["pennsieve_config"] == "ENOENT"
    assert report["relative_escape"] == "EROFS"  # pennflow's home: its OUTPUT_DIR alone is writable
    assert report["absolute_escape"] == "EROFS"
    assert report["run_folder"] == "EROFS"
    assert report["layer_read"] == "a,b\n"
    assert report["layer_write"] == "EROFS"
    assert report["layer_overwrite"] in {"EROFS", "EACCES"}  # the published file has no write bits either
    assert report["own_output"] == "done" and (output / "result.txt").read_text() == "escaped"
    # Nothing it wrote landed anywhere but its OUTPUT_DIR.
    escaped = [p for p in tmp_path.rglob("*ESCAPED*")] + [p for p in tmp_path.rglob("BESIDE_OUTPUT")]
    assert escaped == []
    assert sorted(p.name for p in (home.layers_dir / ".versions" / "atlas" / "1").iterdir()) == ["table.csv"]

    env = report["env"]
    assert not [name for name in env if name in SECRETS]
    # Secret-like names a processor has are the contract's own, given on purpose (docs: the hosts).
    assert {name for name in env if is_secret_name(name)} == {"PENNSIEVE_API_HOST", "PENNSIEVE_API_HOST2"}
    assert env["PATH"] == os.pathsep.join(SYSTEM_PATH)
    assert "VIRTUAL_ENV" not in env and VENV["PYTHONPATH"] not in env["PYTHONPATH"]  # the layer's only
    assert env["PYTHONPATH"].startswith(f"{env['LAYERS_DIR']}/atlas/")
    assert env["HOME"] == str(user_home) and env["OUTPUT_DIR"] == str(output)


SLEEPER = """
import os, signal, subprocess, sys, time
from pathlib import Path

def stop(signum, frame):
    Path(os.environ["OUTPUT_DIR"], "terminated.txt").write_text("got SIGTERM")
    sys.exit(0)

signal.signal(signal.SIGTERM, stop)
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "pennflow-sandbox-child"])
Path(os.environ["OUTPUT_DIR"], "started.txt").write_text("")
time.sleep(120)
"""


def sandboxed_pids(marker: str) -> list[int]:
    """The host's pids of processes whose command line holds ``marker`` (inside, pids differ)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if marker.encode() in cmdline and state != "Z":
                pids.append(int(entry.name))
    return pids


def wait_until(condition, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout}s"
        time.sleep(0.05)


def test_kill_9_of_the_engine_kills_the_sandboxed_processor_and_its_children(
    user_home, scripts, tmp_path
) -> None:
    marker = f"pennflow-sandbox-{os.getpid()}-{time.monotonic_ns()}"
    (scripts / "sleeper.py").write_text(SLEEPER.replace("pennflow-sandbox-child", marker))
    definition = scripts / "flow.yaml"
    definition.write_text(flow(f"{{id: sleeper, command: [python, sleeper.py, {marker}], dependsOn: [src]}}"))
    engine = subprocess.Popen(
        [sys.executable, "-m", "pennflow.cli", "run", definition, "--input", tmp_path / "input"],
        env={**os.environ, "PENNFLOW_HOME": str(tmp_path / "engine-home")},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_until(
            lambda: len(sandboxed_pids(marker)) >= 2 or engine.poll() is not None, "the processor's start"
        )
        assert engine.poll() is None, "pennflow run ended early"
        pids = sandboxed_pids(marker)  # the processor and its child (the run's sandbox names neither)
        os.kill(engine.pid, signal.SIGKILL)
        engine.wait(10)
        wait_until(lambda: not sandboxed_pids(marker), f"the death of {pids}")
    finally:
        if engine.poll() is None:
            engine.kill()


def test_a_cancel_gives_a_sandboxed_processor_its_sigterm_and_grace(
    user_home, home, scripts, tmp_path
) -> None:
    marker = f"pennflow-sandbox-{os.getpid()}-{time.monotonic_ns()}"
    (scripts / "sleeper.py").write_text(SLEEPER.replace("pennflow-sandbox-child", marker))
    cancel = threading.Event()
    result: list[RunRecord] = []
    step = "{id: sleeper, command: [python, sleeper.py], dependsOn: [src]}"
    thread = threading.Thread(
        target=lambda: result.append(run(flow(step), home, scripts, tmp_path / "input", cancel_event=cancel))
    )
    thread.start()
    wait_until(lambda: len(sandboxed_pids(marker)) == 1, "the processor's child")
    cancel.set()
    thread.join(15)
    assert not thread.is_alive()
    [record] = result
    assert record.status is Status.CANCELED
    output = home.run_dir(record.run_id) / "sleeper" / "output"
    assert (output / "terminated.txt").read_text() == "got SIGTERM"  # not killed with bwrap
    wait_until(lambda: not sandboxed_pids(marker), "the child's death")


def test_without_a_sandbox_the_run_says_so_in_one_line(
    user_home, home, scripts, tmp_path, monkeypatch, caplog
) -> None:
    monkeypatch.setenv(SANDBOX_ENV, "off")
    params = {"USER_HOME": str(user_home)}
    step = f"{{id: reader, command: [python, -c, {json.dumps(READ_CREDENTIALS)}], dependsOn: [src], defaultParams: {json.dumps(params)}}}"
    with caplog.at_level(logging.WARNING, logger=processes.__name__):
        record = run(flow(step), home, scripts, tmp_path / "input")
    assert record.status is Status.SUCCEEDED, record.reason
    [line] = [r.getMessage() for r in caplog.records if r.name == processes.__name__]
    assert line == detect({SANDBOX_ENV: "off"}).notice
    assert line.startswith("processors run without a sandbox (PENNFLOW_SANDBOX=off)") and "\n" not in line
    # What the line warns of: unsandboxed, the credentials are readable (the environment still filtered).
    output = home.run_dir(record.run_id) / "reader" / "output"
    seen = json.loads((output / "seen.json").read_text())
    assert seen["credentials"] == "[default]\naws_secret_access_key = x\n"
    assert not [name for name in seen["env"] if name in SECRETS]


READ_CREDENTIALS = (
    "import json, os; from pathlib import Path; "
    "creds = Path(os.environ['USER_HOME'], '.aws', 'credentials').read_text(); "
    "Path(os.environ['OUTPUT_DIR'], 'seen.json').write_text(json.dumps({'credentials': creds, 'env': dict(os.environ)}))"
)


def test_a_sandboxed_processor_killed_by_a_signal_says_so_as_unsandboxed(
    user_home, home, scripts, tmp_path
) -> None:
    crash = "import os, signal; print('about to crash', flush=True); os.kill(os.getpid(), signal.SIGSEGV)"
    record = run(
        flow(f"{{id: crash, command: [python, -c, {json.dumps(crash)}], dependsOn: [src]}}"),
        home,
        scripts,
        tmp_path / "input",
    )
    assert record.status is Status.FAILED
    assert record.reason == "processor 'crash' failed: killed by signal SIGSEGV: about to crash"
    assert record.exit_code == -signal.SIGSEGV


def test_a_timeout_stops_a_sandboxed_processor_with_sigterm_not_the_grace_kill(
    user_home, home, scripts, tmp_path
) -> None:
    step = "{id: slow, command: [sleep, '60'], dependsOn: [src], timeoutSeconds: 1}"
    started = time.monotonic()
    record = run(flow(step), home, scripts, tmp_path / "input", kill_grace=30)
    assert time.monotonic() - started < 10  # SIGTERM ended it; the SIGKILL would have come after 30 s
    assert (record.status, record.reason) == (Status.FAILED, "processor 'slow' failed: timed out after 1s")
