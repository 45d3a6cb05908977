"""The DynamoDB run store against moto: transactions, conditional status writes, listing pages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pennflow.stores import StoreConflict
from pennflow.stores.dynamodb import DynamoRunStore
from pennflow.workflow.runs import RunRecord, Status, StepRecord
from tests.integration import aws_fixtures

mocked_aws = aws_fixtures.mocked_aws
run_store = aws_fixtures.run_store

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def _run(run_id: str, workflow: str = "eeg", minutes: int = 0, **fields) -> RunRecord:
    return RunRecord(
        run_id=run_id,
        workflow=workflow,
        definition_hash="abc",
        created_at=T0 + timedelta(minutes=minutes),
        origin="api",
        **fields,
    )


def _steps(run_id: str, *ids: str) -> list[StepRecord]:
    return [StepRecord(run_id=run_id, processor_id=pid) for pid in ids]


def test_a_run_and_its_steps_round_trip_in_definition_order(run_store: DynamoRunStore) -> None:
    run = _run("r-1", params={"convert": {"WINDOW": "30"}}, layers=[{"name": "sci"}], dataset_id="N:ds:1")
    run_store.create_run(run, _steps("r-1", "zeta", "alpha", "mid"))

    assert run_store.get_run("r-1") == run
    assert [s.processor_id for s in run_store.list_steps("r-1")] == ["zeta", "alpha", "mid"]
    assert run_store.get_run("r-missing") is None


def test_creating_an_existing_run_conflicts_and_changes_nothing(run_store: DynamoRunStore) -> None:
    run_store.create_run(_run("r-1"), _steps("r-1", "a"))
    with pytest.raises(StoreConflict, match="r-1"):
        run_store.create_run(_run("r-1", workflow="other"), _steps("r-1", "b"))
    assert run_store.get_run("r-1").workflow == "eeg"
    assert [s.processor_id for s in run_store.list_steps("r-1")] == ["a"]


def test_a_run_of_more_processors_than_one_transaction_holds_is_stored_whole(
    run_store: DynamoRunStore,
) -> None:
    ids = [f"p{i:03d}" for i in range(250)]  # the run item and 250 steps: three transactions
    sizes: list[int] = []
    run_store.client.meta.events.register(
        "before-parameter-build.dynamodb.TransactWriteItems",
        lambda params, **_: sizes.append(len(params["TransactItems"])),
    )
    run_store.create_run(_run("r-wide"), _steps("r-wide", *ids))

    assert sizes == [100, 53, 100]  # 99 steps + the run's condition check, 52 + check, the run + 99

    assert run_store.get_run("r-wide").workflow == "eeg"
    assert [s.processor_id for s in run_store.list_steps("r-wide")] == ids
    # Created again with more steps: refused before any of its steps lands on the existing run.
    with pytest.raises(StoreConflict, match="r-wide"):
        run_store.create_run(_run("r-wide"), _steps("r-wide", *ids, *(f"q{i:03d}" for i in range(120))))
    assert [s.processor_id for s in run_store.list_steps("r-wide")] == ids
    run_store.create_run(_run("r-small"), _steps("r-small", "a"))
    with pytest.raises(StoreConflict, match="r-small"):
        run_store.create_run(_run("r-small"), _steps("r-small", *ids))
    assert [s.processor_id for s in run_store.list_steps("r-small")] == ["a"]


def test_status_moves_forward_only(run_store: DynamoRunStore) -> None:
    run_store.create_run(_run("r-1"), _steps("r-1", "a"))

    assert run_store.update_run("r-1", Status.STARTED, execution_arn="arn:x", started_at=T0)
    assert not run_store.update_run("r-1", Status.NOT_STARTED)
    assert run_store.update_run("r-1", Status.SUCCEEDED, finished_at=T0 + timedelta(hours=1))
    assert not run_store.update_run("r-1", Status.STARTED)  # a late event
    assert not run_store.update_run("r-1", Status.FAILED)

    run = run_store.get_run("r-1")
    assert (run.status, run.execution_arn, run.finished_at) == (
        Status.SUCCEEDED,
        "arn:x",
        T0 + timedelta(hours=1),
    )


def test_a_refused_status_write_leaves_the_other_fields_alone(run_store: DynamoRunStore) -> None:
    run_store.create_run(_run("r-1", status=Status.SUCCEEDED), [])
    assert not run_store.update_run("r-1", Status.FAILED, reason="late failure")
    assert run_store.get_run("r-1").reason is None


def test_step_updates_are_conditional_too(run_store: DynamoRunStore) -> None:
    run_store.create_run(_run("r-1"), _steps("r-1", "a"))
    assert not run_store.update_step("r-1", "a", Status.SUCCEEDED)  # NOT_STARTED -> SUCCEEDED skips STARTED
    assert run_store.update_step("r-1", "a", Status.STARTED, attempts=1, started_at=T0)
    assert run_store.update_step("r-1", "a", Status.FAILED, exit_code=3, reason="exit 3")
    assert not run_store.update_step("r-1", "a", Status.STARTED)
    assert not run_store.update_step("r-1", "nope", Status.STARTED)
    step = run_store.list_steps("r-1")[0]
    assert (step.status, step.attempts, step.exit_code) == (Status.FAILED, 1, 3)


def test_fields_without_status_and_removal_with_none(run_store: DynamoRunStore) -> None:
    run_store.create_run(_run("r-1", reason="queued"), [])
    assert run_store.update_run("r-1", reason=None, exit_code=4)
    run = run_store.get_run("r-1")
    assert (run.reason, run.exit_code) == (None, 4)
    assert not run_store.update_run("r-missing", reason="x")


def test_bad_updates_name_the_field(run_store: DynamoRunStore) -> None:
    run_store.create_run(_run("r-1"), _steps("r-1", "a"))
    with pytest.raises(ValueError, match="no field 'colour'"):
        run_store.update_run("r-1", colour="red")
    with pytest.raises(ValueError, match="'workflow_name' cannot be updated"):
        run_store.update_run("r-1", workflow="other")
    with pytest.raises(ValueError, match="nothing to update"):
        run_store.update_step("r-1", "a")
    with pytest.raises(ValueError):
        run_store.update_step("r-1", "a", exit_code="not a number")


def test_tasks_count_as_attempts_once_each(run_store: DynamoRunStore) -> None:
    run_store.create_run(_run("r-1"), _steps("r-1", "a", "b"))
    assert run_store.record_task("r-1", "a", "arn:task/1")
    assert not run_store.record_task("r-1", "a", "arn:task/1")
    assert run_store.record_task("r-1", "a", "arn:task/2")
    assert not run_store.record_task("r-1", "missing", "arn:task/3")
    assert run_store.list_steps("r-1")[0].attempts == 2
    assert run_store.step_tasks("r-1") == {"a": ["arn:task/1", "arn:task/2"], "b": []}


def _all_pages(store: DynamoRunStore, limit: int, **filters) -> list[list[str]]:
    pages, cursor = [], None
    while True:
        page = store.list_runs(limit=limit, cursor=cursor, **filters)
        pages.append([run.run_id for run in page.runs])
        cursor = page.cursor
        if cursor is None:
            return pages


@pytest.fixture
def seven_runs(run_store: DynamoRunStore) -> DynamoRunStore:
    statuses = [Status.SUCCEEDED, Status.FAILED, Status.STARTED, Status.SUCCEEDED, Status.NOT_STARTED]
    for index in range(7):
        workflow = "eeg" if index % 2 == 0 else "mri"
        status = statuses[index % len(statuses)]
        run_store.create_run(
            _run(f"r-{index}", workflow, minutes=index, status=status), _steps(f"r-{index}", "a")
        )
    return run_store


def test_listing_everything_is_newest_first_across_pages(seven_runs: DynamoRunStore) -> None:
    pages = _all_pages(seven_runs, limit=3)
    assert pages == [["r-6", "r-5", "r-4"], ["r-3", "r-2", "r-1"], ["r-0"]]


def test_listing_by_workflow_by_status_and_by_both(seven_runs: DynamoRunStore) -> None:
    assert _all_pages(seven_runs, limit=2, workflow="eeg") == [["r-6", "r-4"], ["r-2", "r-0"]]
    assert _all_pages(seven_runs, limit=2, status=Status.SUCCEEDED) == [["r-5", "r-3"], ["r-0"]]
    assert _all_pages(seven_runs, limit=1, workflow="eeg", status=Status.SUCCEEDED) == [["r-0"]]
    assert seven_runs.list_runs(workflow="none").runs == []


def test_a_page_that_ends_exactly_at_the_end_has_no_cursor(seven_runs: DynamoRunStore) -> None:
    page = seven_runs.list_runs(limit=7)
    assert len(page.runs) == 7 and page.cursor is None


def test_steps_never_appear_in_listings(seven_runs: DynamoRunStore) -> None:
    listed = [run.run_id for run in seven_runs.list_runs(status=Status.NOT_STARTED, limit=50).runs]
    assert listed == ["r-4"]  # each run also has a NOT_STARTED step, which the index leaves out


def test_bad_cursors_are_refused_precisely(seven_runs: DynamoRunStore) -> None:
    with pytest.raises(ValueError, match="invalid cursor"):
        seven_runs.list_runs(cursor="not-base64!!")
    cursor = seven_runs.list_runs(limit=1, workflow="eeg").cursor
    with pytest.raises(ValueError, match="another listing"):
        seven_runs.list_runs(cursor=cursor, workflow="mri")
    with pytest.raises(ValueError, match="limit"):
        seven_runs.list_runs(limit=0)
