"""EventBridge events -> run store: duplicates, reordering, retries, batches, foreign and broken events."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pennflow.node.lifecycle import prepare_run
from pennflow.node.tracking import handle_event
from pennflow.workflow.runs import Status
from tests.integration import aws_fixtures
from tests.integration.aws_fixtures import EEG, MotoNode, workflow_from

mocked_aws = aws_fixtures.mocked_aws
moto_node = aws_fixtures.moto_node
CLUSTER = "arn:aws:ecs:us-east-1:123456789012:cluster/pennflow"


def task_event(
    run_id: str,
    processor_id: str,
    status: str,
    *,
    task: str = "t1",
    exit_code: int | None = None,
    stop_code: str | None = None,
    batch: int | None = None,
    reason: str | None = None,
) -> dict[str, Any]:
    env = [{"name": "RUN_ID", "value": run_id}, {"name": "PROCESSOR_ID", "value": processor_id}]
    if batch is not None:
        env.append({"name": "BATCH_INDEX", "value": str(batch)})
    container: dict[str, Any] = {"name": "processor", "lastStatus": status}
    if exit_code is not None:
        container["exitCode"] = exit_code
    detail: dict[str, Any] = {
        "clusterArn": CLUSTER,
        "taskArn": f"{CLUSTER.replace(':cluster/', ':task/')}/{task}",
        "lastStatus": status,
        "desiredStatus": "STOPPED" if status == "STOPPED" else "RUNNING",
        "overrides": {"containerOverrides": [{"name": "processor", "environment": env}]},
        "containers": [container],
        "startedAt": "2025-03-01T12:00:00Z",
    }
    if status == "STOPPED":
        detail.update(stoppedAt="2025-03-01T12:05:00Z", stopCode=stop_code or "EssentialContainerExited")
        detail["stoppedReason"] = reason or "Essential container in task exited"
    return {
        "version": "0",
        "detail-type": "ECS Task State Change",
        "source": "aws.ecs",
        "time": "2025-03-01T12:05:01Z",
        "detail": detail,
    }


def execution_event(run_id: str, status: str, **extra: Any) -> dict[str, Any]:
    arn = f"arn:aws:states:us-east-1:123456789012:execution:pennflow-eeg-quality:{run_id}"
    return {
        "detail-type": "Step Functions Execution Status Change",
        "source": "aws.states",
        "detail": {"executionArn": arn, "name": run_id, "status": status, **extra},
    }


@pytest.fixture
def started(moto_node: MotoNode) -> tuple[MotoNode, str]:
    workflow = workflow_from(EEG)
    moto_node.register(workflow)
    run = moto_node.create_run(workflow)
    prepare_run(run.run_id, moto_node.node)
    return moto_node, run.run_id


def _step(node: MotoNode, run_id: str, processor_id: str):
    return next(s for s in node.store.list_steps(run_id) if s.processor_id == processor_id)


def test_the_same_event_three_times_counts_once(started) -> None:
    node, run_id = started
    for _ in range(3):
        handle_event(task_event(run_id, "bandpower", "RUNNING"), node.node)
    step = _step(node, run_id, "bandpower")
    assert (step.status, step.attempts) == (Status.STARTED, 1)

    for _ in range(3):
        handle_event(task_event(run_id, "bandpower", "STOPPED", exit_code=0), node.node)
    step = _step(node, run_id, "bandpower")
    assert (step.status, step.attempts, step.exit_code) == (Status.SUCCEEDED, 1, 0)
    assert step.finished_at is not None and step.duration_seconds == 300


def test_stopped_before_running_never_moves_back(started) -> None:
    node, run_id = started
    outcome = handle_event(task_event(run_id, "quality", "STOPPED", exit_code=0), node.node)
    assert "succeeded" in outcome
    handle_event(task_event(run_id, "quality", "RUNNING"), node.node)
    handle_event(task_event(run_id, "quality", "PROVISIONING"), node.node)
    step = _step(node, run_id, "quality")
    assert (step.status, step.attempts) == (Status.SUCCEEDED, 1)


def test_a_failed_attempt_waits_for_its_retries(started) -> None:
    node, run_id = started  # convert has retry.maxAttempts 2: three attempts in all
    handle_event(task_event(run_id, "convert", "RUNNING", task="a1"), node.node)
    handle_event(task_event(run_id, "convert", "STOPPED", task="a1", exit_code=3), node.node)
    step = _step(node, run_id, "convert")
    assert (step.status, step.exit_code) == (Status.STARTED, 3) and "attempt 1 of 3" in step.reason

    # The retry's events overtake the first attempt's duplicate STOPPED: still not final.
    handle_event(task_event(run_id, "convert", "RUNNING", task="a2"), node.node)
    handle_event(task_event(run_id, "convert", "STOPPED", task="a1", exit_code=3), node.node)
    assert _step(node, run_id, "convert").status is Status.STARTED
    handle_event(task_event(run_id, "convert", "STOPPED", task="a2", exit_code=0), node.node)
    step = _step(node, run_id, "convert")
    assert (step.status, step.attempts, step.exit_code) == (Status.SUCCEEDED, 2, 0)


def test_the_last_allowed_attempt_fails_the_step(started) -> None:
    node, run_id = started  # bandpower has no retry policy: one attempt
    handle_event(
        task_event(run_id, "bandpower", "STOPPED", exit_code=137, reason="OutOfMemoryError"), node.node
    )
    step = _step(node, run_id, "bandpower")
    assert (step.status, step.exit_code) == (Status.FAILED, 137)
    assert "OutOfMemoryError" in step.reason
    handle_event(task_event(run_id, "bandpower", "RUNNING"), node.node)
    assert _step(node, run_id, "bandpower").status is Status.FAILED


def test_batches_annotate_and_a_stop_by_request_decides_nothing(started) -> None:
    node, run_id = started
    handle_event(task_event(run_id, "report", "RUNNING", task="b0", batch=0), node.node)
    handle_event(task_event(run_id, "report", "STOPPED", task="b0", batch=0, exit_code=0), node.node)
    handle_event(task_event(run_id, "report", "STOPPED", task="b1", batch=1, exit_code=2), node.node)
    step = _step(node, run_id, "report")
    # two batches that each ran once: attempt 1 (attempts count a batch's tries, from 1, as locally)
    assert (step.status, step.attempts, step.exit_code) == (Status.STARTED, 1, 2)
    assert step.reason.startswith("batch 1 exited 2")
    handle_event(task_event(run_id, "report", "STOPPED", task="b1-retry", batch=1, exit_code=0), node.node)
    handle_event(task_event(run_id, "report", "STOPPED", task="b1-retry", batch=1, exit_code=0), node.node)
    handle_event(task_event(run_id, "report", "STOPPED", task="b2", batch=2, exit_code=0), node.node)
    assert _step(node, run_id, "report").attempts == 2  # batch 1's retry; a repeated event counts once

    handle_event(
        task_event(run_id, "quality", "STOPPED", exit_code=143, stop_code="UserInitiated"), node.node
    )
    step = _step(node, run_id, "quality")
    assert step.status is Status.STARTED and "stopped" in step.reason


def test_a_run_stays_started_through_its_running_event(started) -> None:
    node, run_id = started
    assert "already STARTED" in handle_event(execution_event(run_id, "RUNNING"), node.node)
    assert node.store.get_run(run_id).status is Status.STARTED


def test_an_execution_that_failed_without_finalizing_is_finalized(started) -> None:
    node, run_id = started
    cause = json.dumps(
        {
            "Containers": [{"Name": "processor", "ExitCode": 9}],
            "Overrides": {
                "ContainerOverrides": [
                    {"Name": "processor", "Environment": [{"Name": "PROCESSOR_ID", "Value": "quality"}]}
                ]
            },
        }
    )
    outcome = handle_event(
        execution_event(run_id, "FAILED", error="States.TaskFailed", cause=cause), node.node
    )
    assert "finalized as FAILED" in outcome
    run = node.store.get_run(run_id)
    assert (run.status, run.failed_processor, run.exit_code) == (Status.FAILED, "quality", 9)
    assert node.node.slots.held_by(run_id) is None
    # The duplicate changes nothing.
    assert "already FAILED" in handle_event(execution_event(run_id, "FAILED"), node.node)


def test_a_timed_out_execution_names_the_processor_that_was_running(started) -> None:
    node, run_id = started
    handle_event(task_event(run_id, "recordings", "STOPPED", task="s", exit_code=0), node.node)
    handle_event(task_event(run_id, "convert", "RUNNING", task="c"), node.node)
    handle_event(execution_event(run_id, "TIMED_OUT"), node.node)
    run = node.store.get_run(run_id)
    assert (run.status, run.failed_processor) == (Status.FAILED, "convert")
    assert "timed out" in run.reason


def test_an_execution_stopped_outside_pennflow_cancels_the_run(started) -> None:
    node, run_id = started
    handle_event(execution_event(run_id, "ABORTED"), node.node)
    assert node.store.get_run(run_id).status is Status.CANCELED
    assert node.node.slots.held_by(run_id) is None


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        ("not even a dict", "not an EventBridge event"),
        ({"detail-type": "ECS Task State Change", "source": "aws.ecs"}, "detail: field required"),
        (
            {
                "detail-type": "ECS Task State Change",
                "source": "aws.ecs",
                "detail": {"lastStatus": "RUNNING"},
            },
            "taskArn: field required",
        ),
        (
            {"detail-type": "EC2 Instance State-change", "source": "aws.ec2", "detail": {}},
            "unexpected event type",
        ),
        (
            {
                "detail-type": "ECS Task State Change",
                "source": "aws.ecs",
                "detail": {
                    "taskArn": "arn:t/x",
                    "lastStatus": "RUNNING",
                    "overrides": {"containerOverrides": []},
                },
            },
            "not a processor task",
        ),
        (execution_event("r-unknown", "SUCCEEDED"), "not a run of this node"),
        (task_event("r-unknown", "convert", "RUNNING"), "does not know"),
    ],
)
def test_foreign_and_malformed_events_are_ignored_precisely(
    moto_node: MotoNode, event, expected: str
) -> None:
    outcome = handle_event(event, moto_node.node)
    assert outcome.startswith("ignored:") and expected in outcome
