"""A run's measured cost: finalize on moto (tasks, manifest, EFS files, record, run.json), and the
Step Functions histories read through botocore's Stubber (pages, map runs, Lambda durations)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from botocore.stub import Stubber

from pennflow.node import run_cost
from pennflow.node.finalize import finalize_run
from pennflow.node.lifecycle import prepare_run
from pennflow.node.tracking import handle_event
from pennflow.pennsieve.download import ByteRange
from pennflow.pennsieve.manifest import ManifestEntry
from pennflow.pennsieve.pool import BATCHES, WorkItem
from pennflow.processors.lambda_bootstrap import invocation_attempt, is_invocation_attempt
from pennflow.workflow.cost import LIST_PRICES
from pennflow.workflow.definition import validate_definition
from tests.integration import aws_fixtures
from tests.integration.aws_fixtures import EEG, REGION, RESULTS_BUCKET, MotoNode, workflow_from
from tests.integration.test_lifecycle_tracking import task_event

mocked_aws = aws_fixtures.mocked_aws
moto_node = aws_fixtures.moto_node
US = LIST_PRICES["us-east-1"]
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def started(moto_node: MotoNode) -> tuple[MotoNode, str]:
    workflow = workflow_from(EEG)
    moto_node.register(workflow)
    run = moto_node.create_run(workflow, dataset_id="N:dataset:7")
    prepare_run(run.run_id, moto_node.node)
    return moto_node, run.run_id


def test_finalize_records_the_itemised_cost_in_the_run_and_run_json(started) -> None:
    node, run_id = started
    # Two 5-minute tasks that ECS no longer describes: costed from their steps at the definition's settings.
    for event in (
        task_event(run_id, "convert", "STOPPED", task="cv1", exit_code=0),
        task_event(run_id, "quality", "STOPPED", task="q1", exit_code=2),
    ):
        handle_event(event, node.node)
    slot = node.node.slots.held_by(run_id)
    output = node.slot_dir(slot.slot_id) / "convert" / "output"
    output.mkdir(parents=True)
    (output / "x.npy").write_bytes(b"\0" * 4096)

    summary = finalize_run(run_id, "FAILED", {"Error": "States.TaskFailed", "Cause": "x"}, node.node)

    run = node.store.get_run(run_id)
    assert run.cost is not None and summary.cost == run.cost
    by_processor: dict[str, float] = {}
    for line in run.cost["lines"]:
        if line["processorId"]:
            by_processor[line["processorId"]] = by_processor.get(line["processorId"], 0) + line["usd"]
    # convert: 0.5 vCPU, 1 GB, 300 s; quality: 1 vCPU, 2 GB, 300 s (the defaults)
    assert by_processor["convert"] == pytest.approx(
        300 / 3600 * (0.5 * US.fargate_vcpu_hour_x86 + US.fargate_gb_hour_x86)
    )
    assert by_processor["quality"] == pytest.approx(
        300 / 3600 * (US.fargate_vcpu_hour_x86 + 2 * US.fargate_gb_hour_x86)
    )
    assert any("not described by ECS" in note for note in run.cost["notes"])
    assert run.cost["region"] == REGION and run.cost["totalUsd"] == pytest.approx(
        sum(line["usd"] for line in run.cost["lines"])
    )
    body = boto3.client("s3", region_name=REGION).get_object(
        Bucket=RESULTS_BUCKET, Key=f"runs/{run_id}/run.json"
    )
    assert json.loads(body["Body"].read())["cost"] == run.cost
    again = finalize_run(run_id, "FAILED", None, node.node)  # a repeated finalize keeps the first figure
    assert again.cost == run.cost


def test_a_described_task_is_billed_from_its_image_pull_to_its_stop(started) -> None:
    node, run_id = started
    ecs = boto3.client("ecs", region_name=REGION)
    arns = [f"arn:aws:ecs:us-east-1:123456789012:task/pennflow/b{i}" for i in range(2)]
    for arn in arns:
        node.store.record_task(run_id, "bandpower", arn)
    tasks = [
        {
            "taskArn": arns[0],
            "cpu": "2048",
            "memory": "4096",
            "pullStartedAt": T0,
            "startedAt": T0 + timedelta(seconds=20),
            "stoppedAt": T0 + timedelta(seconds=100.2),
            "attributes": [{"name": "ecs.cpu-architecture", "value": "arm64"}],
        },
        {"taskArn": arns[1], "cpu": "1024", "memory": "2048", "startedAt": T0},  # still running
    ]
    with Stubber(ecs) as stub:
        stub.add_response(
            "describe_tasks", {"tasks": tasks}, {"cluster": node.node.config.cluster_arn, "tasks": arns}
        )
        node.node.ecs_client = ecs
        run = node.store.get_run(run_id)
        usage = list(
            run_cost._tasks(
                node.node,
                run,
                node.store.list_steps(run_id),
                workflow_from(EEG),
                T0 + timedelta(seconds=30),
                [],
            )
        )
    assert [(u.cpu_units, u.memory_mib, u.billed_seconds, u.architecture.value) for u in usage] == [
        (2048, 4096, 101, "arm64"),  # from the image pull, rounded up to the second
        (1024, 2048, 60, "x86_64"),  # 30 s so far: a minute is the least Fargate bills
    ]


def test_the_manifest_bytes_are_what_went_through_the_nat(started) -> None:
    node, run_id = started

    def entry(file_id: int, size: int) -> ManifestEntry:
        return ManifestEntry(
            dataset_id="N:dataset:7",
            package_node_id=f"N:package:{file_id}",
            package_id=file_id,
            file_id=file_id,
            path=f"f{file_id}.edf",
            size=size,
        )

    big = entry(2, 7000)
    batches = [
        [WorkItem(entry=entry(1, 3000))],
        [
            WorkItem(entry=big, range=ByteRange(start=0, end=4999)),
            WorkItem(entry=big, range=ByteRange(start=5000, end=6999)),
        ],
    ]
    boto3.client("s3", region_name=REGION).put_object(
        Bucket=RESULTS_BUCKET, Key=f"runs/{run_id}/manifest.json", Body=BATCHES.dump_json(batches)
    )
    assert run_cost._downloaded_bytes(node.node, run_id, []) == 10_000
    assert run_cost._downloaded_bytes(node.node, "r-none", []) == 0


def _event(event_id: int, kind: str, at: int, previous: int = 0, **details) -> dict:
    return {
        "id": event_id,
        "type": kind,
        "timestamp": T0 + timedelta(seconds=at),
        "previousEventId": previous,
        **details,
    }


def _entered(event_id: int, name: str, at: int, previous: int = 0) -> dict:
    return _event(event_id, "TaskStateEntered", at, previous, stateEnteredEventDetails={"name": name})


def _lambda_task(first: int, name: str, start: int, seconds: int, parameters: str = "{}") -> list[dict]:
    return [
        _entered(first, name, start, first - 1),
        _event(
            first + 1,
            "TaskScheduled",
            start,
            first,
            taskScheduledEventDetails={
                "resourceType": "lambda",
                "resource": "invoke",
                "region": REGION,
                "parameters": parameters,
            },
        ),
        _event(
            first + 2,
            "TaskStarted",
            start,
            first + 1,
            taskStartedEventDetails={"resourceType": "lambda", "resource": "invoke"},
        ),
        _event(
            first + 3,
            "TaskSucceeded",
            start + seconds,
            first + 2,
            taskSucceededEventDetails={"resourceType": "lambda", "resource": "invoke"},
        ),
    ]


def test_histories_count_transitions_across_pages_and_map_run_children(monkeypatch) -> None:
    sfn = boto3.client("stepfunctions", region_name=REGION)
    root = "arn:aws:states:us-east-1:123456789012:execution:pennflow_eeg:r-1"
    map_run = "arn:aws:states:us-east-1:123456789012:mapRun:pennflow_eeg/recordings:abc"
    child = "arn:aws:states:us-east-1:123456789012:execution:pennflow_eeg/recordings:child-1"
    started = _event(2, "MapRunStarted", 1, 1, mapRunStartedEventDetails={"mapRunArn": map_run})
    with Stubber(sfn) as stub:
        page_one = [_event(1, "MapStateEntered", 0, stateEnteredEventDetails={"name": "recordings"}), started]
        stub.add_response(
            "get_execution_history",
            {"events": page_one, "nextToken": "p2"},
            {"executionArn": root, "includeExecutionData": False},
        )
        stub.add_response(
            "get_execution_history",
            {"events": _lambda_task(3, "Finalize succeeded", 10, 2)},
            {"executionArn": root, "includeExecutionData": False, "nextToken": "p2"},
        )
        stub.add_response(
            "list_executions",
            {
                "executions": [
                    {
                        "executionArn": child,
                        "stateMachineArn": "arn:aws:states:us-east-1:123456789012:stateMachine:pennflow_eeg",
                        "name": "child-1",
                        "status": "SUCCEEDED",
                        "startDate": T0,
                    }
                ]
            },
            {"mapRunArn": map_run},
        )
        stub.add_response(
            "get_execution_history",
            {"events": _lambda_task(1, "recordings download", 0, 40)},
            {"executionArn": child, "includeExecutionData": False},
        )
        node = type("N", (), {"sfn": sfn})()
        found = run_cost._histories(node, root, [])
        stub.assert_no_pending_responses()
    assert found.transitions == 3  # the map, finalize (root) and one download (child)
    assert found.lambdas == {"finalize": (1, 2.0), "download": (1, 40.0)}


def test_a_split_workflow_counts_the_histories_of_its_child_machines() -> None:
    sfn = boto3.client("stepfunctions", region_name=REGION)
    root = "arn:aws:states:us-east-1:123456789012:execution:pennflow_wide:r-1"
    child = "arn:aws:states:us-east-1:123456789012:execution:pennflow_wide_part1:0123-child"
    details = {"resourceType": "states", "resource": "startExecution.sync:2"}
    start = [
        _entered(1, "Part 1", 0),
        _event(2, "TaskSubmitted", 0, 1, taskSubmittedEventDetails=details),
        _event(3, "TaskSucceeded", 60, 2, taskSucceededEventDetails=details),
    ]
    with_output = {**details, "output": json.dumps({"ExecutionArn": child, "StartDate": "2025-03-01"})}
    with Stubber(sfn) as stub:
        stub.add_response(
            "get_execution_history", {"events": start}, {"executionArn": root, "includeExecutionData": False}
        )
        stub.add_response(
            "get_execution_history",
            {"events": [start[0], {**start[1], "taskSubmittedEventDetails": with_output}, start[2]]},
            {"executionArn": root, "includeExecutionData": True},
        )
        stub.add_response(
            "get_execution_history",
            {"events": _lambda_task(1, "b done", 0, 1) + [_entered(5, "c", 2, 4)]},
            {"executionArn": child, "includeExecutionData": False},
        )
        found = run_cost._histories(type("N", (), {"sfn": sfn})(), root, [])
        stub.assert_no_pending_responses()
    assert found.transitions == 3  # the parent's Part 1, the child's join signal and its processor
    assert found.lambdas == {"join": (1, run_cost.JOIN_CALL_SECONDS)}


def test_a_join_is_billed_one_short_call_whatever_its_wait() -> None:
    # A waitForTaskToken task's span is the wait for the other paths (here 5 minutes), not the function.
    events = _lambda_task(1, "features waits", 0, 300) + _lambda_task(5, "convert done", 300, 1)
    found = run_cost._History()
    run_cost._count(events, found)
    assert found.lambdas == {"join": (2, 2 * run_cost.JOIN_CALL_SECONDS)}
    assert found.transitions == 2


def test_a_lambda_processor_is_billed_at_its_own_memory_not_as_a_node_function() -> None:
    invoke = {
        "FunctionName": "node_fn-slot-0-abc",
        "Payload": {"processorId": "convert", "environment": [{"Name": "OUTPUT_DIR", "Value": "/mnt/run"}]},
    }
    download = {"FunctionName": "node_download", "Payload": {"action": "verify", "processorId": "recordings"}}
    events = _lambda_task(1, "convert", 0, 30, json.dumps(invoke)) + _lambda_task(
        5, "recordings verify", 30, 2, json.dumps(download)
    )
    found = run_cost._History()
    run_cost._count(events, found)
    assert found.lambdas == {"processor:convert": (1, 30.0), "download": (1, 2.0)}
    workflow = validate_definition(
        {
            "name": "w",
            "processors": [{"id": "convert", "image": "c:1", "computeType": "lambda", "memory": 3008}],
        }
    )
    assert run_cost._memory("processor:convert", workflow) == 3008
    assert run_cost._memory("download", workflow) == run_cost.C.DOWNLOAD_FUNCTION_MB


def test_a_missing_history_is_noted_not_fatal() -> None:
    sfn = boto3.client("stepfunctions", region_name=REGION)
    with Stubber(sfn) as stub:
        stub.add_client_error("get_execution_history", "ExecutionDoesNotExist", "gone")
        notes: list[str] = []
        found = run_cost._histories(
            type("N", (), {"sfn": sfn})(), "arn:aws:states:us-east-1:1:execution:x:y", notes
        )
    assert found.transitions == 0 and "ExecutionDoesNotExist" in notes[0]


def test_the_task_definitions_a_run_registers_carry_the_node_s_cost_tag(started) -> None:
    node, run_id = started
    slot = node.node.slots.held_by(run_id)
    ecs = boto3.client("ecs", region_name=REGION)
    arn = slot.run_task_definitions["bandpower"]
    tags = {t["key"]: t["value"] for t in ecs.list_tags_for_resource(resourceArn=arn)["tags"]}
    assert tags["pennflow:node"] == "pennflow" and tags["pennflow:processor"] == "bandpower"


def test_a_lambda_steps_recorded_invocations_are_not_described_or_billed_as_tasks(started) -> None:
    node, run_id = started
    task = "arn:aws:ecs:us-east-1:123456789012:task/pennflow/b0"
    invocation = invocation_attempt(
        "arn:aws:lambda:us-east-1:123456789012:function:pennflow_fn-slot-00-ab", "r-1"
    )
    node.store.record_task(run_id, "bandpower", task)
    node.store.record_task(run_id, "convert", invocation)  # as the tracker records a lambda step's attempt
    ecs = boto3.client("ecs", region_name=REGION)
    described = {"taskArn": task, "cpu": "1024", "memory": "2048", "startedAt": T0, "stoppedAt": T0}
    with Stubber(ecs) as stub:  # only the task is asked for: ECS would refuse a Lambda ARN
        stub.add_response(
            "describe_tasks",
            {"tasks": [described]},
            {"cluster": node.node.config.cluster_arn, "tasks": [task]},
        )
        node.node.ecs_client = ecs
        run = node.store.get_run(run_id)
        usage = list(
            run_cost._tasks(node.node, run, node.store.list_steps(run_id), workflow_from(EEG), T0, [])
        )
    assert [u.processor_id for u in usage] == ["bandpower"]
    assert is_invocation_attempt(invocation) and not is_invocation_attempt(task)
