"""The compiled state machine, executed in moto's Step Functions interpreter.

What reaches the handlers is asserted, not only the final status: what the finalize Lambda receives,
and the error names and causes a failed execution ends with (nothing catches them: the status
tracker finalizes a failed run from them).
"""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest

from pennflow.node.batches import write_batch_manifest
from pennflow.node.finalize import failed_processor
from pennflow.workflow.asl import compile_workflow, execution_input
from pennflow.workflow.definition import load_definition
from tests.harness.moto_sfn import ECS_REFUSED, HANG, MotoStepFunctions

ROOT = Path(__file__).resolve().parents[2]
DIAMOND = ROOT / "tests" / "fixtures" / "definitions" / "diamond.yaml"
MANIFEST_BUCKET = "pennflow-test-manifests"
MANIFEST_ITEMS = [{"path": f"sub-0{i}/rec.csv", "fileId": i, "size": 100 + i} for i in range(1, 8)]
# the manifest as the data plane writes it: batches of items
MANIFEST_BATCHES = [{"index": 0, "items": MANIFEST_ITEMS[:4]}, {"index": 1, "items": MANIFEST_ITEMS[4:]}]


class Handlers:
    """In-process stand-ins for the node's Lambdas, recording what the state machine sends them."""

    def __init__(self) -> None:
        self.finalize: list[dict] = []
        self.downloads: list[dict] = []
        self.batch_requests: list[dict] = []

    def on_finalize(self, event, context):
        self.finalize.append(event)
        return {"ok": True}

    def on_download(self, event, context):
        self.downloads.append(event)
        return {"files": len(event.get("batch", {}).get("items", []))}

    def on_list_batches(self, event, context):
        self.batch_requests.append(event)
        batches = [{"index": i, "inputDir": f"/mnt/run/band-power/batches/{i:05d}"} for i in range(3)]
        s3 = boto3.client("s3", region_name="us-east-1")
        return write_batch_manifest(s3, MANIFEST_BUCKET, event["runId"], event["processorId"], batches)


@pytest.fixture
def node():
    with MotoStepFunctions() as aws:
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=MANIFEST_BUCKET)
        s3.put_object(Bucket=MANIFEST_BUCKET, Key="runs/r-1/manifest.json", Body=json.dumps(MANIFEST_BATCHES))
        yield aws


def start(aws: MotoStepFunctions, outcomes=None, wait=True, edit=None):
    workflow = load_definition(DIAMOND)
    handlers = Handlers()
    lambdas = {
        "finalize": handlers.on_finalize,
        "download": handlers.on_download,
        "list-batches": handlers.on_list_batches,
    }
    for name, handler in lambdas.items():
        aws.register_lambda(name, handler)
    task_definitions = {p.id: aws.register_processor(p.id) for p in workflow.processors}
    data = execution_input(
        workflow,
        run_id="r-1",
        task_definitions=task_definitions,
        params={"convert": {"FORMAT": "csv"}},
        dataset_id="N:dataset:1",
        manifest={"bucket": MANIFEST_BUCKET, "key": "runs/r-1/manifest.json"},
        node={
            **aws.node,
            "finalizeFunction": aws.function_arn("finalize"),
            "downloadFunction": aws.function_arn("download"),
            "listBatchesFunction": aws.function_arn("list-batches"),
        },
    )
    definition = compile_workflow(workflow)
    if edit:
        edit(definition)
    if wait:
        return aws.run_execution(definition, data, outcomes=outcomes, timeout=30), handlers
    return aws.start_execution(definition, data, outcomes=outcomes), handlers


def started_order(result) -> list[str]:
    return [call.processor_id for call in result.run_task_calls]


def test_happy_path_runs_every_processor_in_dependency_order(node):
    result, handlers = start(node)
    assert result.status == "SUCCEEDED", (result.error, result.cause)
    order = started_order(result)
    assert order[0] == "convert" and order[-1] == "results"
    assert order.index("report") > max(order.index("quality"), order.index("band-power"))
    assert order.count("band-power") == 3, "one task per scatter batch"
    # the data source downloaded every manifest item through the Distributed Map
    downloaded = [
        item["fileId"] for call in handlers.downloads if "batch" in call for item in call["batch"]["items"]
    ]
    assert sorted(downloaded) == [item["fileId"] for item in MANIFEST_ITEMS]
    assert any(call.get("action") == "verify" for call in handlers.downloads)
    # params and ids arrive as environment overrides
    convert = result.calls_of("convert")[0]
    assert convert.environment["FORMAT"] == "csv"
    assert convert.environment["RUN_ID"] == "r-1"
    assert convert.environment["DATASET_ID"] == "N:dataset:1"
    assert handlers.finalize == [{"runId": "r-1", "outcome": "SUCCEEDED"}]


def test_processor_failing_then_succeeding_on_retry(node):
    result, handlers = start(node, outcomes={"convert": [1, 0]})
    assert result.status == "SUCCEEDED"
    attempts = result.calls_of("convert")
    assert [call.attempt for call in attempts] == [1, 2]
    assert handlers.finalize[-1]["outcome"] == "SUCCEEDED"


