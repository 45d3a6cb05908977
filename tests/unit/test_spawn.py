"""An attempt's process, started by posix_spawn (in the engine's folder) or Popen (elsewhere): the
same session, streams, exit codes and errors either way."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pennflow.engine import spawn
from pennflow.engine.spawn import SpawnedChild, start_child

SCRIPT = """
import os, sys
print("out", os.getsid(0) == os.getpid(), os.getpgid(0) == os.getpid(), flush=True)
print("err", sys.stdin.read() == "", file=sys.stderr, flush=True)
open_fds = sorted(int(fd) for fd in os.listdir("/proc/self/fd"))
print("fds", open_fds, flush=True)
sys.exit(int(sys.argv[1]))
"""


def env() -> dict[str, str]:
    return {"PATH": os.path.dirname(sys.executable) + os.pathsep + os.defpath}


@pytest.fixture(params=["posix_spawn", "popen"])
def where(request, tmp_path, monkeypatch) -> Path | None:
    """posix_spawn runs when the child starts in the engine's folder; Popen elsewhere."""
    monkeypatch.chdir(tmp_path)
    return None if request.param == "posix_spawn" else tmp_path.parent


def start(tmp_path: Path, argv: list[str], cwd: Path | None):
    with open(tmp_path / "attempt.log", "ab") as log:
        return start_child(argv, env(), cwd, log)


def test_the_child_leads_its_own_session_reads_nothing_and_logs_both_streams(tmp_path, where) -> None:
    child = start(tmp_path, ["python", "-c", SCRIPT, "3"], where)
    assert child.wait() == 3
    lines = (tmp_path / "attempt.log").read_text().splitlines()
    assert lines[0] == "out True True"
    assert lines[1] == "err True"
    assert lines[2] == "fds [0, 1, 2, 3]"  # stdio and the listing's own descriptor, nothing inherited


def test_the_fast_path_is_posix_spawn_only_in_the_engines_folder(tmp_path, where) -> None:
    child = start(tmp_path, ["python", "-c", "pass"], where)
    assert child.wait() == 0
    expected = SpawnedChild if where is None else subprocess.Popen
    assert isinstance(child, expected)


def test_the_signals_python_ignores_are_back_to_their_defaults_in_the_child(tmp_path, where) -> None:
    """As Popen's restore_signals: a processor in a shell pipeline ends on SIGPIPE. (grep, not
    python, reads its own status: Python ignores SIGPIPE itself when it starts.)"""
    child = start(tmp_path, ["grep", "SigIgn", "/proc/self/status"], where)
    assert child.wait() == 0
    ignored = int((tmp_path / "attempt.log").read_text().split()[-1], 16)
    assert [sig for sig in (signal.SIGPIPE, signal.SIGXFSZ) if ignored & (1 << (sig - 1))] == []


def test_a_signal_is_a_negative_exit_code_as_with_popen(tmp_path, where) -> None:
    child = start(
        tmp_path, ["python", "-c", "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"], where
    )
    assert child.wait() == -signal.SIGTERM
    assert child.wait() == -signal.SIGTERM  # waited once, remembered


def test_a_missing_program_is_file_not_found(tmp_path, where) -> None:
    with pytest.raises(FileNotFoundError) as raised:
        start(tmp_path, ["no-such-program-anywhere"], where)
    assert raised.value.strerror == os.strerror(2)


def test_a_relative_program_path_runs_from_the_engines_folder(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    script = tmp_path / "hello.sh"
    script.write_text("#!/bin/sh\necho hello from the script\n")
    script.chmod(0o755)
    child = start(tmp_path, ["./hello.sh"], None)
    assert child.wait() == 0
    assert "hello from the script" in (tmp_path / "attempt.log").read_text()


def test_a_descriptor_the_engine_inherited_does_not_reach_the_processor(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    read_end, write_end = os.pipe()
    os.set_inheritable(write_end, True)  # as a shell's redirect would leave it
    spawn._inherited_descriptors.cache_clear()  # found again, with this one
    try:
        child = start(tmp_path, ["python", "-c", SCRIPT, "0"], None)
        assert child.wait() == 0
    finally:
        os.close(write_end)
        os.close(read_end)
        spawn._inherited_descriptors.cache_clear()
    assert isinstance(child, SpawnedChild)
    assert (tmp_path / "attempt.log").read_text().splitlines()[2] == "fds [0, 1, 2, 3]"
