"""Both run stores keep every field of a run record, so a rerun on either side repeats it exactly."""

from __future__ import annotations

import pytest

from pennflow.stores.sqlite import SqliteRunStore
from pennflow.workflow.runs import RunRecord, Status, StepRecord
from tests.integration import aws_fixtures

mocked_aws = aws_fixtures.mocked_aws
run_store = aws_fixtures.run_store


@pytest.fixture(params=["sqlite", "dynamodb"])
def store(request, tmp_path):
    if request.param == "sqlite":
        with SqliteRunStore(tmp_path / "runs.db") as sqlite_store:
            yield sqlite_store
    else:
        yield request.getfixturevalue("run_store")


def test_every_run_field_round_trips(store):
    run = RunRecord(
        run_id="r-parity",
        workflow="eeg-quality",
        definition_hash="a" * 64,
        dataset_id="N:dataset:1",
        package_ids=["N:package:1", "N:package:2"],
        params={"convert": {"FORMAT": "npz"}},
        layers=[{"name": "atlas", "version": "3", "checksum": "c" * 64}],
        content_key="k" * 64,
    )
    store.create_run(run, [StepRecord(run_id=run.run_id, processor_id="convert")])
    assert store.update_run(run.run_id, Status.STARTED, execution_arn="arn:exec")
    loaded = store.get_run(run.run_id)
    assert loaded.package_ids == ["N:package:1", "N:package:2"]
    assert loaded.layers == run.layers
    assert loaded.params == run.params
    assert (loaded.status, loaded.execution_arn, loaded.content_key) == (Status.STARTED, "arn:exec", "k" * 64)
