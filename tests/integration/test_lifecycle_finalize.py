"""Finalize and cancel on moto: log archive, provenance, final statuses, slot release, the queue."""

from __future__ import annotations

import gzip
import json
import types
from datetime import timedelta

import boto3
import pytest

from pennflow.node import finalize as finalize_module
from pennflow.node.cancel import cancel_run
from pennflow.node.finalize import failed_processor, finalize_run
from pennflow.node.lifecycle import RunNotFound, prepare_run
from pennflow.node.tracking import handle_event
from pennflow.workflow.runs import Status, StepRecord, utcnow
from tests.integration import aws_fixtures
from tests.integration.aws_fixtures import (
    EEG,
    LOG_BUCKET,
    PROCESSOR_LOG_GROUP,
    REGION,
    RESULTS_BUCKET,
    MotoNode,
    workflow_from,
)
from tests.integration.test_lifecycle_tracking import task_event

mocked_aws = aws_fixtures.mocked_aws
moto_node = aws_fixtures.moto_node


@pytest.fixture
def started(moto_node: MotoNode) -> tuple[MotoNode, str]:
    workflow = workflow_from(EEG)
    moto_node.register(workflow)
    run = moto_node.create_run(workflow, dataset_id="N:dataset:7")
    prepare_run(run.run_id, moto_node.node)
    return moto_node, run.run_id


def _ecs_cause(
    processor_id: str, exit_code: int | None, reason: str = "Essential container in task exited"
) -> str:
    """The task description Step Functions puts in the Cause of States.TaskFailed (PascalCase)."""
    return json.dumps(
        {
            "TaskArn": "arn:aws:ecs:us-east-1:123456789012:task/pennflow/abc",
            "StoppedReason": reason,
            "Containers": [
                {"Name": "processor", **({"ExitCode": exit_code} if exit_code is not None else {})}
            ],
            "Overrides": {
                "ContainerOverrides": [
                    {
                        "Name": "processor",
                        "Environment": [
                            {"Name": "RUN_ID", "Value": "r-x"},
                            {"Name": "PROCESSOR_ID", "Value": processor_id},
                        ],
                    }
                ]
            },
        }
    )


def _write_stream(stream: str, messages: list[str]) -> None:
    logs = boto3.client("logs", region_name=REGION)
    logs.create_log_stream(logGroupName=PROCESSOR_LOG_GROUP, logStreamName=stream)
    start = int(utcnow().timestamp() * 1000)
    events = [{"timestamp": start + i, "message": m} for i, m in enumerate(messages)]
    logs.put_log_events(logGroupName=PROCESSOR_LOG_GROUP, logStreamName=stream, logEvents=events)


def _s3_json(key: str) -> dict:
    body = boto3.client("s3", region_name=REGION).get_object(Bucket=RESULTS_BUCKET, Key=key)["Body"].read()
    return json.loads(body)


