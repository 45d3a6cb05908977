"""Resuming on the node, each function with its own role as synthesized (default settings): a failed
run (finalized by the status function from its execution's FAILED event) keeps its slot, the resume function asks Step Functions whether the execution can be redriven,
and its scheduled cleanup reads the slots and runs; every call must be allowed (checked at teardown).

moto's DescribeExecution gives no redriveStatus, so the resume is refused there: the redrive call
itself is checked against the service model in tests/integration/test_node_redrive.py."""

from __future__ import annotations

import boto3
import pytest

from tests.iam.lifecycle import (
    execution_event,
    register,
    run_processor_task,
    run_record,
    slot_of,
    start_run,
    task_event,
    tiny,
)
from tests.iam.moto_node import IamNode
from tests.iam.template import REGION

pytest_plugins = ["tests.fakes.pennsieve_fixtures"]
pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")


@pytest.fixture
def dataset(pennsieve):
    dataset = pennsieve.add_dataset("eeg")
    dataset.add_package("rec-0.edf", [("rec-0.edf", 1024)])
    return dataset


def test_a_failed_run_keeps_its_slot_and_the_resume_function_may_ask_about_it(iam_node: IamNode, dataset):
    node = iam_node
    register(node, tiny())
    run_id = start_run(node, "tiny", datasetId=dataset.node_id)
    task = run_processor_task(node, run_id, "work")
    boto3.client("ecs", region_name=REGION).stop_task(cluster=task["clusterArn"], task=task["taskArn"])
    node.invoke("status", task_event(task, run_id, "work", "STOPPED", exit_code=1))
    ended = {"error": "States.TaskFailed", "cause": "Essential container in task exited"}
    node.invoke("status", execution_event(run_record(node, run_id).execution_arn, "FAILED", **ended))

    record = run_record(node, run_id)
    assert record.status.value == "FAILED" and record.resume_until is not None
    assert slot_of(node, run_id) is not None  # kept for failedRunRetentionDays (7 by default)

    answer = node.invoke("resume", {"runId": run_id})
    released = node.invoke("resume", {"action": "releaseExpired"})

    assert "Step Functions cannot redrive" in answer["refused"]
    assert node.recorder.actions[node.role("resume")] >= {"states:DescribeExecution", "dynamodb:GetItem"}
    assert released == {"released": []}  # not expired, and no run waits for a slot
    assert slot_of(node, run_id) is not None
