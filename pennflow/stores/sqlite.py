"""The local run store: one SQLite file (WAL), shared by the engine's threads and other processes.

Status writes are single conditional UPDATEs (``... AND status IN (<allowed predecessors>)``), so a
``pennflow cancel`` from another terminal and the engine's own writes can never move a status
backwards, whichever lands first.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import threading
from collections.abc import Sequence
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, TypeAdapter

from pennflow.stores.base import Page, StoreConflict
from pennflow.stores.leases import LEASE_SCHEMA, RunLeases
from pennflow.workflow.runs import RESUMABLE, RunRecord, Status, StepRecord, allowed_predecessors

BUSY_TIMEOUT_SECONDS = 10.0
JSON_FIELDS = frozenset({"params", "layers", "package_ids", "history", "cost", "resource_use", "images"})
# What identifies a run or a step never changes.
IMMUTABLE_FIELDS = frozenset({"run_id", "processor_id", "workflow", "definition_hash", "created_at"})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    workflow TEXT NOT NULL,
    definition_hash TEXT NOT NULL,
    status TEXT NOT NULL,
    dataset_id TEXT,
    package_ids TEXT NOT NULL DEFAULT '[]',
    params TEXT NOT NULL,
    layers TEXT NOT NULL,
    created_at TEXT NOT NULL,
    created_us INTEGER NOT NULL,  -- created_at in microseconds: the listing order
    started_at TEXT,
    finished_at TEXT,
    failed_processor TEXT,
    exit_code INTEGER,
    reason TEXT,
    execution_arn TEXT,
    content_key TEXT,
    origin TEXT NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 1,
    history TEXT NOT NULL DEFAULT '[]',
    resume_until TEXT,
    rerun_of TEXT,
    cost TEXT NOT NULL DEFAULT 'null',
    images TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS runs_by_time ON runs (created_us DESC, run_id DESC);
CREATE INDEX IF NOT EXISTS runs_by_content_key ON runs (content_key, created_us DESC)
    WHERE content_key IS NOT NULL;
CREATE TABLE IF NOT EXISTS steps (
    run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    processor_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    exit_code INTEGER,
    started_at TEXT,
    finished_at TEXT,
    reason TEXT,
    log_path TEXT,
    step_key TEXT,
    output_hash TEXT,
    reused INTEGER NOT NULL DEFAULT 0,
    resource_use TEXT NOT NULL DEFAULT '[]',
    PRIMARY KEY (run_id, processor_id)
);
"""
# Columns added after the first release: a store made before them gets them on open (ALTER TABLE
# ADD COLUMN keeps every row; the defaults are what the old rows meant).
_ADDED_COLUMNS = {
    "runs": {
        "attempt": "INTEGER NOT NULL DEFAULT 1",
        "history": "TEXT NOT NULL DEFAULT '[]'",
        "resume_until": "TEXT",
        "rerun_of": "TEXT",
        "cost": "TEXT NOT NULL DEFAULT 'null'",
        "images": "TEXT NOT NULL DEFAULT '{}'",
    },
    "steps": {
        "step_key": "TEXT",
        "output_hash": "TEXT",
        "reused": "INTEGER NOT NULL DEFAULT 0",
        "resource_use": "TEXT NOT NULL DEFAULT '[]'",
    },
}


def _migrate(conn: sqlite3.Connection) -> None:
    for table, columns in _ADDED_COLUMNS.items():
        present = {row["name"] for row in conn.execute(f"PRAGMA table_info({table})")}
        if not present:  # not this store's table (the leases file has no runs)
            continue
        for name, declaration in columns.items():
            if name not in present:
                try:
                    conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {declaration}")
                except sqlite3.OperationalError as exc:  # another process added it first
                    if "duplicate column" not in str(exc):
                        raise