def test_a_failed_run_names_the_processor_archives_logs_and_records_provenance(started, monkeypatch) -> None:
    node, run_id = started
    monkeypatch.setattr(finalize_module, "LOG_PAGE_EVENTS", 4)  # several pages per stream
    for event in (
        task_event(run_id, "recordings", "STOPPED", task="src1", exit_code=0),
        task_event(run_id, "convert", "STOPPED", task="cv1", exit_code=0),
        task_event(run_id, "quality", "STOPPED", task="q1", exit_code=2),
    ):
        handle_event(event, node.node)
    convert_lines = [f"converted file {i}" for i in range(10)]
    _write_stream("convert/processor/cv1", convert_lines)
    _write_stream("quality/processor/q1", ["Traceback ...", "ValueError: flat signal"])

    summary = finalize_run(
        run_id, "FAILED", {"Error": "States.TaskFailed", "Cause": _ecs_cause("quality", 2)}, node.node
    )

    assert summary.status is Status.FAILED and summary.slot_released
    run = node.store.get_run(run_id)
    assert (run.failed_processor, run.exit_code) == ("quality", 2)
    assert run.reason == "processor 'quality' failed with exit code 2"
    steps = {s.processor_id: s for s in node.store.list_steps(run_id)}
    assert steps["quality"].status is Status.FAILED and steps["convert"].status is Status.SUCCEEDED
    assert steps["report"].status is Status.NOT_STARTED  # never ran
    assert steps["convert"].log_path == f"s3://{LOG_BUCKET}/runs/{run_id}/logs/convert/"

    s3 = boto3.client("s3", region_name=REGION)
    key = f"runs/{run_id}/logs/convert/cv1.log.gz"
    assert sorted(summary.log_keys) == [key, f"runs/{run_id}/logs/quality/q1.log.gz"]
    archived = gzip.decompress(s3.get_object(Bucket=LOG_BUCKET, Key=key)["Body"].read()).decode()
    assert [line.split(" ", 1)[1] for line in archived.splitlines()] == convert_lines

    record = _s3_json(f"runs/{run_id}/run.json")
    assert record["status"] == "FAILED" and record["outcome"] == "FAILED"
    assert record["failure"] == {"processor": "quality", "exitCode": 2, "reason": run.reason}
    assert (
        record["definitionHash"] == workflow_from(EEG).definition_hash()
        and record["datasetId"] == "N:dataset:7"
    )
    by_id = {p["id"]: p for p in record["processors"]}
    assert by_id["bandpower"]["image"] == "ghcr.io/x/bandpower:1" and by_id["bandpower"]["params"] == {
        "WINDOW": "2"
    }
    assert by_id["convert"]["logs"] == [key] and by_id["convert"]["durationSeconds"] == 300
    assert by_id["quality"]["exitCode"] == 2 and by_id["quality"]["attempts"] == 1


def test_the_failed_processor_comes_from_the_steps_when_the_cause_says_nothing(started) -> None:
    node, run_id = started
    handle_event(task_event(run_id, "convert", "STOPPED", task="c1", exit_code=5), node.node)  # will retry
    finalize_run(run_id, "FAILED", {"Error": "States.Runtime", "Cause": "something broke"}, node.node)
    run = node.store.get_run(run_id)
    assert (run.status, run.failed_processor, run.exit_code) == (Status.FAILED, "convert", 5)


def _child_cause(cause: str) -> str:
    """What startExecution.sync:2 gives as the Cause when its child execution failed."""
    arn = "arn:aws:states:us-east-1:123456789012:execution:pennflow_wf_part1:0123"
    return json.dumps({"ExecutionArn": arn, "Status": "FAILED", "Error": "States.TaskFailed", "Cause": cause})


@pytest.mark.parametrize(
    ("cause", "expected"),
    [
        (_ecs_cause("report", None, "CannotPullContainerError: not found"), ("report", None, "did not run")),
        (_ecs_cause("report", 1), ("report", 1, "exit code 1")),
        # a split workflow: the child execution's failure (DescribeExecution), nested twice
        (_child_cause(_child_cause(_ecs_cause("report", 3))), ("report", 3, "exit code 3")),
        ("not json", (None, None, "failed (States.TaskFailed)")),
    ],
)
def test_reading_the_failure(cause: str, expected) -> None:
    found = failed_processor(
        {"Error": "States.TaskFailed", "Cause": cause}, [StepRecord(run_id="r", processor_id="a")]
    )
    assert (found.processor_id, found.exit_code) == expected[:2] and expected[2] in found.reason


