"""GET /runs/{id}/logs and /results with the API role as synthesized: live events from the processor
log group while the run is going, its archives once finalize copied them, and its result objects; the
presigned URLs handed out are GETs the API role itself may make (a presigned URL carries its signer's
permissions), and nothing beyond the run's prefixes."""

from __future__ import annotations

import time

import boto3
import pytest

from tests.iam.evaluator import Request
from tests.iam.lifecycle import (
    call_api,
    register,
    run_processor_task,
    start_run,
    task_event,
    tiny,
)
from tests.iam.moto_node import IamNode
from tests.iam.template import ACCOUNT, REGION

pytest_plugins = ["tests.fakes.pennsieve_fixtures"]
pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")


@pytest.fixture
def dataset(pennsieve):
    dataset = pennsieve.add_dataset("eeg")
    dataset.add_package("rec-0.edf", [("rec-0.edf", 1024)])
    return dataset


def get_object(bucket: str, key: str) -> Request:
    return Request("s3:GetObject", f"arn:aws:s3:::{bucket}/{key}")


def test_the_api_reads_a_runs_logs_live_then_archived_and_its_results(iam_node: IamNode, dataset):
    node = iam_node
    register(node, tiny())
    run_id = start_run(node, "tiny", datasetId=dataset.node_id)
    task = run_processor_task(node, run_id, "work")
    node.invoke("status", task_event(task, run_id, "work", "RUNNING"))
    environment = node.environment("api")
    group, log_bucket = environment["PROCESSOR_LOG_GROUP"], environment["LOG_ARCHIVE_BUCKET"]
    results_bucket = environment["RESULTS_BUCKET"]
    logs = boto3.client("logs", region_name=REGION)  # the processor's own writes, outside any role
    stream = f"work/processor/{task['taskArn'].rsplit('/', 1)[-1]}"
    logs.create_log_stream(logGroupName=group, logStreamName=stream)
    logs.put_log_events(
        logGroupName=group,
        logStreamName=stream,
        logEvents=[{"timestamp": int(time.time() * 1000), "message": "window 1 done"}],
    )

    live = call_api(node, "GET", f"/runs/{run_id}/logs")
    assert live.status == 200, live.body
    assert [e["message"] for e in live.body["events"]] == ["window 1 done"]

    boto3.client("ecs", region_name=REGION).stop_task(cluster=task["clusterArn"], task=task["taskArn"])
    node.invoke("status", task_event(task, run_id, "work", "STOPPED", exit_code=0))
    node.invoke("finalize", {"runId": run_id, "outcome": "SUCCEEDED"})
    boto3.client("s3", region_name=REGION).put_object(
        Bucket=results_bucket, Key=f"runs/{run_id}/report/summary.csv", Body=b"a\n"
    )

    archived = call_api(node, "GET", f"/runs/{run_id}/logs")
    results = call_api(node, "GET", f"/runs/{run_id}/results")

    assert archived.status == 200 and archived.body["source"] == "archive", archived.body
    assert results.status == 200, results.body
    assert {o["path"] for o in results.body["objects"]} == {"run.json", "report/summary.csv"}
    role = node.role("api")
    assert {"logs:FilterLogEvents", "s3:ListBucket"} <= node.recorder.actions[role]
    handed_out = [get_object(log_bucket, a["key"]) for a in archived.body["archives"]]
    handed_out += [get_object(results_bucket, o["key"]) for o in results.body["objects"]]
    assert handed_out and all(node.recorder.check(role, "GetObject", r) is None for r in handed_out)
    # ... and no further: another bucket's objects, or the results bucket outside runs/
    outside = [get_object(results_bucket, "layers/secret.txt"), get_object(f"other-{ACCOUNT}", "runs/x")]
    assert all(node.recorder.check(role, "GetObject", r) is not None for r in outside)
    node.recorder.denials.clear()  # the two refusals above were asked for, not made by the node
