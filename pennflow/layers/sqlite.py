"""The local layer registry: two tables in an SQLite file (by default the run store's pennflow.db).

Every write is one conditional UPDATE/DELETE or a short ``BEGIN IMMEDIATE`` transaction, so the
CLI in one terminal and a run in another cannot interleave into an inconsistent record.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

from pennflow.layers.models import (
    MOUNTABLE,
    UPDATABLE_FIELDS,
    LayerExists,
    LayerRecord,
    LayerStatus,
    allowed_predecessors,
)
from pennflow.stores.sqlite import connect
from pennflow.workflow.runs import timestamp, utcnow

JSON_FIELDS = frozenset({"packages", "access_points"})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS layers (
    name TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    description TEXT NOT NULL,
    status TEXT NOT NULL,
    version INTEGER NOT NULL,
    size_bytes INTEGER NOT NULL,
    file_count INTEGER NOT NULL,
    checksum TEXT,
    python_version TEXT,
    requirements TEXT,
    packages TEXT NOT NULL,
    created_at TEXT NOT NULL,
    created_by TEXT,
    updated_at TEXT NOT NULL,
    built_at TEXT,
    build_started_at TEXT,
    last_accessed_at TEXT,
    error TEXT,
    access_points TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS layer_refs (
    name TEXT NOT NULL REFERENCES layers (name) ON DELETE CASCADE,
    run_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    acquired_at TEXT NOT NULL,
    PRIMARY KEY (name, run_id)
);
"""


class SqliteLayerRegistry:
    """A :class:`~pennflow.layers.registry.LayerRegistry` on one SQLite file; thread-safe."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._conn = connect(self.path, _SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> SqliteLayerRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- reads

    def get(self, name: str) -> LayerRecord | None:
        with self._lock:
            row = self._conn.execute("SELECT * FROM layers WHERE name = ?", (name,)).fetchone()
            refs = self._refs(name) if row else {}
        return _record(row, refs) if row else None

    def list(self) -> list[LayerRecord]:
        with self._lock:
            rows = self._conn.execute("SELECT * FROM layers ORDER BY name").fetchall()
            refs = {row["name"]: self._refs(row["name"]) for row in rows}
        return [_record(row, refs[row["name"]]) for row in rows]

    def _refs(self, name: str) -> dict[str, int]:
        rows = self._conn.execute("SELECT run_id, version FROM layer_refs WHERE name = ?", (name,))
        return {row["run_id"]: row["version"] for row in rows}

    # ---------------------------------------------------------------- writes

    def create(self, record: LayerRecord) -> None:
        row = _row(record)
        names = ", ".join(row)
        values = ", ".join(f":{name}" for name in row)
        with self._lock:
            try:
                self._conn.execute(f"INSERT INTO layers ({names}) VALUES ({values})", row)
            except sqlite3.IntegrityError:
                raise LayerExists(record.name) from None

    def transition(
        self,
        name: str,
        status: LayerStatus,
        *,
        expect_version: int | None = None,
        stale_before: datetime | None = None,
        **fields: Any,
    ) -> bool:
        status = LayerStatus(status)
        values = _values(fields)
        values["status"] = status.value
        allowed = sorted(s.value for s in allowed_predecessors(status))
        params: dict[str, Any] = {f"allowed_{i}": value for i, value in enumerate(allowed)}
        status_ok = f"status IN ({', '.join(f':allowed_{i}' for i in range(len(allowed)))})"
        if stale_before is not None:
            status_ok = f"({status_ok} OR (status = :building AND build_started_at < :stale))"
            params.update(building=LayerStatus.BUILDING.value, stale=timestamp(stale_before))
        conditions = ["name = :key_name", status_ok]
        if expect_version is not None:
            conditions.append("version = :expect_version")
            params["expect_version"] = expect_version
        return self._update(name, values, conditions, params)

    def update(self, name: str, **fields: Any) -> bool:
        return self._update(name, _values(fields), ["name = :key_name"], {})

    def _update(
        self, name: str, values: dict[str, Any], conditions: list[str], params: dict[str, Any]
    ) -> bool:
        values.setdefault("updated_at", timestamp(utcnow()))
        assignments = ", ".join(f"{column} = :{column}" for column in values)
        sql = f"UPDATE layers SET {assignments} WHERE {' AND '.join(conditions)}"
        with self._lock:
            cursor = self._conn.execute(sql, {**values, **params, "key_name": name})
        return cursor.rowcount > 0

    def add_ref(self, name: str, run_id: str, version: int, at: datetime) -> bool:
        mountable = sorted(s.value for s in MOUNTABLE)
        with self._lock, self._transaction():
            updated = self._conn.execute(
                "UPDATE layers SET last_accessed_at = ? WHERE name = ? AND version = ? AND version > 0 "
                f"AND status IN ({', '.join('?' * len(mountable))})",
                (timestamp(at), name, version, *mountable),
            ).rowcount
            if updated:
                self._conn.execute(
                    "INSERT OR REPLACE INTO layer_refs (name, run_id, version, acquired_at) VALUES (?, ?, ?, ?)",
                    (name, run_id, version, timestamp(at)),
                )
        return bool(updated)

    def remove_ref(self, name: str, run_id: str) -> None:
        with self._lock:
            self._conn.execute("DELETE FROM layer_refs WHERE name = ? AND run_id = ?", (name, run_id))

    def delete(self, name: str) -> bool:
        with self._lock, self._transaction():
            cursor = self._conn.execute(
                "DELETE FROM layers WHERE name = ? AND status != ? "
                "AND NOT EXISTS (SELECT 1 FROM layer_refs WHERE layer_refs.name = layers.name)",
                (name, LayerStatus.BUILDING.value),
            )
        return cursor.rowcount > 0

    def _transaction(self) -> _Transaction:
        return _Transaction(self._conn)


class _Transaction:
    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.conn.execute("ROLLBACK" if exc_type else "COMMIT")


# ------------------------------------------------------------------ rows


def _column(name: str, value: Any) -> Any:
    if name in JSON_FIELDS:
        return json.dumps(value)
    if isinstance(value, datetime):
        return timestamp(value)
    return value


def _row(record: LayerRecord) -> dict[str, Any]:
    data = record.model_dump(mode="python", exclude={"refs"})
    data["packages"] = [p.model_dump() for p in record.packages]
    return {
        name: _column(name, value.value if hasattr(value, "value") else value) for name, value in data.items()
    }


def _values(fields: dict[str, Any]) -> dict[str, Any]:
    """Validate field updates against the record model, in their stored form."""
    unknown = sorted(set(fields) - UPDATABLE_FIELDS)
    if unknown:
        raise ValueError(f"cannot update layer field(s) {', '.join(unknown)} this way")
    checked = LayerRecord.model_validate({"name": "x", "type": "data", **fields})
    dumped = checked.model_dump(mode="json", include=set(fields))
    return {
        name: _column(name, dumped[name]) if name in JSON_FIELDS else _stored(name, checked)
        for name in fields
    }


def _stored(name: str, record: LayerRecord) -> Any:
    value = getattr(record, name)
    if isinstance(value, datetime):
        return timestamp(value)
    return value.value if hasattr(value, "value") else value


def _record(row: sqlite3.Row, refs: dict[str, int]) -> LayerRecord:
    data = dict(row)
    for name in JSON_FIELDS:
        data[name] = json.loads(data[name])
    data["refs"] = refs
    return LayerRecord.model_validate(data)