def connect(path: Path, schema: str) -> sqlite3.Connection:
    """A connection shared by threads (callers hold a lock) and usable by a second process."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")  # WAL stays consistent; fsync at checkpoints
    conn.execute("PRAGMA foreign_keys=ON")
    conn.executescript(schema)
    _migrate(conn)
    return conn


class SqliteRunStore:
    """A :class:`~pennflow.stores.base.RunStore` on one SQLite file; thread-safe."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        # One connection guarded by a lock: the engine writes from several threads, rarely at once.
        self._lock = threading.Lock()
        self._conn = connect(self.path, _SCHEMA + LEASE_SCHEMA)
        self.leases = RunLeases(self._conn, self._lock)  # local engines' leases (stores/leases.py)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> SqliteRunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- runs

    def create_run(self, run: RunRecord, steps: Sequence[StepRecord]) -> None:
        run_row = _row(run)
        run_row["created_us"] = _micros(run.created_at)
        step_rows = [{**_row(step), "position": index} for index, step in enumerate(steps)]
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                self._conn.execute(_insert("runs", run_row), run_row)
                if step_rows:
                    self._conn.executemany(_insert("steps", step_rows[0]), step_rows)
                self._conn.execute("COMMIT")
            except sqlite3.IntegrityError:
                self._conn.execute("ROLLBACK")
                raise StoreConflict(f"run {run.run_id!r} exists already") from None
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise

    def get_run(self, run_id: str) -> RunRecord | None:
        with self._lock:
            row = self._conn.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return _record(RunRecord, row) if row else None

    def list_runs(
        self,
        *,
        workflow: str | None = None,
        status: Status | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        where, args = [], []
        if workflow is not None:
            where.append("workflow = ?")
            args.append(workflow)
        if status is not None:
            where.append("status = ?")
            args.append(Status(status).value)
        listing = _listing_key(workflow, status)
        if cursor is not None:
            where.append("(created_us, run_id) < (?, ?)")
            args.extend(_decode_cursor(cursor, listing))
        sql = "SELECT * FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_us DESC, run_id DESC LIMIT ?"
        with self._lock:
            rows = self._conn.execute(sql, [*args, limit + 1]).fetchall()
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = _encode_cursor(rows[-1]["created_us"], rows[-1]["run_id"], listing) if more else None
        return Page([_record(RunRecord, row) for row in rows], next_cursor)

    def find_succeeded_by_content_key(self, key: str) -> RunRecord | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT * FROM runs WHERE content_key = ? AND status = ? "
                "ORDER BY created_us DESC, run_id DESC LIMIT 1",
                (key, Status.SUCCEEDED.value),
            ).fetchone()
        return _record(RunRecord, row) if row else None

    def update_run(self, run_id: str, status: Status | None = None, **fields: Any) -> bool:
        return self._update("runs", RunRecord, {"run_id": run_id}, status, fields)

    def reopen_run(self, run: RunRecord, steps: Sequence[StepRecord], *, attempt: int) -> bool:
        """A resume: replace the run's record and steps with ``run`` and ``steps``, only while the stored
        run is still ended without success (``RESUMABLE``) at attempt ``attempt`` (so two resumes of
        one run, or a resume racing anything else, reopen it once). False when it was not."""
        run_row = _row(run)
        keys = ("run_id", "created_at")  # the run keeps its id and creation time
        assignments = ", ".join(f"{name} = :{name}" for name in run_row if name not in keys)
        statuses = {f"resumable_{i}": status.value for i, status in enumerate(sorted(RESUMABLE))}
        step_rows = [{**_row(step), "position": index} for index, step in enumerate(steps)]
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                cursor = self._conn.execute(
                    f"UPDATE runs SET {assignments} WHERE run_id = :run_id AND attempt = :expected_attempt "
                    f"AND status IN ({', '.join(':' + name for name in statuses)})",
                    {**run_row, **statuses, "expected_attempt": attempt},
                )
                if cursor.rowcount == 0:
                    self._conn.execute("ROLLBACK")
                    return False
                self._conn.execute("DELETE FROM steps WHERE run_id = ?", (run.run_id,))
                if step_rows:
                    self._conn.executemany(_insert("steps", step_rows[0]), step_rows)
                self._conn.execute("COMMIT")
                return True
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise

    # ---------------------------------------------------------------- steps

    def list_steps(self, run_id: str) -> list[StepRecord]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT * FROM steps WHERE run_id = ? ORDER BY position", (run_id,)
            ).fetchall()
        return [_record(StepRecord, row) for row in rows]

    def update_step(
        self, run_id: str, processor_id: str, status: Status | None = None, **fields: Any
    ) -> bool:
        keys = {"run_id": run_id, "processor_id": processor_id}
        return self._update("steps", StepRecord, keys, status, fields)

    # ---------------------------------------------------------------- shared

    def _update(
        self,
        table: str,
        model: type[BaseModel],
        keys: dict[str, str],
        status: Status | None,
        fields: dict[str, Any],
    ) -> bool:
        for name in fields:
            if name in IMMUTABLE_FIELDS or name == "status":
                raise ValueError(
                    f"{name!r} cannot be updated" + (": pass status=" if name == "status" else "")
                )
        values = {name: _column_value(model, name, value) for name, value in fields.items()}
        params = {f"key_{key}": value for key, value in keys.items()}
        if status is not None:
            status = Status(status)
            values["status"] = status.value
            params.update(_allowed_params(status))
        if not values:
            raise ValueError("nothing to update: give a status or fields")
        sql = _update_sql(table, tuple(values), tuple(keys), status)
        with self._lock:
            cursor = self._conn.execute(sql, {**values, **params})
        return cursor.rowcount > 0


