"""The SQLite run store: round trips, conditional status writes, listing pages, threads, processes."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pennflow.stores import StoreConflict
from pennflow.stores.sqlite import SqliteRunStore
from pennflow.workflow.runs import RunRecord, Status, StepRecord

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def _run(run_id: str, workflow: str = "eeg", minutes: int = 0, **fields) -> RunRecord:
    return RunRecord(
        run_id=run_id,
        workflow=workflow,
        definition_hash="abc",
        created_at=T0 + timedelta(minutes=minutes),
        **fields,
    )


def _steps(run_id: str, *ids: str) -> list[StepRecord]:
    return [StepRecord(run_id=run_id, processor_id=pid) for pid in ids]


@pytest.fixture
def store(tmp_path: Path):
    with SqliteRunStore(tmp_path / "state" / "pennflow.db") as store:
        yield store


def test_a_run_and_its_steps_round_trip_in_definition_order(store: SqliteRunStore) -> None:
    run = _run(
        "r-1",
        params={"convert": {"WINDOW": "30"}},
        layers=[{"name": "sci", "path": "/layers/sci"}],
        dataset_id="N:ds:1",
        started_at=T0 + timedelta(seconds=1.5),
    )
    store.create_run(run, _steps("r-1", "zeta", "alpha", "mid"))

    assert store.get_run("r-1") == run
    assert [s.processor_id for s in store.list_steps("r-1")] == ["zeta", "alpha", "mid"]
    assert store.get_run("r-missing") is None
    assert store.list_steps("r-missing") == []


def test_creating_an_existing_run_conflicts_and_changes_nothing(store: SqliteRunStore) -> None:
    store.create_run(_run("r-1"), _steps("r-1", "a"))
    with pytest.raises(StoreConflict, match="r-1"):
        store.create_run(_run("r-1", workflow="other"), _steps("r-1", "b"))
    assert store.get_run("r-1").workflow == "eeg"
    assert [s.processor_id for s in store.list_steps("r-1")] == ["a"]
    store.create_run(_run("r-2"), _steps("r-2", "a"))  # the connection is usable after the conflict


def test_status_moves_forward_only(store: SqliteRunStore) -> None:
    store.create_run(_run("r-1"), _steps("r-1", "a"))

    assert store.update_run("r-1", Status.STARTED, started_at=T0)
    assert not store.update_run("r-1", Status.NOT_STARTED)
    assert not store.update_run("r-1", Status.STARTED)  # a duplicate
    assert store.update_run("r-1", Status.SUCCEEDED, finished_at=T0 + timedelta(hours=1))
    assert not store.update_run("r-1", Status.STARTED)  # a late event
    assert not store.update_run("r-1", Status.CANCELING)
    assert not store.update_run("r-1", Status.FAILED)

    run = store.get_run("r-1")
    assert (run.status, run.finished_at) == (Status.SUCCEEDED, T0 + timedelta(hours=1))


def test_a_cancel_may_lose_the_race_with_the_end_of_the_run(store: SqliteRunStore) -> None:
    store.create_run(_run("r-1", status=Status.STARTED), [])
    assert store.update_run("r-1", Status.CANCELING)
    assert store.update_run("r-1", Status.SUCCEEDED)
    assert store.get_run("r-1").status is Status.SUCCEEDED


def test_a_refused_status_write_leaves_the_other_fields_alone(store: SqliteRunStore) -> None:
    store.create_run(_run("r-1", status=Status.SUCCEEDED), [])
    assert not store.update_run("r-1", Status.FAILED, reason="late failure", exit_code=2)
    run = store.get_run("r-1")
    assert (run.status, run.reason, run.exit_code) == (Status.SUCCEEDED, None, None)


def test_step_updates_are_conditional_too(store: SqliteRunStore) -> None:
    store.create_run(_run("r-1"), _steps("r-1", "a", "b"))
    assert not store.update_step("r-1", "a", Status.SUCCEEDED)  # NOT_STARTED -> SUCCEEDED skips STARTED
    assert store.update_step("r-1", "a", Status.STARTED, attempts=1, started_at=T0)
    assert store.update_step("r-1", "a", attempts=2)
    assert store.update_step("r-1", "a", Status.FAILED, exit_code=3, reason="exit code 3")
    assert not store.update_step("r-1", "a", Status.STARTED)
    assert not store.update_step("r-1", "nope", Status.STARTED)
    a, b = store.list_steps("r-1")
    assert (a.status, a.attempts, a.exit_code, a.reason) == (Status.FAILED, 2, 3, "exit code 3")
    assert b.status is Status.NOT_STARTED  # only the named step changed


def test_fields_without_status_and_clearing_with_none(store: SqliteRunStore) -> None:
    store.create_run(_run("r-1", reason="queued"), [])
    assert store.update_run("r-1", reason=None, exit_code=4, params={"a": {"K": "v"}})
    run = store.get_run("r-1")
    assert (run.reason, run.exit_code, run.params) == (None, 4, {"a": {"K": "v"}})
    assert not store.update_run("r-missing", reason="x")


def test_bad_updates_name_the_field(store: SqliteRunStore) -> None:
    store.create_run(_run("r-1"), _steps("r-1", "a"))
    with pytest.raises(ValueError, match="no field 'colour'"):
        store.update_run("r-1", colour="red")
    with pytest.raises(ValueError, match="'workflow' cannot be updated"):
        store.update_run("r-1", workflow="other")
    with pytest.raises(ValueError, match="nothing to update"):
        store.update_step("r-1", "a")
    with pytest.raises(ValueError):
        store.update_step("r-1", "a", exit_code="not a number")
    assert store.get_run("r-1").workflow == "eeg"


def _all_pages(store: SqliteRunStore, limit: int, **filters) -> list[list[str]]:
    pages, cursor = [], None
    while True:
        page = store.list_runs(limit=limit, cursor=cursor, **filters)
        pages.append([run.run_id for run in page.runs])
        cursor = page.cursor
        if cursor is None:
            return pages


@pytest.fixture
def seven_runs(store: SqliteRunStore) -> SqliteRunStore:
    statuses = [Status.SUCCEEDED, Status.FAILED, Status.STARTED, Status.SUCCEEDED, Status.NOT_STARTED]
    for index in range(7):
        workflow = "eeg" if index % 2 == 0 else "mri"
        status = statuses[index % len(statuses)]
        store.create_run(
            _run(f"r-{index}", workflow, minutes=index, status=status), _steps(f"r-{index}", "a")
        )
    return store


def test_listing_everything_is_newest_first_across_pages(seven_runs: SqliteRunStore) -> None:
    assert _all_pages(seven_runs, limit=3) == [["r-6", "r-5", "r-4"], ["r-3", "r-2", "r-1"], ["r-0"]]


def test_listing_by_workflow_by_status_and_by_both(seven_runs: SqliteRunStore) -> None:
    assert _all_pages(seven_runs, limit=2, workflow="eeg") == [["r-6", "r-4"], ["r-2", "r-0"]]
    assert _all_pages(seven_runs, limit=2, status=Status.SUCCEEDED) == [["r-5", "r-3"], ["r-0"]]
    assert _all_pages(seven_runs, limit=1, workflow="eeg", status=Status.SUCCEEDED) == [["r-0"]]
    assert seven_runs.list_runs(workflow="none").runs == []


def test_runs_created_in_the_same_instant_page_without_loss_or_repeat(store: SqliteRunStore) -> None:
    for index in range(5):
        store.create_run(_run(f"r-{index}"), [])
    pages = _all_pages(store, limit=2)
    assert pages == [["r-4", "r-3"], ["r-2", "r-1"], ["r-0"]]


def test_a_page_that_ends_exactly_at_the_end_has_no_cursor(seven_runs: SqliteRunStore) -> None:
    page = seven_runs.list_runs(limit=7)
    assert len(page.runs) == 7 and page.cursor is None


def test_bad_cursors_are_refused_precisely(seven_runs: SqliteRunStore) -> None:
    with pytest.raises(ValueError, match="invalid cursor"):
        seven_runs.list_runs(cursor="not-base64!!")
    cursor = seven_runs.list_runs(limit=1, workflow="eeg").cursor
    with pytest.raises(ValueError, match="another listing"):
        seven_runs.list_runs(cursor=cursor, workflow="mri")
    with pytest.raises(ValueError, match="limit"):
        seven_runs.list_runs(limit=0)


def test_the_database_uses_wal_so_readers_never_wait_for_the_engine(store: SqliteRunStore) -> None:
    with closing(sqlite3.connect(store.path)) as other:  # WAL is a property of the file
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_racing_threads_see_exactly_one_transition_win(store: SqliteRunStore) -> None:
    store.create_run(_run("r-1"), _steps("r-1", "a"))
    barrier = threading.Barrier(8)
    wins: list[bool] = []

    def start() -> None:
        barrier.wait()
        wins.append(store.update_step("r-1", "a", Status.STARTED, attempts=1))

    threads = [threading.Thread(target=start) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(wins) == [False] * 7 + [True]


def test_a_second_process_can_cancel_a_run_the_first_one_is_writing(store: SqliteRunStore) -> None:
    store.create_run(_run("r-1", status=Status.STARTED), _steps("r-1", "a"))
    store.update_step("r-1", "a", Status.STARTED, attempts=1)  # this connection has written already
    script = (
        "import sys; from pennflow.stores.sqlite import SqliteRunStore; from pennflow.workflow.runs import Status;"
        "ok = SqliteRunStore(sys.argv[1]).update_run('r-1', Status.CANCELING); sys.exit(0 if ok else 1)"
    )
    subprocess.run([sys.executable, "-c", script, str(store.path)], check=True, timeout=30)
    assert store.get_run("r-1").status is Status.CANCELING
    assert store.update_run("r-1", Status.CANCELED)
