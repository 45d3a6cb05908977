"""A run's life on the node, each function with its own role as synthesized: the API registers
the workflow and starts the run, prepare leases a slot and starts the execution, cancel stops it."""

from __future__ import annotations

import pytest

from tests.iam.lifecycle import call_api, deliver, register, start_run, tiny
from tests.iam.moto_node import IamNode

pytest_plugins = ["tests.fakes.pennsieve_fixtures"]
pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")


@pytest.fixture
def dataset(pennsieve):
    dataset = pennsieve.add_dataset("eeg")
    for i in range(3):
        dataset.add_package(f"rec-{i}.edf", [(f"rec-{i}.edf", 1024)])
    return dataset


def test_a_run_with_a_data_source_starts_and_is_canceled(iam_node: IamNode, dataset):
    register(iam_node, tiny())
    run_id = start_run(iam_node, "tiny", datasetId=dataset.node_id)
    reply = call_api(iam_node, "GET", f"/runs/{run_id}")
    assert reply.status == 200 and reply.body["status"] == "STARTED", reply.body

    assert call_api(iam_node, "POST", f"/runs/{run_id}/cancel").status == 202
    deliver(iam_node, "pennflow-cancel")
    assert call_api(iam_node, "GET", f"/runs/{run_id}").body["status"] in ("CANCELING", "CANCELED")