@cache
def _allowed_params(status: Status) -> dict[str, str]:
    """The statuses ``status`` may be written over, as the parameters of ``_update_sql``'s condition."""
    allowed = sorted(s.value for s in allowed_predecessors(status))
    return {f"allowed_{i}": value for i, value in enumerate(allowed)}


@cache
def _update_sql(table: str, names: tuple[str, ...], keys: tuple[str, ...], status: Status | None) -> str:
    """The conditional UPDATE of ``names`` (a store writes a few shapes, each many times: made once)."""
    conditions = [f"{key} = :key_{key}" for key in keys]
    if status is not None:
        placeholders = ", ".join(f":{name}" for name in _allowed_params(status))
        conditions.append(f"status IN ({placeholders})")
    assignments = ", ".join(f"{name} = :{name}" for name in names)
    return f"UPDATE {table} SET {assignments} WHERE {' AND '.join(conditions)}"


@cache
def _adapter(model: type[BaseModel], name: str) -> TypeAdapter:
    return TypeAdapter(model.model_fields[name].annotation)


def _column_value(model: type[BaseModel], name: str, value: Any) -> Any:
    """Validate a field update against the record model, then store it as its JSON form."""
    if name not in model.model_fields:
        raise ValueError(f"{model.__name__} has no field {name!r}")
    adapter = _adapter(model, name)
    dumped = adapter.dump_python(adapter.validate_python(value), mode="json")
    return json.dumps(dumped) if name in JSON_FIELDS else dumped


def _row(record: BaseModel) -> dict[str, Any]:
    row = record.model_dump(mode="json")
    for name in JSON_FIELDS & row.keys():
        row[name] = json.dumps(row[name])
    return row


def _record(model: type[BaseModel], row: sqlite3.Row) -> Any:
    data = {name: row[name] for name in model.model_fields}
    for name in JSON_FIELDS & data.keys():
        data[name] = json.loads(data[name])
    return model.model_validate(data)


def _insert(table: str, row: dict[str, Any]) -> str:
    names = ", ".join(row)
    values = ", ".join(f":{name}" for name in row)
    return f"INSERT INTO {table} ({names}) VALUES ({values})"


def _micros(moment: datetime) -> int:
    return round(moment.timestamp() * 1_000_000)


def _listing_key(workflow: str | None, status: Status | None) -> list[str | None]:
    return [workflow, Status(status).value if status is not None else None]


def _encode_cursor(created_us: int, run_id: str, listing: list[str | None]) -> str:
    """Where the page ended and which listing it belongs to (a cursor only continues its own)."""
    return base64.urlsafe_b64encode(json.dumps([created_us, run_id, listing]).encode()).decode()


def _decode_cursor(cursor: str, listing: list[str | None]) -> tuple[int, str]:
    try:
        created_us, run_id, cursor_listing = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        valid = isinstance(created_us, int) and isinstance(run_id, str)
    except (ValueError, TypeError):
        valid = False
    if not valid:
        raise ValueError(f"invalid cursor {cursor!r}: pass back the cursor a previous page returned")
    if cursor_listing != listing:
        raise ValueError("this cursor belongs to another listing: use the same --workflow and --status")
    return created_us, run_id
