"""Starting one attempt's process as cheaply as the platform allows.

``os.posix_spawn`` (vfork and exec in the C library, no Python in between) costs a fraction of
``subprocess.Popen``, which builds the child's environment and file actions in Python and waits on
an error pipe. It cannot change the child's folder, so it is used when the process starts in the
engine's own folder (``pennflow run`` from the workflow's folder); otherwise, and where there is no
``posix_spawn``, ``Popen`` does it. Either way the child leads a new session (its own process group,
for the kill of its whole tree), reads /dev/null and writes stdout and stderr to the log.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import BinaryIO, Protocol

# Python ignores these; Popen's restore_signals gives the child the defaults back (a processor in a
# shell pipeline ends on SIGPIPE, as it would from a terminal). Ignored signals survive exec.
RESTORED_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGPIPE", "SIGXFZ", "SIGXFSZ") if hasattr(signal, name)
)


class Child(Protocol):
    """What the engine needs of a started process (``subprocess.Popen`` has it too)."""

    pid: int

    def wait(self) -> int: ...


class SpawnedChild:
    """A child started by ``os.posix_spawn``: waited for with ``waitpid``, exit code as Popen's."""

    def __init__(self, pid: int):
        self.pid = pid
        self.returncode: int | None = None

    def wait(self) -> int:
        if self.returncode is None:
            _, status = os.waitpid(self.pid, 0)
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode


def start_child(argv: Sequence[str], env: Mapping[str, str], cwd: Path | None, log: BinaryIO) -> Child:
    """Start ``argv`` in its own session, stdin /dev/null, stdout and stderr to ``log``; raises
    OSError (FileNotFoundError for a missing program) when it cannot start."""
    if hasattr(os, "posix_spawn") and (cwd is None or str(cwd) == os.getcwd()):
        return _posix_spawn(argv, env, log)
    return subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _posix_spawn(argv: Sequence[str], env: Mapping[str, str], log: BinaryIO) -> SpawnedChild:
    program = _executable(argv[0], env)
    out = log.fileno()
    actions: list[tuple] = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_DUP2, out, 1),
        (os.POSIX_SPAWN_DUP2, out, 2),
    ]
    # Popen's close_fds: descriptors this process inherited open across exec (Python opens its own
    # close-on-exec) must not reach the processor either. Closed after the log is in place: the
    # log may have reused the number of one closed since.
    actions += [(os.POSIX_SPAWN_CLOSE, fd) for fd in _inherited_descriptors() if fd != out]
    pid = os.posix_spawn(
        program, list(argv), dict(env), file_actions=actions, setsid=True, setsigdef=RESTORED_SIGNALS
    )
    return SpawnedChild(pid)


def _executable(program: str, env: Mapping[str, str]) -> str:
    """The file exec would run: a path as given, else the first match on the child's PATH (as Popen)."""
    if os.sep in program:
        return program
    found = shutil.which(program, path=env.get("PATH", os.defpath))
    if found is None:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)
    return found


@cache
def _inherited_descriptors() -> tuple[int, ...]:
    """Descriptors above stderr that stay open across exec, as found once per process."""
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        return ()
    inherited = []
    for fd in fds:
        if fd <= 2:
            continue
        try:
            if os.get_inheritable(fd):
                inherited.append(fd)
        except OSError:  # the listing's own descriptor, closed by now
            continue
    return tuple(inherited)


def group_members(pgid: int) -> list[int]:
    """The pids of process group ``pgid`` on this machine (from /proc; empty where there is none)."""
    members = []
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as stat:
                    fields = stat.read().rsplit(b")", 1)[1].split()
            except OSError:  # exited meanwhile
                continue
            if int(fields[2]) == pgid:  # state, ppid, pgrp
                members.append(int(entry.name))
    return members
