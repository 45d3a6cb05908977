"""The run's one sandbox (``engine.run_sandbox``): real bwrap, a real launcher, real processes.

Each attempt started through the launcher gets its own environment, folder, process group, exit
status and rusage; a signal reaches its group; a missing program fails as Popen's would; the
launcher and every attempt die with the engine (``kill -9``); a run starts bwrap once, not per
processor.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pennflow.engine import run_sandbox
from pennflow.engine.home import PennflowHome
from pennflow.engine.local import run_workflow
from pennflow.engine.run_sandbox import RunSandbox
from pennflow.engine.sandbox import SandboxView, detect
from pennflow.workflow.definition import parse_definition
from pennflow.workflow.runs import Status

pytestmark = pytest.mark.skipif(
    not detect({}).available and not os.environ.get("PENNFLOW_TEST_REQUIRE_SANDBOX"),
    reason=f"no bwrap sandbox on this machine: {detect({}).why_not}",
)

ENV = {"PATH": "/usr/bin:/bin", "GREETING": "hello", "LANG": "C.UTF-8"}  # no C locale for Python to coerce


@pytest.fixture
def sandbox(tmp_path: Path):
    out = tmp_path / "out"
    out.mkdir()
    view = SandboxView(
        cwd=tmp_path,
        hidden=[],
        readable=[tmp_path, Path(sys.base_prefix), Path(sys.executable).resolve().parent],
        writable=[out],
    )
    box = RunSandbox(detect().bwrap or "bwrap", view)
    box.start_sandbox()
    yield box
    box.close()


def test_an_attempt_gets_its_environment_folder_and_group_and_reports_its_exit_and_use(
    sandbox: RunSandbox, tmp_path: Path
) -> None:
    script = (
        "import json, os, time\n"
        "end = time.process_time() + 0.5\n"
        "while time.process_time() < end: pass\n"
        "b = bytearray(100 * 1024 * 1024)\n"
        "print(json.dumps({'env': dict(os.environ), 'cwd': os.getcwd(), 'sid': os.getsid(0), 'pid': os.getpid(),"
        " 'stdin': os.read(0, 10).decode()}), flush=True)\n"
        "raise SystemExit(3)\n"
    )
    with open(tmp_path / "attempt.log", "ab") as log:
        child = sandbox.start([sys.executable, "-c", script], ENV, tmp_path, log)
        assert child.wait(30) == 3
    seen = json.loads((tmp_path / "attempt.log").read_text())
    assert seen["env"] == ENV  # exactly what was asked: nothing of the engine's or the launcher's
    assert seen["cwd"] == str(tmp_path)
    assert seen["sid"] == seen["pid"] == child.pid  # leads its own session and process group
    assert seen["stdin"] == ""
    assert child.cpu_seconds is not None and 0.4 <= child.cpu_seconds <= 5
    assert child.peak_rss_bytes is not None and child.peak_rss_bytes >= 100 * 1024 * 1024


def test_a_signal_reaches_the_attempts_group_and_its_death_reads_as_unsandboxed(
    sandbox: RunSandbox, tmp_path: Path
) -> None:
    script = (
        "import subprocess, time; subprocess.Popen(['sleep', '60']); print('up', flush=True); time.sleep(60)"
    )
    with open(tmp_path / "attempt.log", "ab") as log:
        child = sandbox.start([sys.executable, "-c", script], ENV, tmp_path, log)
        deadline = time.monotonic() + 15
        while b"up" not in (tmp_path / "attempt.log").read_bytes():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert child.wait(0.2) is None  # still running
        child.signal_group(signal.SIGTERM)
        assert child.wait(15) == -signal.SIGTERM


def test_a_missing_program_fails_to_start_as_popen_would(sandbox: RunSandbox, tmp_path: Path) -> None:
    with open(tmp_path / "attempt.log", "ab") as log, pytest.raises(FileNotFoundError):
        sandbox.start(["no-such-program-here"], ENV, tmp_path, log)
    with open(tmp_path / "attempt.log", "ab") as log:  # the sandbox goes on
        assert sandbox.start(["true"], ENV, tmp_path, log).wait(15) == 0


ENGINE = """
import sys, time
from pathlib import Path
from pennflow.engine.run_sandbox import RunSandbox
from pennflow.engine.sandbox import SandboxView, detect
folder = Path(sys.argv[1])
box = RunSandbox(detect().bwrap, SandboxView(cwd=folder, hidden=[], readable=[folder], writable=[]))
box.start_sandbox()
with open(folder / "attempt.log", "ab") as log:
    box.start(["sleep", "120", sys.argv[2]], {"PATH": "/usr/bin:/bin"}, folder, log)
