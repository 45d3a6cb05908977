"""Engine leases of local runs, kept in the run store's SQLite file beside the runs.

A lease says which process runs a run's engine (pid, the process's start time so a reused pid is
never mistaken for it, the boot it started in, the host) and when it last said it was alive; with it
the process groups of the attempts running now (and their containers). Whoever reads a run whose
engine is gone uses them to end it (``pennflow.engine.orphans``). The engine drops its lease when
the run ends.
"""

from __future__ import annotations

import sqlite3
import threading
from datetime import datetime

from pydantic import BaseModel

from pennflow.workflow.runs import timestamp

LEASE_SCHEMA = """
CREATE TABLE IF NOT EXISTS engine_leases (
    run_id TEXT PRIMARY KEY,
    pid INTEGER NOT NULL,
    process_start TEXT NOT NULL,  -- the engine's start time (empty where it cannot be read)
    boot_id TEXT NOT NULL,
    host TEXT NOT NULL,
    supervisor_pid INTEGER,
    heartbeat_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS engine_processes (
    run_id TEXT NOT NULL,
    pgid INTEGER NOT NULL,
    process_start TEXT NOT NULL,  -- the group leader's start time: a later group with its id is not ours
    container TEXT,
    PRIMARY KEY (run_id, pgid)
);
"""


class EngineLease(BaseModel):
    run_id: str
    pid: int
    process_start: str
    boot_id: str
    host: str
    supervisor_pid: int | None = None
    heartbeat_at: datetime


class LeasedProcess(BaseModel):
    """One running attempt: its process group, and its container when it runs in one."""

    pgid: int
    process_start: str
    container: str | None = None


class RunLeases:
    """The lease tables, on the run store's connection and lock."""

    def __init__(self, conn: sqlite3.Connection, lock: threading.Lock):
        self._conn = conn
        self._lock = lock

    def acquire(self, lease: EngineLease) -> None:
        row = {**lease.model_dump(), "heartbeat_at": timestamp(lease.heartbeat_at)}
        names = ", ".join(row)
        values = ", ".join(f":{name}" for name in row)
        with self._lock:
            self._conn.execute(f"INSERT OR REPLACE INTO engine_leases ({names}) VALUES ({values})", row)

    def heartbeat(self, run_id: str, moment: datetime) -> None:
        with self._lock:
            self._conn.execute(
                "UPDATE engine_leases SET heartbeat_at = ? WHERE run_id = ?", (timestamp(moment), run_id)
            )

    def set_supervisor(self, run_id: str, pid: int) -> None:
        with self._lock:
            self._conn.execute("UPDATE engine_leases SET supervisor_pid = ? WHERE run_id = ?", (pid, run_id))

    def get(self, run_id: str) -> EngineLease | None:
        with self._lock:
            row = self._conn.execute("SELECT * FROM engine_leases WHERE run_id = ?", (run_id,)).fetchone()
        return EngineLease.model_validate(dict(row)) if row else None

    def add_process(self, run_id: str, process: LeasedProcess) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO engine_processes (run_id, pgid, process_start, container) "
                "VALUES (?, ?, ?, ?)",
                (run_id, process.pgid, process.process_start, process.container),
            )

    def remove_process(self, run_id: str, pgid: int) -> None:
        with self._lock:
            self._conn.execute("DELETE FROM engine_processes WHERE run_id = ? AND pgid = ?", (run_id, pgid))

    def processes(self, run_id: str) -> list[LeasedProcess]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT pgid, process_start, container FROM engine_processes WHERE run_id = ?", (run_id,)
            ).fetchall()
        return [LeasedProcess.model_validate(dict(row)) for row in rows]

    def release(self, run_id: str) -> None:
        """The run ended: drop its lease and whatever processes it still lists."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.execute("DELETE FROM engine_processes WHERE run_id = ?", (run_id,))
                self._conn.execute("DELETE FROM engine_leases WHERE run_id = ?", (run_id,))
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
