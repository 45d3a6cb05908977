"""The SQLite store's part of resume: the columns added to older stores, and the conditional reopen."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from pennflow.stores.sqlite import _SCHEMA, SqliteRunStore
from pennflow.workflow.runs import RunAttempt, RunRecord, Status, StepRecord

# The runs and steps tables as the first release created them (no attempt, history, step keys).
OLD_SCHEMA = _SCHEMA.replace(
    ",\n    attempt INTEGER NOT NULL DEFAULT 1,\n    history TEXT NOT NULL DEFAULT '[]'", ""
).replace("    step_key TEXT,\n    output_hash TEXT,\n    reused INTEGER NOT NULL DEFAULT 0,\n", "")


def test_an_older_store_gains_the_new_columns_and_keeps_its_runs(tmp_path: Path) -> None:
    assert "history" not in OLD_SCHEMA and "step_key" not in OLD_SCHEMA
    path = tmp_path / "pennflow.db"
    conn = sqlite3.connect(path)
    conn.executescript(OLD_SCHEMA)
    conn.execute(
        "INSERT INTO runs (run_id, workflow, definition_hash, status, params, layers, created_at, created_us, "
        "origin) VALUES ('r-old', 'wf', 'h', 'FAILED', '{}', '[]', '2026-01-01T00:00:00.000000Z', 1, 'local')"
    )
    conn.execute(
        "INSERT INTO steps (run_id, processor_id, position, status, attempts) VALUES ('r-old', 'a', 0, 'FAILED', 1)"
    )
    conn.commit()
    conn.close()

    with SqliteRunStore(path) as store:
        old = store.get_run("r-old")
        [step] = store.list_steps("r-old")
        assert old is not None and old.attempt == 1 and old.history == []
        assert step.step_key is None and step.output_hash is None and step.reused is False
        assert store.update_step("r-old", "a", step_key="k", output_hash="o")
        assert store.list_steps("r-old")[0].step_key == "k"
    with SqliteRunStore(path) as again:  # opening twice adds nothing twice
        assert again.get_run("r-old") is not None


def store_with_failed_run(tmp_path: Path) -> SqliteRunStore:
    store = SqliteRunStore(tmp_path / "pennflow.db")
    run = RunRecord(run_id="r-1", workflow="wf", definition_hash="h1")
    store.create_run(run, [StepRecord(run_id="r-1", processor_id="a")])
    store.update_run("r-1", Status.STARTED)
    store.update_run("r-1", Status.FAILED, reason="a failed")
    return store


def next_attempt(store: SqliteRunStore) -> RunRecord:
    run = store.get_run("r-1")
    assert run is not None
    earlier = RunAttempt(attempt=run.attempt, status=run.status, definition_hash=run.definition_hash)
    return run.model_copy(
        update={
            "attempt": 2,
            "history": [earlier],
            "status": Status.NOT_STARTED,
            "definition_hash": "h2",
            "reason": None,
        }
    )


def test_reopen_replaces_the_run_and_its_steps_once(tmp_path: Path) -> None:
    store = store_with_failed_run(tmp_path)
    reopened = next_attempt(store)
    steps = [StepRecord(run_id="r-1", processor_id="b")]

    assert store.reopen_run(reopened, steps, attempt=1)
    assert not store.reopen_run(reopened, steps, attempt=1)  # a second resume of attempt 1 loses

    run = store.get_run("r-1")
    assert run is not None and run.status is Status.NOT_STARTED and run.attempt == 2
    assert run.definition_hash == "h2" and run.reason is None
    assert [a.status for a in run.history] == [Status.FAILED]
    assert [s.processor_id for s in store.list_steps("r-1")] == ["b"]
    store.close()


def test_reopen_refuses_a_run_that_is_going_or_succeeded(tmp_path: Path) -> None:
    store = SqliteRunStore(tmp_path / "pennflow.db")
    store.create_run(RunRecord(run_id="r-1", workflow="wf", definition_hash="h1"), [])
    store.update_run("r-1", Status.STARTED)
    assert not store.reopen_run(next_attempt(store), [], attempt=1)
    store.update_run("r-1", Status.SUCCEEDED)
    assert not store.reopen_run(next_attempt(store), [], attempt=1)
    assert store.get_run("r-1").status is Status.SUCCEEDED
    store.close()