def test_a_successful_run_settles_every_step_and_keeps_its_files(started) -> None:
    node, run_id = started
    slot = node.node.slots.held_by(run_id)
    output = node.slot_dir(slot.slot_id) / "report" / "output"
    output.mkdir(parents=True)
    (output / "summary.csv").write_text("ok")

    summary = finalize_run(run_id, "SUCCEEDED", None, node.node)

    assert summary.status is Status.SUCCEEDED and summary.failed is None
    assert {s.status for s in node.store.list_steps(run_id)} == {Status.SUCCEEDED}
    assert (node.runs_mount / run_id / "report" / "output" / "summary.csv").read_text() == "ok"
    assert list(node.slot_dir(slot.slot_id).iterdir()) == []  # the next run finds an empty slot
    assert node.node.slots.get(slot.slot_id).is_free
    again = finalize_run(run_id, "SUCCEEDED", None, node.node)  # a retried finalize is harmless
    assert again.status is Status.SUCCEEDED


def test_the_slot_waits_for_tasks_still_stopping(started) -> None:
    node, run_id = started
    slot = node.node.slots.held_by(run_id)
    ecs = boto3.client("ecs", region_name=REGION)
    task_arn = node.run_task(slot.run_task_definitions["bandpower"])

    summary = finalize_run(
        run_id, "FAILED", {"Error": "States.TaskFailed", "Cause": _ecs_cause("quality", 1)}, node.node
    )
    assert summary.status is Status.FAILED and not summary.slot_released
    assert node.node.slots.held_by(run_id) is not None

    ecs.stop_task(cluster=node.node.config.cluster_arn, task=task_arn, reason="Stopped by Step Functions")
    stopped = task_event(run_id, "bandpower", "STOPPED", stop_code="UserInitiated")
    stopped["detail"]["taskArn"] = task_arn
    handle_event(stopped, node.node)
    assert node.node.slots.held_by(run_id) is None


def test_cancel_stops_the_execution_and_tasks_then_frees_the_slot_for_the_queue(mocked_aws, tmp_path) -> None:
    node = aws_fixtures.build_moto_node(tmp_path / "runs", slots=1)
    workflow = workflow_from(EEG)
    node.register(workflow)
    running, waiting = node.create_run(workflow), node.create_run(workflow)
    prepare_run(running.run_id, node.node)
    assert prepare_run(waiting.run_id, node.node).outcome == "queued"
    slot = node.node.slots.held_by(running.run_id)
    ecs = boto3.client("ecs", region_name=REGION)
    task_arn = node.run_task(slot.run_task_definitions["convert"])

    assert cancel_run(running.run_id, node.node) is Status.CANCELED

    execution_arn = node.store.get_run(running.run_id).execution_arn
    sfn = boto3.client("stepfunctions", region_name=REGION)
    assert sfn.describe_execution(executionArn=execution_arn)["status"] == "ABORTED"
    task = ecs.describe_tasks(cluster=node.node.config.cluster_arn, tasks=[task_arn])["tasks"][0]
    assert task["lastStatus"] == "STOPPED" and task["stoppedReason"] == "canceled by request"
    assert node.store.get_run(running.run_id).reason == "canceled by request"
    assert _s3_json(f"runs/{running.run_id}/run.json")["status"] == "CANCELED"
    assert node.store.get_run(waiting.run_id).status is Status.STARTED  # the queue moved on
    assert cancel_run(running.run_id, node.node) is Status.CANCELED  # asking twice is harmless


def test_cancelling_a_queued_run_takes_it_off_the_queue(mocked_aws, tmp_path) -> None:
    node = aws_fixtures.build_moto_node(tmp_path / "runs", slots=1)
    workflow = workflow_from(EEG)
    node.register(workflow)
    first, queued = node.create_run(workflow), node.create_run(workflow)
    prepare_run(first.run_id, node.node)
    prepare_run(queued.run_id, node.node)

    assert cancel_run(queued.run_id, node.node) is Status.CANCELED
    assert node.node.slots.queued() == []
    finalize_run(first.run_id, "SUCCEEDED", None, node.node)
    assert node.store.get_run(queued.run_id).status is Status.CANCELED  # not started by the freed slot
    with pytest.raises(RunNotFound):
        cancel_run("r-nope", node.node)