def test_processor_failing_for_good_fails_the_execution_at_its_own_state(node):
    result, handlers = start(node, outcomes={"quality": [3]})
    assert result.status == "FAILED"
    assert "report" not in started_order(result), "nothing after the failed processor starts"
    # No Catch: the execution ends with the processor's own error, and its state is the one that
    # never exited (what a redrive runs again); the status tracker finalizes from this end.
    assert not handlers.finalize
    assert result.error == "States.TaskFailed"
    task = json.loads(result.cause)
    assert [c["ExitCode"] for c in task["Containers"]] == [3]
    env = {e["Name"]: e["Value"] for e in task["Overrides"]["ContainerOverrides"][0]["Environment"]}
    assert env["PROCESSOR_ID"] == "quality", "the cause names the failed processor"
    entered = {
        e["stateEnteredEventDetails"]["name"] for e in result.history if "stateEnteredEventDetails" in e
    }
    exited = {e["stateExitedEventDetails"]["name"] for e in result.history if "stateExitedEventDetails" in e}
    assert "quality" in entered - exited and "convert" in exited
    failed = failed_processor({"Error": result.error, "Cause": result.cause}, [])
    assert (failed.processor_id, failed.exit_code) == ("quality", 3)


def test_cancel_stops_the_execution_and_its_running_task(node):
    # convert runs alone (no Map iteration is in flight), so moto's abort path stays the one AWS has
    execution_arn, handlers = start(node, outcomes={"convert": [HANG]}, wait=False)
    running = node.wait_for_run_task("convert", timeout=20)
    node.stop_execution(execution_arn)
    result = node.wait(execution_arn, timeout=20)
    assert result.status == "ABORTED"
    assert running.last_status == "STOPPED"
    assert not handlers.finalize, "an aborted execution does not finalize; the cancel Lambda does"


def _convert_state(definition: dict) -> dict:
    return definition["States"]["Run workflow"]["Branches"][0]["States"]["convert"]


def test_refused_run_tasks_use_the_infrastructure_retries_not_the_processor_ones(node):
    # convert allows 2 retries of its own; ECS refuses its RunTask three times, then runs it
    script = {"convert": [ECS_REFUSED, ECS_REFUSED, ECS_REFUSED, 0]}
    result, handlers = start(node, outcomes=script)
    assert result.status == "SUCCEEDED", (result.error, result.cause)
    assert [call.outcome for call in result.calls_of("convert")] == [ECS_REFUSED] * 3 + [0]
    # the ECS retrier's back-off (10 s doubling, full jitter), not convert's (5 s, x1.5)
    assert len(node.retry_intervals) == 3
    assert all(wait <= cap for wait, cap in zip(node.retry_intervals, (10, 20, 40), strict=True))
    refused = [
        e for e in result.events("TaskFailed") if e["taskFailedEventDetails"]["error"] != "States.TaskFailed"
    ]
    assert {e["taskFailedEventDetails"]["error"] for e in refused} == {"ECS.AmazonECSException"}


def test_with_the_processor_retrier_first_the_same_refusals_fail_the_run(node):
    # the order this replaced: States.TaskFailed matches ECS.AmazonECSException and takes the refusals
    def processor_retrier_first(definition: dict) -> None:
        _convert_state(definition)["Retry"].reverse()

    script = {"convert": [ECS_REFUSED, ECS_REFUSED, ECS_REFUSED, 0]}
    result, handlers = start(node, outcomes=script, edit=processor_retrier_first)
    assert result.status == "FAILED"
    assert len(result.calls_of("convert")) == 3
    assert result.error == "ECS.AmazonECSException"


def test_a_failing_scatter_batch_fails_the_distributed_map_and_the_run(node):
    script = {"band-power": lambda env, attempt: 3 if env["BATCH_INDEX"] == "1" else 0}
    result, handlers = start(node, outcomes=script)
    assert result.status == "FAILED"
    assert result.error == "States.ExceedToleratedFailureThreshold"
    assert "report" not in started_order(result), "nothing after the failed scatter starts"


def test_without_the_tolerance_patch_moto_lets_a_failing_batch_pass():
    with MotoStepFunctions(without=("distributed_map_fails",)) as aws:
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=MANIFEST_BUCKET)
        s3.put_object(Bucket=MANIFEST_BUCKET, Key="runs/r-1/manifest.json", Body=json.dumps(MANIFEST_BATCHES))
        script = {"band-power": lambda env, attempt: 3 if env["BATCH_INDEX"] == "1" else 0}
        result, _ = start(aws, outcomes=script)
    assert result.status == "SUCCEEDED"


def test_without_the_result_writer_patch_its_paths_miss_the_state_input():
    with MotoStepFunctions(without=("result_writer_reads_state_input",)) as aws:
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=MANIFEST_BUCKET)
        s3.put_object(Bucket=MANIFEST_BUCKET, Key="runs/r-1/manifest.json", Body=json.dumps(MANIFEST_BATCHES))
        result, handlers = start(aws)
    assert result.status == "FAILED"
    assert result.error == "States.Runtime" and "$.run.manifest.bucket" in result.cause


def test_without_the_ecs_error_patch_a_refused_run_task_is_states_runtime():
    with MotoStepFunctions(without=("ecs_errors_are_amazon_ecs_exceptions",)) as aws:
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=MANIFEST_BUCKET)
        s3.put_object(Bucket=MANIFEST_BUCKET, Key="runs/r-1/manifest.json", Body=json.dumps(MANIFEST_BATCHES))
        result, handlers = start(aws, outcomes={"convert": [ECS_REFUSED, 0]})
    assert result.status == "FAILED"
    assert result.error == "States.Runtime"
