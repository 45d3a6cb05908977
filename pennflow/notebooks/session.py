"""Starting and stopping a local notebook session: a run whose one step is a Jupyter server.

A session is a run (workflow ``notebook``, one step ``notebook``): STARTED while its server runs,
in ``pennflow runs``/``status`` like any other. Its folders, under the run's folder:

    runs/<run>/notebook/workspace/    the working area: the server's root, the only place writes last
    runs/<run>/notebook/input/        INPUT_DIR: the dataset (or packages) downloaded first, read-only
    runs/<run>/notebook/layers/       LAYERS_DIR: the requested layers, read-only
    runs/<run>/notebook/processor.log the server's log
    runs/<run>/session.json           port, token, pid, folders (owner-only: the token opens the server)

An interactive processor of a workflow (``pennflow run``, see ``notebooks.step``) is a session too:
its folders are the processor's (the working area is its OUTPUT_DIR), its ``session.json`` the same.

Everything else the session writes (``pip install``, HOME, Jupyter's runtime files) goes to a
scratch folder made for the session and removed when it ends, so a live install lasts one session.

A session ends SUCCEEDED when it is stopped (``pennflow notebook stop``, the idle timeout, or shut
down from Jupyter): that is how a session is meant to end, and its files are its result. It ends
CANCELED by ``pennflow cancel``, FAILED when the server exits on its own with an error.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pennflow.engine.home import PennflowHome
from pennflow.engine.session_step import ENDING_NAME
from pennflow.layers.models import LayerError, LayerName
from pennflow.layers.service import LocalLayers
from pennflow.notebooks.environments import misfit_reason, session_python
from pennflow.stores.sqlite import SqliteRunStore
from pennflow.workflow.contract import RunLayout
from pennflow.workflow.runs import RunRecord, Status, StepRecord, new_run_id, utcnow

if TYPE_CHECKING:
    from pennflow.pennsieve import PennsieveClient

WORKFLOW = "notebook"  # the run's workflow name, and its one step's id
DEFAULT_IDLE_SECONDS = 3600
MIN_IDLE_SECONDS = 5  # the idle check runs every few seconds: a shorter timeout means nothing more
MAX_IDLE_SECONDS = 7 * 24 * 3600
IDLE_ENV = "PENNFLOW_NOTEBOOK_IDLE_SECONDS"  # the setting: every session's idle timeout by default
STATE_NAME = "session.json"
START_TIMEOUT_SECONDS = 60
STOP_TIMEOUT_SECONDS = 30
POLL_SECONDS = 0.2


class NotebookError(Exception):
    """A refusal a user reads as one message (``str(exc)``): the request can never work as given."""


class SessionFailed(NotebookError):
    """The session was tried and failed: its server or data did not come, or it did not stop."""


class SessionRequest(BaseModel):
    """What ``pennflow notebook start`` asks for."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    layers: list[LayerName] = Field(default_factory=list)
    dataset_id: str | None = Field(None, min_length=1)
    package_ids: list[str] = Field(default_factory=list)
    idle_timeout_seconds: int = Field(DEFAULT_IDLE_SECONDS, ge=MIN_IDLE_SECONDS, le=MAX_IDLE_SECONDS)
    # Recorded for the node's task size; a local session shares this machine.
    cpu: float | None = Field(None, gt=0, le=16)
    memory_mib: int | None = Field(None, ge=512, le=120 * 1024)

    @model_validator(mode="after")
    def _packages_need_a_dataset(self) -> SessionRequest:
        if self.package_ids and self.dataset_id is None:
            raise ValueError("--package: needs --dataset")
        return self


def idle_timeout_setting(environ: Mapping[str, str] | None = None) -> int:
    """The idle timeout a session gets unless it asks for its own: ``$PENNFLOW_NOTEBOOK_IDLE_SECONDS``."""
    raw = (os.environ if environ is None else environ).get(IDLE_ENV, "").strip()
    if not raw:
        return DEFAULT_IDLE_SECONDS
    if not raw.isdigit() or not MIN_IDLE_SECONDS <= int(raw) <= MAX_IDLE_SECONDS:
        raise NotebookError(
            f"{IDLE_ENV}: must be a whole number of seconds from {MIN_IDLE_SECONDS} to {MAX_IDLE_SECONDS}, "
            f"got {raw!r}"
        )
    return int(raw)