def test_a_run_canceled_while_failing_ends_canceled(started) -> None:
    node, run_id = started
    node.store.update_run(run_id, Status.CANCELING)
    assert finalize_run(run_id, "FAILED", None, node.node).status is Status.CANCELED


def test_expired_run_folders_are_purged(started) -> None:
    node, run_id = started
    old = node.runs_mount / "r-old"
    (old / "convert" / "output").mkdir(parents=True)
    (old / ".retained-at").write_text((utcnow() - timedelta(days=31)).isoformat())
    recent = node.runs_mount / "r-recent"
    recent.mkdir()
    (recent / ".retained-at").write_text(utcnow().isoformat())
    finalize_run(run_id, "SUCCEEDED", None, node.node)  # retention is 30 days on this node
    assert not old.exists() and recent.exists() and (node.runs_mount / run_id).exists()


class _History:
    """A Step Functions client that only answers get_execution_history (with the given events)."""

    def __init__(self, events: list[dict]):
        self.events = events

    def get_paginator(self, name: str) -> _History:
        assert name == "get_execution_history"
        return self

    def paginate(self, **_: object) -> list[dict]:
        return [{"events": self.events}]


def _entered(event_id: int, previous: int, name: str) -> dict:
    return {
        "id": event_id,
        "previousEventId": previous,
        "type": "TaskStateEntered",
        "stateEnteredEventDetails": {"name": name},
    }


@pytest.mark.parametrize(
    ("state", "failure_type", "expected"),
    [("recordings", "MapRunFailed", "recordings"), ("per-file batches", "LambdaFunctionFailed", "per-file")],
)
def test_a_failed_lambda_state_is_found_in_the_execution_history(
    state: str, failure_type: str, expected: str
) -> None:
    workflow = workflow_from(EEG.replace("report", "per-file"))
    events = [
        {"id": 1, "previousEventId": 0, "type": "ExecutionStarted"},
        _entered(2, 1, "Run workflow"),
        _entered(3, 2, "convert"),
        _entered(4, 2, state),
        {"id": 5, "previousEventId": 4, "type": "TaskScheduled"},
        {"id": 6, "previousEventId": 5, "type": failure_type},
        {"id": 7, "previousEventId": 3, "type": "TaskSucceeded"},
    ]
    node = types.SimpleNamespace(sfn=_History(events))
    found = finalize_module._failed_state(node, "arn:aws:states:us-east-1:1:execution:m:r", workflow)
    assert found == expected
    failure = {"Error": "Lambda.Unknown", "Cause": '{"errorMessage": "dataset not found"}'}
    steps = [StepRecord(run_id="r", processor_id=p.id) for p in workflow.processors]
    named = failed_processor(failure, steps, lambda: found)
    assert named.processor_id == expected and "dataset not found" in named.reason


def test_a_redriven_execution_names_the_state_that_failed_in_its_latest_attempt() -> None:
    workflow = workflow_from(EEG.replace("report", "per-file"))
    events = [
        {"id": 1, "previousEventId": 0, "type": "ExecutionStarted"},
        _entered(2, 1, "per-file batches"),
        {"id": 3, "previousEventId": 2, "type": "LambdaFunctionFailed"},
        {"id": 4, "previousEventId": 3, "type": "ExecutionFailed"},
        {"id": 5, "previousEventId": 4, "type": "ExecutionRedriven"},
        _entered(6, 5, "recordings"),
        {"id": 7, "previousEventId": 6, "type": "MapRunFailed"},
    ]
    node = types.SimpleNamespace(sfn=_History(events))
    assert (
        finalize_module._failed_state(node, "arn:aws:states:us-east-1:1:execution:m:r", workflow)
        == "recordings"
    )
    node = types.SimpleNamespace(sfn=_History(events[:4]))  # before the redrive: the first attempt's
    assert (
        finalize_module._failed_state(node, "arn:aws:states:us-east-1:1:execution:m:r", workflow)
        == "per-file"
    )
