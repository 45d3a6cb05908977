"""The session's own process: runs the Jupyter server in a processor's sandbox and ends the run.

``python -m pennflow.notebooks.server HOME RUN``, started by ``start_session``. It holds the run's
engine lease (so a reader ends the run if this process is killed), starts the server inside the
sandbox a local ``command`` processor gets (``pennflow.engine.sandbox``: pennflow's home covered,
only the requested layers, read-only, the working area the one lasting writable folder), waits for
it, then records how the session ended, releases the layers and removes the session's scratch
folder (and with it every live ``pip install``). ``serve`` (the server from start to end, and the idle
timeout) is shared with an interactive processor's session (``notebooks.step``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pennflow.engine.environment import command_environment
from pennflow.engine.home import PennflowHome
from pennflow.engine.lease import EngineLeaseKeeper
from pennflow.engine.sandbox import SandboxView, command_files, detect, wrap_command
from pennflow.layers.models import LayerType
from pennflow.layers.mounts import LayerMount
from pennflow.layers.sandbox import LayersView
from pennflow.layers.service import LocalLayers
from pennflow.notebooks.idle import IdleWatch
from pennflow.notebooks.session import (
    STOP_TIMEOUT_SECONDS,
    WORKFLOW,
    SessionFiles,
    SessionState,
    find_session,
    request_shutdown,
)
from pennflow.stores.sqlite import SqliteRunStore
from pennflow.workflow.contract import layers_python_path
from pennflow.workflow.runs import Status, utcnow

CHECK_SECONDS = 1.0  # how often a `pennflow cancel` of the session is looked for
KILL_GRACE_SECONDS = 10


def jupyter_argv(state: SessionState, work: Path) -> list[str]:
    """The server, on loopback only, rooted at the working area. The idle timeout is ``IdleWatch``'s,
    not the server's (it records why the session stopped; a culled kernel would count as activity)."""
    return [
        state.python, "-m", "jupyter_server",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={state.port}",
        "--ServerApp.port_retries=0",
        "--ServerApp.open_browser=False",
        f"--ServerApp.root_dir={work}",
        # Root here is a sandbox's user without capabilities (no user of this machine gets more).
        *(["--ServerApp.allow_root=True"] if os.geteuid() == 0 else []),
    ]  # fmt: skip


def session_environment(state: SessionState, files: SessionFiles) -> dict[str, str]:
    """A processor's inherited allow-list, plus where the session's packages and scratch files go.

    PYTHONPATH puts the session's own installs first (a live ``pip install`` may upgrade a layer's
    package for the session), then each layer's package folders; PIP_TARGET sends ``pip install``
    (and ``%pip install``) into scratch. The token reaches the server by variable, not argv (``ps``)."""
    scratch = Path(state.scratch)
    site = scratch / "site-packages"
    layers_path = layers_python_path(sorted(state.layers), files.layers)
    contract = {
        "HOME": str(scratch / "home"),
        "OUTPUT_DIR": str(files.work),
        "LAYERS_DIR": str(files.layers),
        "INPUT_DIR": str(files.input),
        "PIP_TARGET": str(site),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PYTHONPATH": os.pathsep.join([str(site), *([layers_path] if layers_path else [])]),
        "JUPYTER_TOKEN": state.token,
        "JUPYTER_RUNTIME_DIR": str(scratch / "runtime"),
        "JUPYTER_CONFIG_DIR": str(scratch / "config"),
        "JUPYTER_DATA_DIR": str(scratch / "data"),
        "IPYTHONDIR": str(scratch / "ipython"),
        "PENNFLOW_RUN_ID": state.run_id,
    }
    for folder in ("home", "site-packages", "runtime"):
        (scratch / folder).mkdir(parents=True, exist_ok=True)
    return command_environment(contract)


def sandboxed(argv: Sequence[str], state: SessionState, files: SessionFiles, home: PennflowHome) -> list[str]:
    """``argv`` in a processor's sandbox (bwrap), or in the layers sandbox alone where bwrap is missing."""
    layers = {name: Path(path) for name, path in state.layers.items()}
    sandbox = detect()
    if sandbox.bwrap is None:
        print(f"pennflow: {sandbox.notice}", file=sys.stderr, flush=True)
        mounts = [LayerMount(name, LayerType.DATA, 0, None, str(path)) for name, path in layers.items()]
        return LayersView.create(files.layers, mounts, hidden=home.layers_dir).wrap(argv)
    cwd = files.work
    view = SandboxView(
        cwd=cwd,
        hidden=[home.root],
        readable=[files.input, *command_files(argv, cwd, os.environ.get("PATH", ""))],
        writable=[files.work, Path(state.scratch)],
        layers_dir=files.layers,
        layers=layers,
    )
    return wrap_command(argv, sandbox.bwrap, view)