class SessionFiles(BaseModel):
    """Where one session's files are: its own folder (log, stop marker), working area, input, layers."""

    model_config = ConfigDict(frozen=True)

    root: Path
    work: Path  # the server's root: what lasts, and what a data target publishes
    input: Path
    layers: Path
    log: Path

    @classmethod
    def of(cls, home: PennflowHome, run_id: str) -> SessionFiles:
        """A ``pennflow notebook start`` session's folders."""
        root = home.run_dir(run_id) / WORKFLOW
        return cls(
            root=root, work=root / "workspace", input=root / "input", layers=root / "layers",
            log=root / "processor.log",
        )  # fmt: skip

    @classmethod
    def of_processor(
        cls, home: PennflowHome, run_id: str, processor_id: str, input_dir: Path
    ) -> SessionFiles:
        """An interactive processor's: the working area is its OUTPUT_DIR, its INPUT_DIR the engine's."""
        layout = RunLayout(home.run_dir(run_id))
        root = Path(layout.processor_dir(processor_id))
        return cls(
            root=root, work=Path(layout.output_dir(processor_id)), input=input_dir, layers=root / "layers",
            log=home.log_path(run_id, processor_id),
        )  # fmt: skip

    @property
    def stop_marker(self) -> Path:
        return self.root / "stop-requested"

    @property
    def ending(self) -> Path:
        """How the session ended, for the engine that ran it as a step (``notebooks.step``)."""
        return self.root / ENDING_NAME


def state_path(home: PennflowHome, run_id: str) -> Path:
    return home.run_dir(run_id) / STATE_NAME


def find_session(home: PennflowHome, run_id: str) -> SessionState | None:
    """The run's session, or None when the run is not a session (or its state is unreadable)."""
    try:
        return SessionState.model_validate_json(state_path(home, run_id).read_text())
    except (OSError, ValueError):
        return None


def write_state(home: PennflowHome, state: SessionState) -> None:
    path = state_path(home, state.run_id)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(state.model_dump_json(indent=2))


class SessionState(BaseModel):
    """What the session's process and ``notebook stop`` read (``session.json``)."""

    run_id: str
    processor_id: str = WORKFLOW  # the run's step that is the session
    files: SessionFiles
    request: SessionRequest
    python: str  # the interpreter running the server and its kernels
    python_version: str
    port: int
    token: str
    scratch: str  # removed when the session ends
    layers: dict[str, str]  # layer name -> the pinned version's folder
    pid: int | None = None  # the session's process (``pennflow.notebooks.server``)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/?token={self.token}"


def start_session(
    home: PennflowHome,
    request: SessionRequest,
    *,
    python: str = sys.executable,
    python_version: str | None = None,
    timeout: float = START_TIMEOUT_SECONDS,
    pennsieve: Callable[[], PennsieveClient] | None = None,
) -> SessionState:
    """Pin the layers, record the run, download its data, start the session's process and wait until
    its server answers. ``pennsieve`` makes the client for a download (the signed-in user's by default)."""
    python_version = python_version or session_python()
    run_id = new_run_id()
    layers = LocalLayers.open(home)
    try:
        _check_layers(layers, request.layers, python_version)
        try:
            mounts = layers.mount(request.layers, run_id)
        except LayerError as exc:
            raise NotebookError(str(exc)) from None
    finally:
        layers.close()
    files = SessionFiles.of(home, run_id)
    now = utcnow()
    run = RunRecord(
        run_id=run_id,
        workflow=WORKFLOW,
        definition_hash=WORKFLOW,
        status=Status.STARTED,
        layers=[m.run_entry() for m in mounts],
        started_at=now,
    )
    step = StepRecord(
        run_id=run_id, processor_id=WORKFLOW, status=Status.STARTED, started_at=now, log_path=str(files.log)
    )
    state = SessionState(
        run_id=run_id,
        files=files,
        request=request,
        python=python,
        python_version=python_version,
        port=free_port(),
        token=secrets.token_urlsafe(32),
        scratch=tempfile.mkdtemp(prefix=f"pennflow-notebook-{run_id}-"),
        layers={m.name: m.path for m in mounts},
    )
    with SqliteRunStore(home.db_path) as store:
        recorded = False
        try:
            files.work.mkdir(parents=True)
            store.create_run(run, [step])
            recorded = True
            if request.dataset_id is not None:
                _download_input(files, request, pennsieve)
            write_state(home, state)
            process = _spawn(home, run_id, python, files)
        except BaseException as exc:  # nothing runs yet: this command ends what it began
            reason = str(exc) if isinstance(exc, NotebookError) else f"the session could not start: {exc}"
            _abandon(store, state, home, reason if recorded else None)
            if isinstance(exc, Exception) and not isinstance(exc, NotebookError):
                raise SessionFailed(reason) from None
            raise
    state = state.model_copy(update={"pid": process.pid})
    write_state(home, state)
    _wait_until_serving(state, process, files, timeout)
    return state


def _download_input(
    files: SessionFiles, request: SessionRequest, pennsieve: Callable[[], PennsieveClient] | None
) -> None:
    """The dataset (or its chosen packages) into INPUT_DIR, before the server starts."""
    from pennflow.data.datasource import download_dataset
    from pennflow.pennsieve import PennsieveClient, PennsieveError

    assert request.dataset_id is not None
    try:
        client = pennsieve() if pennsieve is not None else PennsieveClient()
        try:
            download_dataset(client, request.dataset_id, files.input, package_ids=request.package_ids)
        finally:
            client.close()
    except (PennsieveError, OSError) as exc:
        raise SessionFailed(f"cannot download {request.dataset_id}: {exc}") from None