print("started", flush=True)
time.sleep(120)
"""


def _pids_with(marker: str, besides: int) -> list[int]:
    """Live processes whose command line holds ``marker``, but ``besides`` (the engine's own)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != besides:
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                    if state != "Z":
                        found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_the_launcher_and_its_attempts_die_with_the_engine_on_kill_9(tmp_path: Path) -> None:
    marker = f"{os.getpid()}{time.monotonic_ns()}"[-9:]
    engine = subprocess.Popen(
        [sys.executable, "-c", ENGINE, str(tmp_path), marker],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert engine.stdout is not None and engine.stdout.readline() == b"started\n"
        # The launcher answers once it has forked; the attempt's exec may come a moment later.
        deadline = time.monotonic() + 15
        while not _pids_with(marker, besides=engine.pid):
            assert time.monotonic() < deadline, "the attempt never started"
            time.sleep(0.05)
        assert len(_pids_with(marker, besides=engine.pid)) == 1  # the attempt
        engine.kill()
        engine.wait(10)
        deadline = time.monotonic() + 15
        while _pids_with(marker, besides=engine.pid):
            assert time.monotonic() < deadline, "the attempt outlived its engine"
            time.sleep(0.05)
    finally:
        if engine.poll() is None:
            engine.kill()


def test_a_run_starts_one_sandbox_for_all_its_processors(tmp_path: Path, monkeypatch) -> None:
    starts: list[int] = []
    original = RunSandbox.start_sandbox

    def counted(self: RunSandbox) -> None:
        starts.append(1)
        original(self)

    monkeypatch.setattr(run_sandbox.RunSandbox, "start_sandbox", counted)
    (tmp_path / "input").mkdir()
    (tmp_path / "input" / "a.txt").write_text("a")
    steps = "".join(
        f"  - {{id: p{i}, command: [sh, -c, 'echo {i} > $OUTPUT_DIR/out.txt'], dependsOn: [src]}}\n"
        for i in range(5)
    )
    workflow = parse_definition(
        textwrap.dedent("name: many\nprocessors:\n  - {id: src, type: data-source}\n") + steps
    )
    home = PennflowHome(tmp_path / "home")
    record = run_workflow(
        workflow, definition_dir=tmp_path, input_dir=tmp_path / "input", home=home, docker=False
    )
    assert record.status is Status.SUCCEEDED, record.reason
    assert starts == [1]
    for i in range(5):
        assert (home.run_dir(record.run_id) / f"p{i}" / "output" / "out.txt").read_text() == f"{i}\n"


READ_ENVIRONS = """
import json, os
seen = {}
for name in os.listdir("/proc"):
    if name.isdigit() and int(name) != os.getpid():
        try:
            seen[name] = open(f"/proc/{name}/environ", "rb").read().decode(errors="replace")
        except OSError as exc:
            seen[name] = f"unreadable: {exc.errno}"
print(json.dumps(seen))
"""


def test_nothing_in_the_sandbox_holds_the_engines_environment(sandbox_secret: str, tmp_path: Path) -> None:
    """A processor can read the environment of what shares its pid namespace (the launcher, bwrap's
    init): none of it may be the engine's, which holds the user's credentials."""
    out = tmp_path / "out"
    out.mkdir()
    view = SandboxView(cwd=tmp_path, hidden=[], readable=[tmp_path, Path(sys.base_prefix)], writable=[out])
    box = RunSandbox(detect().bwrap or "bwrap", view)
    box.start_sandbox()
    try:
        with open(tmp_path / "attempt.log", "ab") as log:
            assert box.start([sys.executable, "-c", READ_ENVIRONS], ENV, tmp_path, log).wait(30) == 0
    finally:
        box.close()
    seen = json.loads((tmp_path / "attempt.log").read_text())
    assert len(seen) >= 2  # bwrap's init and the launcher, at least
    assert not [pid for pid, environ in seen.items() if sandbox_secret in environ]


@pytest.fixture
def sandbox_secret(monkeypatch) -> str:
    secret = f"engine-only-{time.monotonic_ns()}"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("PENNSIEVE_API_SECRET", secret)
    return secret


def test_a_sandbox_that_cannot_start_says_why(tmp_path: Path) -> None:
    box = RunSandbox(
        detect().bwrap or "bwrap", SandboxView(cwd=tmp_path / "gone", hidden=[], readable=[], writable=[])
    )
    box.start_sandbox()
    try:
        with open(tmp_path / "attempt.log", "ab") as log, pytest.raises(run_sandbox.SandboxGone) as raised:
            box.start(["true"], ENV, tmp_path, log)
    finally:
        box.close()
    assert "sandbox" in str(raised.value) and "chdir" in str(raised.value).lower()


def test_an_attempt_in_another_folder_is_forked_there_with_the_same_contract(
    sandbox: RunSandbox, tmp_path: Path
) -> None:
    """Every processor of a run starts in its definition's folder (the launcher's: posix_spawn);
    another folder takes the fork path, which must keep the same contract."""
    elsewhere = tmp_path / "out"
    script = "import json, os; print(json.dumps({'cwd': os.getcwd(), 'sid': os.getsid(0), 'pid': os.getpid(), 'env': dict(os.environ)}))"
    with open(tmp_path / "attempt.log", "ab") as log:
        child = sandbox.start([sys.executable, "-c", script], ENV, elsewhere, log)
        assert child.wait(30) == 0
        with pytest.raises(FileNotFoundError):
            sandbox.start(["no-such-program-here"], ENV, elsewhere, log)
    seen = json.loads((tmp_path / "attempt.log").read_text())
    assert seen["cwd"] == str(elsewhere) and seen["sid"] == seen["pid"] == child.pid
    assert seen["env"] == ENV
