"""Starting and stopping one processor attempt on this machine: a container when docker (or podman)
runs, else a subprocess of the processor's ``command`` (in the sandbox, ``engine.sandbox``).

Each attempt gets its own process group (``start_new_session``), so a cancel or a timeout stops the
whole tree the processor started: SIGTERM first, SIGKILL after a grace period. When the main process
exits, whatever is left in its group is killed, as in a container.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import BinaryIO

from pennflow.engine.environment import command_environment
from pennflow.engine.resource_use import reap
from pennflow.engine.run_sandbox import LauncherChild, RunSandbox
from pennflow.engine.spawn import Child, start_child
from pennflow.workflow.contract import LAYERS_MOUNT, RUN_MOUNT

DOCKER_INFO_TIMEOUT_SECONDS = 10


CONTAINER_PROGRAMS = ("docker", "podman")  # the first whose `info` answers runs containers


@cache
def container_program() -> str | None:
    """The container runtime to use: ``docker`` when ``docker info`` succeeds, else ``podman`` when
    ``podman info`` does (the same ``run`` arguments work for both); None without either. Checked
    once per process."""
    for name in CONTAINER_PROGRAMS:
        program = shutil.which(name)
        if program is not None and _answers(program):
            return name  # by name: found on PATH when each attempt starts, as a user's shell would
    return None


def container_runtime_available() -> bool:
    return container_program() is not None


def container_command_name() -> str:
    """What starts containers here (``docker`` when none answers: its error says why it cannot)."""
    return container_program() or "docker"


def _answers(program: str) -> bool:
    try:
        subprocess.run(
            [program, "info"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=DOCKER_INFO_TIMEOUT_SECONDS,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return True


@dataclass(frozen=True)
class LaunchSpec:
    """What to execute for one attempt; ``env`` is the process's complete environment."""

    argv: list[str]
    env: dict[str, str]
    cwd: Path | None = None
    container_name: str | None = None  # set for containers, so a kill reaches the container too
    wrapped: list[str] | None = None  # the processor's own command when argv runs it in a sandbox
    sandbox: RunSandbox | None = None  # the run's one sandbox starts it (engine.run_sandbox)

    @property
    def command(self) -> list[str]:
        """What the processor asked to run (what logs show)."""
        return self.wrapped if self.wrapped is not None else self.argv


def subprocess_spec(
    command: Sequence[str],
    contract_env: Mapping[str, str],
    cwd: Path,
    *,
    wrap: Callable[[Sequence[str]], list[str]] | None = None,
    inherited: Mapping[str, str] | None = None,
) -> LaunchSpec:
    """The processor's ``command`` with its environment (``engine.environment``: the contract on top
    of the inherited allow-list, PATH the system's). ``wrap`` turns the command into the one that
    starts it (the sandbox). ``inherited`` is ``inherited_environment()`` taken once per run."""
    env = command_environment(contract_env, inherited)
    argv = list(command)
    if wrap is None:
        return LaunchSpec(argv, env, cwd)
    wrapped = wrap(argv)
    return LaunchSpec(wrapped, env, cwd, wrapped=argv if wrapped != argv else None)


def missing_executable(program: str, env: Mapping[str, str], cwd: Path | None) -> bool:
    """True when ``program`` names no executable file, found as exec would find it from ``cwd``."""
    if os.sep in program:
        path = Path(cwd or ".", program)
        return not (path.is_file() and os.access(path, os.X_OK))
    return shutil.which(program, path=env.get("PATH") or os.defpath) is None


def docker_command(
    image: str,
    env: Mapping[str, str],
    *,
    run_dir: Path,
    layers: Mapping[str, Path],
    user: str,
    name: str,
    secret_names: Sequence[str] = (),
    gpus: bool = False,
) -> list[str]:
    """``docker run`` (or ``podman run``) for one attempt: the run folder at RUN_MOUNT, each layer
    read-only under LAYERS_MOUNT, the contract environment (already holding container paths), the
    caller's user; every GPU of the machine for a gpu processor (``engine.gpus``)."""
    argv = [container_command_name(), "run", "--rm", "--init", "--name", name, "--user", user]
    if gpus:
        argv += ["--gpus", "all"]
    argv += ["--mount", _bind(run_dir, RUN_MOUNT)]
    for layer, path in sorted(layers.items()):
        argv += ["--mount", _bind(path, LAYERS_MOUNT / layer, readonly=True)]
    for key, value in sorted(env.items()):
        argv += ["--env", f"{key}={value}"]
    for key in secret_names:  # the value comes from docker's environment, never the command line
        argv += ["--env", key]
    argv.append(image)
    return argv


def docker_spec(argv: list[str], name: str, secrets: Mapping[str, str] | None = None) -> LaunchSpec:
    # The docker client itself needs the caller's environment (DOCKER_HOST, config, PATH).
    return LaunchSpec(argv, {**os.environ, **(secrets or {})}, None, name)


