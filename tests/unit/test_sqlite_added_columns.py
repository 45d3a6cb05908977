"""A run store written before the cost and resource-use columns opens, gains them and keeps its runs."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from pennflow.stores import sqlite as store_module
from pennflow.stores.sqlite import SqliteRunStore
from pennflow.workflow.runs import RunRecord, StepRecord


def test_an_older_store_gains_the_columns(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    old_schema = store_module._SCHEMA.replace(",\n    cost TEXT NOT NULL DEFAULT 'null'", "").replace(
        "    resource_use TEXT NOT NULL DEFAULT '[]',\n", ""
    )
    assert "cost TEXT" not in old_schema and "resource_use" not in old_schema
    conn = sqlite3.connect(path)
    conn.executescript(old_schema)
    conn.execute(
        "INSERT INTO runs (run_id, workflow, definition_hash, status, params, layers, created_at, created_us,"
        " origin) VALUES ('r-old', 'w', 'h', 'SUCCEEDED', '{}', '[]', '2025-01-01T00:00:00Z', 1, 'local')"
    )
    conn.commit()
    conn.close()

    with SqliteRunStore(path) as store:
        old = store.get_run("r-old")
        assert old is not None and old.cost is None
        store.create_run(
            RunRecord(run_id="r-new", workflow="w", definition_hash="h"),
            [StepRecord(run_id="r-new", processor_id="p")],
        )
        store.update_run("r-new", cost={"totalUsd": 0.5})
        store.update_step("r-new", "p", resource_use=[{"attempt": 1, "seconds": 2.0}])
        assert store.get_run("r-new").cost == {"totalUsd": 0.5}
        assert store.list_steps("r-new")[0].resource_use == [{"attempt": 1, "seconds": 2.0}]
    with SqliteRunStore(path) as again:  # opening twice adds nothing twice
        assert again.get_run("r-new").cost == {"totalUsd": 0.5}
