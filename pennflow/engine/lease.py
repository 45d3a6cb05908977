"""The lease a local engine keeps on its run, so that no run outlives its engine unnoticed.

While a run goes, the store holds its engine's lease: the engine's pid and start time, the boot it
started in, the host, a heartbeat every ``HEARTBEAT_SECONDS``, and the process group (and
container) of each attempt running now. A supervisor started with the run (``supervisor``) waits on
a pipe only the engine holds: when the engine dies without saying it is done (``kill -9``, a crash),
the pipe closes and the supervisor ends the run at once (``orphans``), its processes killed. Any
command that reads a run whose engine is gone does the same, should the supervisor be gone too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import datetime
from functools import cache
from pathlib import Path

import pennflow
from pennflow.engine.launchers import RunningProcess
from pennflow.stores.leases import EngineLease, LeasedProcess, RunLeases
from pennflow.workflow.runs import utcnow

HEARTBEAT_SECONDS = 2.0
# Where the pid cannot be checked (another host sharing PENNFLOW_HOME, no /proc), a lease whose
# heartbeat is older than this is an engine that is gone.
STALE_AFTER_SECONDS = 30.0
DONE = b"done\n"  # what the engine tells its supervisor when the run ended as it should

logger = logging.getLogger(__name__)


@cache
def boot_id() -> str:
    """This boot's id ("" where the system does not tell): a pid is only meaningful within one boot."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


@cache
def _have_proc() -> bool:
    return Path("/proc/self/stat").is_file()


def process_start(pid: int) -> str | None:
    """When the live process ``pid`` started ("" where that cannot be read), None when none runs.

    The start time (clock ticks since boot, /proc/<pid>/stat field 22) tells a process from a later
    one that got its pid; a zombie counts as gone.
    """
    if not _have_proc():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return ""
        return ""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else fields[19]


def engine_gone(lease: EngineLease, now: datetime | None = None) -> bool:
    """True when the process the lease names no longer runs (or, unable to tell, stopped beating)."""
    stale = ((now or utcnow()) - lease.heartbeat_at).total_seconds() > STALE_AFTER_SECONDS
    if lease.host != socket.gethostname():
        return stale
    if lease.boot_id and boot_id() and lease.boot_id != boot_id():
        return True  # the machine rebooted since
    start = process_start(lease.pid)
    if start is None:
        return True
    if start and lease.process_start:
        return start != lease.process_start
    return stale  # a live pid that may be a later process: trust the heartbeat


def engine_stopped_reason(lease: EngineLease) -> str:
    seen = lease.heartbeat_at.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    return f"engine stopped (pid {lease.pid}, last seen {seen})"


class EngineLeaseKeeper:
    """The engine's side: take the lease, beat, list each attempt's process group, let go at the end."""

    def __init__(self, leases: RunLeases, run_id: str, db_path: Path):
        self._leases = leases
        self._run_id = run_id
        self._db_path = db_path
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        self._supervisor: subprocess.Popen | None = None

    def start(self) -> None:
        """Take the lease (before the run exists in the store: no moment without one), start the
        supervisor and the heartbeat."""
        pid = os.getpid()
        self._leases.acquire(
            EngineLease(
                run_id=self._run_id,
                pid=pid,
                process_start=process_start(pid) or "",
                boot_id=boot_id(),
                host=socket.gethostname(),
                heartbeat_at=utcnow(),
            )
        )
        self._supervisor = _start_supervisor(self._db_path, self._run_id)
        if self._supervisor is not None:
            self._leases.set_supervisor(self._run_id, self._supervisor.pid)
        self._beat = threading.Thread(target=self._heartbeat, name="pennflow-lease", daemon=True)
        self._beat.start()

    @contextlib.contextmanager
    def tracking(self, process: RunningProcess) -> Iterator[None]:
        """While the block runs, the lease lists the process's group (so a reader can kill it)."""
        pgid = process.host_group  # each attempt leads its own session and group
        if pgid is None:  # inside the run's sandbox, whose own group the lease lists (list_group)
            yield
            return
        listed = self._write(
            self._leases.add_process,
            self._run_id,
            LeasedProcess(
                pgid=pgid, process_start=process_start(pgid) or "", container=process.spec.container_name
            ),
        )
        try:
            yield
        finally:
            if listed:
                self._write(self._leases.remove_process, self._run_id, pgid)

    def list_group(self, pgid: int) -> None:
        """List a process group for the rest of the run (the run's sandbox: killing it ends every
        attempt in it)."""
        self._write(
            self._leases.add_process,
            self._run_id,
            LeasedProcess(pgid=pgid, process_start=process_start(pgid) or "", container=None),
        )

    def close(self, ended: bool) -> None:
        """Stop beating. When the run ended (its final status is stored), drop the lease and dismiss
        the supervisor; when it did not (the engine broke), keep both: once this process is gone,
        the supervisor or the next reader ends the run."""
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
        if not ended:
            return
        self._write(self._leases.release, self._run_id)
        supervisor = self._supervisor
        if supervisor is not None and supervisor.stdin is not None:
            with contextlib.suppress(OSError):
                supervisor.stdin.write(DONE)
                supervisor.stdin.close()
            # Not waited for: it exits on its own at once (subprocess reaps it later), and a short
            # run need not wait for an interpreter to start.

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            self._write(self._leases.heartbeat, self._run_id, utcnow())

    def _write(self, write, *args) -> bool:
        """A busy store must not fail a processor: the lease is for whoever comes after the engine."""
        try:
            write(*args)
        except sqlite3.Error as exc:
            logger.warning("could not update the run's engine lease: %s", exc)
            return False
        return True


class NoLease:
    """For a store that keeps no leases (a run store other than SQLite)."""

    def start(self) -> None:
        pass

    @contextlib.contextmanager
    def tracking(self, process: RunningProcess) -> Iterator[None]:
        yield

    def list_group(self, pgid: int) -> None:
        pass

    def close(self, ended: bool) -> None:
        pass


def keeper_for(store: object, run_id: str) -> EngineLeaseKeeper | NoLease:
    leases = getattr(store, "leases", None)
    path = getattr(store, "path", None)
    if not isinstance(leases, RunLeases) or path is None:
        return NoLease()
    return EngineLeaseKeeper(leases, run_id, Path(path))


def _start_supervisor(db_path: Path, run_id: str) -> subprocess.Popen | None:
    """``python -m pennflow.engine.supervisor`` in its own session (a closed terminal or Ctrl-C does
    not reach it), reading a pipe whose other end only this process holds."""
    package_root = str(Path(pennflow.__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
    try:
        return subprocess.Popen(
            # -S: no site-packages until it needs them (a fifth of the start-up time)
            [sys.executable, "-S", "-m", "pennflow.engine.supervisor", str(db_path), run_id],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": path},
            start_new_session=True,
        )
    except OSError as exc:  # the run still goes; readers end it if the engine dies
        logger.warning("no supervisor for the run: %s", exc)
        return None
