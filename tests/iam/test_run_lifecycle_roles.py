"""A run's life on the node, each function with its own role as synthesized: the API registers
the workflow and starts the run, prepare leases a slot and starts the execution, the status
function follows EventBridge, finalize archives and releases, cancel stops, queued runs start."""

from __future__ import annotations

import boto3
import pytest

from tests.iam.lifecycle import (
    call_api,
    deliver,
    execution_event,
    register,
    run_processor_task,
    run_record,
    slot_of,
    slot_pool,
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
    for i in range(3):
        dataset.add_package(f"rec-{i}.edf", [(f"rec-{i}.edf", 1024)])
    return dataset


@pytest.fixture
def registered(iam_node: IamNode) -> IamNode:
    register(iam_node, tiny())
    return iam_node


def test_a_started_run_is_canceled_and_its_task_stopped(registered: IamNode, dataset):
    node = registered
    run_id = start_run(node, "tiny", datasetId=dataset.node_id)
    assert call_api(node, "GET", f"/runs/{run_id}").body["status"] == "STARTED"
    task = run_processor_task(node, run_id, "work")

    assert call_api(node, "POST", f"/runs/{run_id}/cancel").status == 202
    deliver(node, "cancel")

    stopped = boto3.client("ecs", region_name=REGION).describe_tasks(
        cluster=task["clusterArn"], tasks=[task["taskArn"]]
    )
    assert stopped["tasks"][0]["desiredStatus"] == "STOPPED"
    assert call_api(node, "GET", f"/runs/{run_id}").body["status"] in ("CANCELING", "CANCELED")
    assert node.recorder.actions[node.role("cancel")] >= {
        "ecs:ListTasks",
        "ecs:StopTask",
        "states:StopExecution",
    }


def test_prepare_builds_the_manifest_when_the_api_wrote_none(registered: IamNode, dataset):
    node = registered
    reply = call_api(node, "POST", "/runs", body={"workflow": "tiny", "datasetId": dataset.node_id})
    run_id = reply.body["runId"]
    bucket = node.environment("prepare")["RESULTS_BUCKET"]
    s3 = boto3.client("s3", region_name=REGION)
    s3.delete_object(Bucket=bucket, Key=f"runs/{run_id}/manifest.json")

    deliver(node, "prepare")

    assert run_record(node, run_id).status.value == "STARTED"
    assert s3.get_object(Bucket=bucket, Key=f"runs/{run_id}/manifest.json")["Body"].read()
    assert "s3:ListBucket" in node.recorder.actions[node.role("prepare")]


def test_a_run_succeeds_through_status_events_and_finalize_then_a_queued_run_starts(
    registered: IamNode, dataset
):
    node = registered
    pool = slot_pool(node)
    for index in range(int(node.environment("prepare")["RUN_SLOTS"]) - 1):  # all slots but one are busy
        pool.lease(f"other-{index}")
    first = start_run(node, "tiny", datasetId=dataset.node_id)
    queued = start_run(node, "tiny", datasetId=dataset.node_id)
    assert run_record(node, queued).status.value == "NOT_STARTED"

    execution = run_record(node, first).execution_arn
    node.invoke("status", execution_event(execution, "RUNNING"))
    task = run_processor_task(node, first, "work")
    node.invoke("status", task_event(task, first, "work", "RUNNING"))
    boto3.client("ecs", region_name=REGION).stop_task(cluster=task["clusterArn"], task=task["taskArn"])
    node.invoke("status", task_event(task, first, "work", "STOPPED", exit_code=0))
    node.invoke("finalize", {"runId": first, "outcome": "SUCCEEDED"})
    node.invoke("status", execution_event(execution, "SUCCEEDED"))

    assert run_record(node, first).status.value == "SUCCEEDED"
    assert run_record(node, queued).status.value == "STARTED"  # the freed slot went to the queued run
    assert slot_of(node, first) is None


def test_a_failed_processor_fails_the_run_and_frees_its_slot(registered: IamNode, dataset):
    node = registered
    node.extra_environment["FAILED_RUN_RETENTION_DAYS"] = "0"  # a node that keeps no slot for resumes
    run_id = start_run(node, "tiny", datasetId=dataset.node_id)
    execution = run_record(node, run_id).execution_arn
    task = run_processor_task(node, run_id, "work")
    boto3.client("ecs", region_name=REGION).stop_task(cluster=task["clusterArn"], task=task["taskArn"])
    node.invoke("status", task_event(task, run_id, "work", "STOPPED", exit_code=1))
    # Nothing in the machine catches the failure: the status function finalizes the failed execution.
    ended = {"error": "States.TaskFailed", "cause": "Essential container in task exited"}
    node.invoke("status", execution_event(execution, "FAILED", **ended))

    record = run_record(node, run_id)
    assert (record.status.value, record.failed_processor) == ("FAILED", "work")
    assert slot_of(node, run_id) is None
    node.invoke("status", execution_event(execution, "FAILED", **ended))  # delivered twice: no change


def test_an_execution_that_failed_without_finalizing_is_finalized_by_status(registered: IamNode, dataset):
    node = registered
    node.extra_environment["FAILED_RUN_RETENTION_DAYS"] = "0"  # a node that keeps no slot for resumes
    run_id = start_run(node, "tiny", datasetId=dataset.node_id)
    node.invoke("status", execution_event(run_record(node, run_id).execution_arn, "TIMED_OUT"))

    assert run_record(node, run_id).status.value == "FAILED"
    assert slot_of(node, run_id) is None


def test_a_scattered_processor_gets_its_batches_listed_in_the_run_folder(iam_node: IamNode, dataset):
    from tests.iam.lifecycle import scattered

    register(iam_node, scattered())
    run_id = start_run(iam_node, "scattered", datasetId=dataset.node_id)
    inputs = iam_node.runs_mount / "slots" / slot_of(iam_node, run_id).slot_id / "source" / "output"
    inputs.mkdir(parents=True)
    for i in range(3):
        (inputs / f"rec-{i}.edf").write_bytes(b"x")

    processor = "work"
    event = {"runId": run_id, "processorId": processor, "inputDir": "/mnt/run/source/output", "batchSize": 2}
    answer = iam_node.invoke("list_batches", event)

    assert answer["count"] == 2 and answer["key"].startswith(f"runs/{run_id}/{processor}/")
    boto3.client("s3", region_name=REGION).head_object(Bucket=answer["bucket"], Key=answer["key"])
    role = iam_node.role("list_batches")
    assert iam_node.recorder.actions[role] == {"dynamodb:BatchGetItem", "s3:PutObject"}


def test_the_api_lists_and_reads_workflows_and_runs_and_reruns_a_finished_run(registered: IamNode, dataset):
    node = registered
    run_id = start_run(node, "tiny", datasetId=dataset.node_id)
    node.invoke("finalize", {"runId": run_id, "outcome": "SUCCEEDED"})

    assert [w["name"] for w in call_api(node, "GET", "/workflows").body["workflows"]] == ["tiny"]
    assert call_api(node, "GET", "/workflows/tiny").status == 200
    listed = call_api(node, "GET", "/runs", query={"workflow": "tiny"})
    assert listed.status == 200 and run_id in str(listed.body)
    rerun = call_api(node, "POST", f"/runs/{run_id}/rerun")
    assert rerun.status == 202, rerun.body
    (prepared,) = deliver(node, "prepare")
    assert prepared["outcome"] == "started"
