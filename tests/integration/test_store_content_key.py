"""``find_succeeded_by_content_key`` on both run stores: DynamoDB (moto, the stack's key schema and
its by-content-key index) and SQLite. The same cases run against each."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from pennflow.data.content_key import find_duplicate
from pennflow.stores import dynamodb as ddb
from pennflow.stores.sqlite import SqliteRunStore
from pennflow.workflow.runs import RunRecord, Status, StepRecord
from tests.integration import aws_fixtures

mocked_aws = aws_fixtures.mocked_aws
run_store = aws_fixtures.run_store

START = datetime(2025, 1, 1, tzinfo=UTC)


@pytest.fixture
def sqlite_store(tmp_path) -> Iterator[SqliteRunStore]:
    with SqliteRunStore(tmp_path / "pennflow.db") as store:
        yield store


@pytest.fixture(params=["dynamodb", "sqlite"])
def store(request: pytest.FixtureRequest):
    return request.getfixturevalue("run_store" if request.param == "dynamodb" else "sqlite_store")


def add(store, run_id: str, key: str | None, status: Status, days: int) -> RunRecord:
    """A run created ``days`` after START, moved along the status model to ``status``."""
    run = RunRecord(
        run_id=run_id,
        workflow="eeg-quality",
        definition_hash="h" * 64,
        content_key=key,
        created_at=START + timedelta(days=days),
        origin="api",
    )
    store.create_run(run, [StepRecord(run_id=run_id, processor_id="convert")])
    if status is not Status.NOT_STARTED:
        store.update_run(run_id, Status.STARTED)
    if status is not Status.STARTED and status is not Status.NOT_STARTED:
        assert store.update_run(run_id, status)
    return run


def test_the_newest_succeeded_run_with_the_key_is_found(store) -> None:
    add(store, "r-old", "k1", Status.SUCCEEDED, 1)
    add(store, "r-new", "k1", Status.SUCCEEDED, 2)
    add(store, "r-failed", "k1", Status.FAILED, 3)  # newer, but it did not succeed
    add(store, "r-running", "k1", Status.STARTED, 4)
    add(store, "r-other", "k2", Status.SUCCEEDED, 5)
    add(store, "r-unkeyed", None, Status.SUCCEEDED, 6)

    found = store.find_succeeded_by_content_key("k1")

    assert found is not None and found.run_id == "r-new"
    assert found.content_key == "k1" and found.status is Status.SUCCEEDED
    assert store.find_succeeded_by_content_key("k2").run_id == "r-other"
    assert store.find_succeeded_by_content_key("k3") is None
    assert find_duplicate(store, "k1").run_id == "r-new"  # the content-key module asks the store


def test_a_run_becomes_a_duplicate_only_once_it_succeeded(store) -> None:
    add(store, "r-1", "k1", Status.STARTED, 1)
    assert store.find_succeeded_by_content_key("k1") is None

    store.update_run("r-1", Status.SUCCEEDED)

    assert store.find_succeeded_by_content_key("k1").run_id == "r-1"


def test_the_key_is_stored_on_the_run_and_listing_is_unchanged(store) -> None:
    add(store, "r-1", "k1", Status.NOT_STARTED, 1)
    add(store, "r-2", None, Status.NOT_STARTED, 2)

    assert store.get_run("r-1").content_key == "k1"
    assert store.get_run("r-2").content_key is None
    assert [r.run_id for r in store.list_runs().runs] == ["r-2", "r-1"]


def test_the_dynamodb_index_holds_only_keyed_runs_never_their_steps(run_store: ddb.DynamoRunStore) -> None:
    add(run_store, "r-1", "k1", Status.SUCCEEDED, 1)
    add(run_store, "r-2", None, Status.SUCCEEDED, 2)

    items = run_store.client.scan(TableName=run_store.table_name, IndexName=ddb.BY_CONTENT_KEY)["Items"]

    assert [(i[ddb.PK]["S"], i[ddb.SK]["S"]) for i in items] == [("r-1", ddb.RUN_SK)]
    assert set(items[0]) == {ddb.PK, ddb.SK, ddb.CONTENT_KEY_ATTR, ddb.CREATED_ATTR, ddb.STATUS_ATTR}