def caller_user() -> str:
    return f"{os.getuid()}:{os.getgid()}"


def _bind(source: Path, target: object, readonly: bool = False) -> str:
    parts = ["type=bind", _csv_field(f"source={source}"), f"target={target}"]
    if readonly:
        parts.append("readonly")
    return ",".join(parts)


def _csv_field(value: str) -> str:
    """--mount takes CSV: quote a value holding a comma or a quote."""
    if "," in value or '"' in value:
        return '"' + value.replace('"', '""') + '"'
    return value


# ------------------------------------------------------------------ running


def _pidfd(pid: int) -> int | None:
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is None:
        return None
    try:
        return pidfd_open(pid)
    except OSError:  # an old kernel
        return None


def remove_container(name: str) -> None:
    """``docker rm --force``: killing the docker client does not stop its container."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(
            [container_command_name(), "rm", "--force", name],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
            check=False,
        )


@dataclass(eq=False)
class RunningProcess:
    """One started attempt. ``stopped_by`` says why pennflow terminated it, if it did."""

    spec: LaunchSpec
    popen: Child
    grace_seconds: float
    stopped_by: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _kill_timer: threading.Timer | None = None
    _deadline: threading.Timer | None = None
    _deadline_at: float = 0.0
    _pidfd: int | None = None  # readable once the process exits (Linux): waits with a timeout, no thread

    @classmethod
    def start(
        cls, spec: LaunchSpec, log: BinaryIO, *, timeout_seconds: float | None, grace_seconds: float
    ) -> RunningProcess:
        """Start the process with stdout and stderr appended to ``log``; raises OSError if it cannot."""
        if spec.sandbox is not None:
            child = spec.sandbox.start(spec.argv, spec.env, spec.cwd or Path.cwd(), log)
            running = cls(spec, child, grace_seconds)
            if timeout_seconds is not None:
                running._deadline_at = time.monotonic() + timeout_seconds
            return running
        popen = start_child(spec.argv, spec.env, spec.cwd, log)
        running = cls(spec, popen, grace_seconds)
        if timeout_seconds is not None:
            running._deadline_at = time.monotonic() + timeout_seconds
            running._pidfd = _pidfd(popen.pid)
            if running._pidfd is None:  # no pidfd here: a timer thread per attempt instead
                running._deadline = threading.Timer(timeout_seconds, running.terminate, args=("timeout",))
                running._deadline.daemon = True
                running._deadline.start()
        return running

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def host_group(self) -> int | None:
        """The attempt's process group as this machine numbers it (None inside the run's sandbox,
        whose pid namespace numbers its own; the lease lists the sandbox's group instead)."""
        return None if isinstance(self.popen, LauncherChild) else self.popen.pid

    def wait(self) -> int:
        """Block until the process exits (no polling), then end whatever it left in its group.

        The timeout needs no thread: the waiting thread blocks on the process's pidfd until the
        deadline. As when a container's main process exits, nothing the processor started outlives it.
        """
        if isinstance(self.popen, LauncherChild):
            return self._wait_in_sandbox(self.popen)
        if self._pidfd is not None:
            try:
                remaining = self._deadline_at - time.monotonic()
                if not select.select([self._pidfd], [], [], max(remaining, 0))[0]:
                    self.terminate("timeout")
            finally:
                os.close(self._pidfd)
                self._pidfd = None
        code = reap(self.popen)  # wait4: keeps the attempt's rusage (engine/resource_use.py)
        if self._deadline is not None:
            self._deadline.cancel()
        with self._lock:
            if self._kill_timer is not None:
                self._kill_timer.cancel()
        self._signal(signal.SIGKILL)
        return code

    def _wait_in_sandbox(self, child: LauncherChild) -> int:
        """The launcher reaps it (and kills what is left in its group); the deadline is a wait's."""
        remaining = self._deadline_at - time.monotonic() if self._deadline_at else None
        code = child.wait(max(remaining, 0) if remaining is not None else None)
        if code is None:
            self.terminate("timeout")
            code = child.wait()
        assert code is not None
        with self._lock:
            if self._kill_timer is not None:
                self._kill_timer.cancel()
        return code

    def terminate(self, why: str) -> None:
        """SIGTERM to the whole process group now, SIGKILL after the grace period. Idempotent."""
        with self._lock:
            if self.stopped_by is not None:
                return
            self.stopped_by = why
            self._kill_timer = threading.Timer(self.grace_seconds, self._kill)
            self._kill_timer.daemon = True
            self._kill_timer.start()
        self._signal(signal.SIGTERM)

    def _kill(self) -> None:
        self._signal(signal.SIGKILL)
        if self.spec.container_name:
            remove_container(self.spec.container_name)

    def _signal(self, sig: signal.Signals) -> None:
        if isinstance(self.popen, LauncherChild):
            self.popen.signal_group(sig)
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is gone already
            os.killpg(self.popen.pid, sig)
