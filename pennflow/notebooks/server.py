"""The session's own process: runs the Jupyter server in a processor's sandbox and ends the run.

``python -m pennflow.notebooks.server HOME RUN``, started by ``start_session``. It holds the run's
engine lease (so a reader ends the run if this process is killed), starts the server inside the
sandbox a local ``command`` processor gets (``pennflow.engine.sandbox``: pennflow's home covered,
only the requested layers, read-only, the working area the one lasting writable folder), waits for
it, then records how the session ended, releases the layers and removes the session's scratch
folder (and with it every live ``pip install``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from pennflow.engine.environment import command_environment
from pennflow.engine.home import PennflowHome
from pennflow.engine.lease import EngineLeaseKeeper
from pennflow.engine.sandbox import SandboxView, command_files, detect, wrap_command
from pennflow.layers.models import LayerType
from pennflow.layers.mounts import LayerMount
from pennflow.layers.sandbox import LayersView
from pennflow.layers.service import LocalLayers
from pennflow.notebooks.idle import jupyter_idle_arguments
from pennflow.notebooks.session import WORKFLOW, SessionFiles, SessionState
from pennflow.stores.sqlite import SqliteRunStore
from pennflow.workflow.contract import layers_python_path
from pennflow.workflow.runs import Status, utcnow

CHECK_SECONDS = 1.0  # how often a `pennflow cancel` of the session is looked for
KILL_GRACE_SECONDS = 10


def jupyter_argv(state: SessionState, work: Path) -> list[str]:
    """The server, on loopback only, rooted at the working area, shut down after the idle timeout."""
    idle = state.request.idle_timeout_seconds
    return [
        state.python, "-m", "jupyter_server",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={state.port}",
        "--ServerApp.port_retries=0",
        "--ServerApp.open_browser=False",
        f"--ServerApp.root_dir={work}",
        *jupyter_idle_arguments(idle),
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


def run_session(home: PennflowHome, run_id: str) -> int:
    files = SessionFiles.of(home, run_id)
    state = files.read_state()
    store = SqliteRunStore(home.db_path)
    lease = EngineLeaseKeeper(store.leases, run_id, home.db_path)
    lease.start()
    ended = False
    try:
        env = session_environment(state, files)
        argv = sandboxed(jupyter_argv(state, files.work), state, files, home)
        with open(files.log, "ab") as log:
            server = subprocess.Popen(
                argv, cwd=files.work, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        stopping = _on_sigterm(server)
        canceled = _wait(server, store, run_id)
        status, reason = _outcome(
            server.returncode, canceled, stopping["asked"] or files.stop_marker.exists()
        )
        _clean_up(home, state)  # before the final status: whoever reads it finds scratch gone
        now = utcnow()
        store.update_step(
            run_id, WORKFLOW, status, finished_at=now, exit_code=server.returncode, reason=reason
        )
        store.update_run(run_id, status, finished_at=now, reason=reason, exit_code=server.returncode)
        ended = True
        return 0 if status is Status.SUCCEEDED else 1
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
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    return stopping


def _wait(server: subprocess.Popen, store: SqliteRunStore, run_id: str) -> bool:
    """Wait for the server; True when ``pennflow cancel`` asked for the session to end."""
    canceled = False
    while True:
        try:
            server.wait(CHECK_SECONDS)
            return canceled
        except subprocess.TimeoutExpired:
            pass
        run = store.get_run(run_id)
        if not canceled and run is not None and run.status is Status.CANCELING:
            canceled = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGTERM)


def _outcome(code: int, canceled: bool, stop_asked: bool) -> tuple[Status, str]:
    if canceled:
        return Status.CANCELED, "canceled"
    if stop_asked:
        return Status.SUCCEEDED, "stopped"
    if code == 0:
        return Status.SUCCEEDED, "the server shut down (idle timeout, or shut down from Jupyter)"
    return Status.FAILED, f"the notebook server exited with code {code}"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print("usage: python -m pennflow.notebooks.server HOME RUN", file=sys.stderr)
        return 2
    return run_session(PennflowHome(Path(args[0])), args[1])


if __name__ == "__main__":
    sys.exit(main())