def _spawn(home: PennflowHome, run_id: str, python: str, files: SessionFiles) -> subprocess.Popen:
    with open(files.log, "ab") as log:
        return subprocess.Popen(  # its own session: it outlives this command, as a server should
            [python, "-m", "pennflow.notebooks.server", str(home.root), run_id],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _abandon(store: SqliteRunStore, state: SessionState, home: PennflowHome, reason: str | None) -> None:
    """A session that never started: its run FAILED (when recorded), its pins and scratch let go."""
    if reason is not None:
        now = utcnow()
        store.update_step(state.run_id, WORKFLOW, Status.FAILED, finished_at=now, reason=reason)
        store.update_run(state.run_id, Status.FAILED, finished_at=now, reason=reason)
    with LocalLayers.open(home) as layers:
        layers.release(list(state.layers), state.run_id)
    shutil.rmtree(state.scratch, ignore_errors=True)


def _check_layers(layers: LocalLayers, names: list[str], python_version: str) -> None:
    problems = []
    for name in dict.fromkeys(names):
        try:
            record = layers.get(name)
        except LayerError as exc:
            problems.append(str(exc))
            continue
        reason = misfit_reason(record, python_version)
        if reason:
            problems.append(reason)
    if problems:
        raise NotebookError("; ".join(problems))


def _wait_until_serving(state: SessionState, process: subprocess.Popen, files: SessionFiles, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SessionFailed(f"the notebook server did not start:\n{_log_tail(files.log)}")
        if server_status(state) is not None:
            return
        time.sleep(POLL_SECONDS)
    process.terminate()  # the session's process ends the run, releases the layers, removes scratch
    process.wait(STOP_TIMEOUT_SECONDS)
    raise SessionFailed(f"the notebook server did not answer within {timeout:.0f} s:\n{_log_tail(files.log)}")


def stop_session(home: PennflowHome, run_id: str, *, timeout: float = STOP_TIMEOUT_SECONDS) -> StepRecord:
    """Shut the server down (kernels first, files kept); the session step's final record."""
    with SqliteRunStore(home.db_path) as store:
        run = store.get_run(run_id)
        if run is None:
            raise NotebookError(f"no run {run_id!r}; see `pennflow runs`")
        state = find_session(home, run_id)
        if state is None:
            raise NotebookError(
                f"run {run_id!r} is not a notebook session; stop a run with `pennflow cancel`"
            )
        step = _session_step(store, state)
        if step is not None and step.status.is_terminal:
            raise NotebookError(f"session {run_id} has ended already: {step.status.value}")
        if run.status.is_terminal:
            raise NotebookError(f"session {run_id} has ended already: {run.status.value}")
        state.files.stop_marker.touch()
        if not request_shutdown(state) and state.pid is not None:
            _signal(state.pid)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            step = _session_step(store, state)
            run = store.get_run(run_id) or run
            if step is not None and step.status.is_terminal:
                return step
            if run.status.is_terminal:  # ended before its step did (its engine is gone)
                raise SessionFailed(f"session {run_id} ended {run.status.value}: {run.reason}")
            time.sleep(POLL_SECONDS)
        if state.pid is not None:
            _signal(state.pid)  # the server did not shut down in time: its process ends it
        raise SessionFailed(f"session {run_id} did not stop within {timeout:.0f} s; see {state.files.log}")


def _session_step(store: SqliteRunStore, state: SessionState) -> StepRecord | None:
    return next((s for s in store.list_steps(state.run_id) if s.processor_id == state.processor_id), None)


def server_status(state: SessionState) -> dict | None:
    """The server's ``/api/status``, or None while it does not answer."""
    status = server_get(state, "/api/status")
    return status if isinstance(status, dict) else None


def request_shutdown(state: SessionState) -> bool:
    """Ask the server to shut down (its kernels first); False when it does not answer."""
    try:
        with urllib.request.urlopen(_request(state, "/api/shutdown", method="POST"), timeout=5):
            return True
    except (OSError, urllib.error.HTTPError):
        return False


def server_get(state: SessionState, path: str) -> object | None:
    """A GET of the server's REST API (``/api/status``, ``/api/kernels``), or None while it does not answer."""
    try:
        with urllib.request.urlopen(_request(state, path), timeout=2) as response:
            return json.loads(response.read())
    except (OSError, ValueError):
        return None


def _request(state: SessionState, path: str, method: str = "GET") -> urllib.request.Request:
    return urllib.request.Request(
        f"http://127.0.0.1:{state.port}{path}",
        method=method,
        headers={"Authorization": f"token {state.token}"},
    )


def _signal(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)


def free_port() -> int:
    """A loopback port free now (the server binds it a moment later with no retries)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _log_tail(log: Path, lines: int = 20) -> str:
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.strip().splitlines()[-lines:]) or "(empty log)"