@dataclass(frozen=True)
class Ending:
    status: Status
    reason: str
    exit_code: int | None


def serve(home: PennflowHome, state: SessionState, cancel_asked: Callable[[], bool]) -> Ending:
    """Run the server in its sandbox until it ends: stopped (``notebook stop``, SIGTERM, the idle
    timeout, shut down from Jupyter), canceled (``cancel_asked``) or failed."""
    files = state.files
    env = session_environment(state, files)
    argv = sandboxed(jupyter_argv(state, files.work), state, files, home)
    with open(files.log, "ab") as log:
        server = subprocess.Popen(
            argv, cwd=files.work, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    stopping = _on_sigterm(server)
    canceled, idle = _wait(server, cancel_asked, IdleWatch(state))
    status, reason = _outcome(
        server.returncode, canceled, stopping["asked"] or files.stop_marker.exists(), idle
    )
    return Ending(status, reason, server.returncode)


def run_session(home: PennflowHome, run_id: str) -> int:
    state = find_session(home, run_id)
    if state is None:
        print(f"pennflow: run {run_id} has no readable session state", file=sys.stderr)
        return 2
    store = SqliteRunStore(home.db_path)
    lease = EngineLeaseKeeper(store.leases, run_id, home.db_path)
    lease.start()
    ended = False

    def canceled() -> bool:
        run = store.get_run(run_id)
        return run is not None and run.status is Status.CANCELING

    try:
        ending = serve(home, state, canceled)
        _clean_up(home, state)  # before the final status: whoever reads it finds scratch gone
        now = utcnow()
        store.update_step(
            run_id, WORKFLOW, ending.status, finished_at=now, exit_code=ending.exit_code, reason=ending.reason
        )
        store.update_run(
            run_id, ending.status, finished_at=now, reason=ending.reason, exit_code=ending.exit_code
        )
        ended = True
        return 0 if ending.status is Status.SUCCEEDED else 1
    finally:
        if not ended:
            _clean_up(home, state)
        lease.close(ended)
        store.close()


def _clean_up(home: PennflowHome, state: SessionState) -> None:
    """Release the layers' pins and remove the session's scratch (its live installs with it)."""
    with contextlib.suppress(Exception), LocalLayers.open(home) as layers:
        layers.release(list(state.layers), state.run_id)
    shutil.rmtree(state.scratch, ignore_errors=True)


def _on_sigterm(server: subprocess.Popen) -> dict[str, bool]:
    """SIGTERM (``notebook stop`` when the server does not answer): end the server's process group."""
    stopping = {"asked": False}

    def stop(signum, frame):
        stopping["asked"] = True
        _end_group(server)

    signal.signal(signal.SIGTERM, stop)
    return stopping


def _wait(
    server: subprocess.Popen, cancel_asked: Callable[[], bool], idle: IdleWatch
) -> tuple[bool, str | None]:
    """Wait for the server: (canceled, why it was idle) once it has ended."""
    canceled = False
    idle_reason: str | None = None
    while True:
        try:
            server.wait(CHECK_SECONDS)
            return canceled, idle_reason
        except subprocess.TimeoutExpired:
            pass
        if canceled or idle_reason:
            continue
        if cancel_asked():
            canceled = True
            _end_group(server)
            continue
        idle_reason = idle.check()
        if idle_reason:  # a clean shutdown: kernels first, then the server; a kill if it does not answer
            if not request_shutdown(idle.state):
                _end_group(server)
            _kill_later(server, STOP_TIMEOUT_SECONDS)


def _end_group(server: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGTERM)


def _kill_later(server: subprocess.Popen, seconds: float) -> None:
    def kill() -> None:
        if server.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGKILL)

    timer = threading.Timer(seconds, kill)
    timer.daemon = True
    timer.start()


def _outcome(code: int, canceled: bool, stop_asked: bool, idle: str | None) -> tuple[Status, str]:
    if canceled:
        return Status.CANCELED, "canceled"
    if idle:
        return Status.SUCCEEDED, idle
    if stop_asked:
        return Status.SUCCEEDED, "stopped"
    if code == 0:
        return Status.SUCCEEDED, "stopped: shut down from Jupyter"
    return Status.FAILED, f"the notebook server exited with code {code}"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print("usage: python -m pennflow.notebooks.server HOME RUN", file=sys.stderr)
        return 2
    return run_session(PennflowHome(Path(args[0])), args[1])


if __name__ == "__main__":
    sys.exit(main())
