"""Resuming a run on the node (moto): the failed run keeps its slot, RedriveExecution continues its
execution, the run record goes back to STARTED once, and the scheduled cleanup frees kept slots.

moto's Step Functions has no RedriveExecution (nor redriveStatus in DescribeExecution): those two
calls go through botocore's Stubber, which checks each request against the service model; the
tables, slots, EFS folders and the execution the run started are moto's."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import boto3
import pytest
from botocore.stub import Stubber

from pennflow.node.lifecycle import RunNotFound, prepare_run
from pennflow.node.redrive import ResumeRefused, release_expired, resume_run
from pennflow.node.slots import RETAINED_MARKER
from pennflow.node.tracking import handle_event
from pennflow.workflow.runs import Status, utcnow
from tests.integration import aws_fixtures
from tests.integration.aws_fixtures import EEG, REGION, MotoNode, build_moto_node, workflow_from
from tests.integration.test_lifecycle_tracking import execution_event

mocked_aws = aws_fixtures.mocked_aws
RETENTION_DAYS = 7


def keeping(moto_node: MotoNode) -> MotoNode:
    moto_node.node.config = dataclasses.replace(
        moto_node.node.config, failed_run_retention_days=RETENTION_DAYS
    )
    return moto_node


@pytest.fixture
def moto_node(mocked_aws, tmp_path) -> MotoNode:
    return keeping(build_moto_node(tmp_path / "runs"))


def failed_run(moto_node: MotoNode) -> str:
    """EEG started; convert succeeded, bandpower failed with exit code 3, then the execution failed."""
    workflow = workflow_from(EEG)
    moto_node.register(workflow)
    run = moto_node.create_run(workflow, dataset_id="N:dataset:7")
    prepare_run(run.run_id, moto_node.node)
    store = moto_node.store
    for pid in ("recordings", "convert"):
        store.update_step(run.run_id, pid, Status.STARTED, started_at=utcnow())
        store.update_step(run.run_id, pid, Status.SUCCEEDED, finished_at=utcnow())
    store.update_step(run.run_id, "bandpower", Status.STARTED, started_at=utcnow())
    store.update_step(run.run_id, "bandpower", Status.FAILED, exit_code=3, finished_at=utcnow())
    # The machine catches nothing: the status tracker finalizes the run from its execution's end.
    ended = handle_event(
        execution_event(run.run_id, "FAILED", error="States.TaskFailed", cause="exit 3"), moto_node.node
    )
    assert "finalized as FAILED" in ended
    return run.run_id


class StubbedSfn:
    """The node's Step Functions client with DescribeExecution and RedriveExecution stubbed."""

    def __init__(self, moto_node: MotoNode):
        self.client = boto3.client("stepfunctions", region_name=REGION)
        self.stubber = Stubber(self.client)
        moto_node.node.sfn_client = self.client

    def describe(self, arn: str, status: str = "REDRIVABLE", reason: str | None = None) -> None:
        response = {
            "executionArn": arn,
            "stateMachineArn": arn.replace(":execution:", ":stateMachine:").rsplit(":", 1)[0],
            "status": "FAILED",
            "startDate": utcnow(),
            "redriveStatus": status,
        }
        if reason:
            response["redriveStatusReason"] = reason
        self.stubber.add_response("describe_execution", response, {"executionArn": arn})

    def redrive(self, arn: str, token: str) -> None:
        self.stubber.add_response(
            "redrive_execution", {"redriveDate": utcnow()}, {"executionArn": arn, "clientToken": token}
        )


def test_a_failed_run_keeps_its_slot_files_and_layer_pins(moto_node) -> None:
    run_id = failed_run(moto_node)
    run = moto_node.store.get_run(run_id)
    assert run.status is Status.FAILED and run.failed_processor == "bandpower"
    assert timedelta(days=RETENTION_DAYS - 1) < run.resume_until - utcnow() <= timedelta(days=RETENTION_DAYS)
    slot = moto_node.node.slots.held_by(run_id)
    assert slot is not None  # not released: its tasks' access point still holds the run's files
    assert not (moto_node.runs_mount / run_id).exists()


def test_without_the_setting_a_failed_run_releases_its_slot_as_before(mocked_aws, tmp_path) -> None:
    node = build_moto_node(tmp_path / "runs")  # failed_run_retention_days 0
    run_id = failed_run(node)
    assert node.node.slots.held_by(run_id) is None
    assert node.store.get_run(run_id).resume_until is None
    assert (node.runs_mount / run_id / RETAINED_MARKER).is_file()


def test_resume_redrives_the_execution_and_reopens_the_run(moto_node) -> None:
    run_id = failed_run(moto_node)
    arn = moto_node.store.get_run(run_id).execution_arn
    sfn = StubbedSfn(moto_node)
    sfn.describe(arn)
    sfn.redrive(arn, f"{run_id}-attempt-2")

    with sfn.stubber:
        resumed = resume_run(run_id, moto_node.node)
    sfn.stubber.assert_no_pending_responses()

    assert resumed.attempt == 2 and resumed.status is Status.STARTED
    assert resumed.reused == ["recordings", "convert"]
    run = moto_node.store.get_run(run_id)
    assert run.status is Status.STARTED and run.attempt == 2
    assert run.finished_at is None and run.reason is None and run.resume_until is None
    [earlier] = run.history
    assert earlier.status is Status.FAILED and earlier.failed_processor == "bandpower"
    assert {s.processor_id: s.status for s in earlier.steps}["bandpower"] is Status.FAILED
    steps = {s.processor_id: s for s in moto_node.store.list_steps(run_id)}
    assert steps["convert"].status is Status.SUCCEEDED and steps["convert"].reused
    assert steps["bandpower"].status is Status.NOT_STARTED and steps["bandpower"].exit_code is None
    assert moto_node.node.slots.held_by(run_id) is not None


def test_a_second_resume_of_the_same_attempt_is_refused(moto_node) -> None:
    run_id = failed_run(moto_node)
    arn = moto_node.store.get_run(run_id).execution_arn
    sfn = StubbedSfn(moto_node)
    sfn.describe(arn)
    sfn.redrive(arn, f"{run_id}-attempt-2")
    with sfn.stubber:
        resume_run(run_id, moto_node.node)
        with pytest.raises(ResumeRefused, match=rf"run {run_id} is STARTED: only a FAILED or CANCELED run"):
            resume_run(run_id, moto_node.node)


def test_an_execution_step_functions_cannot_redrive_is_refused_with_its_reason(moto_node) -> None:
    run_id = failed_run(moto_node)
    arn = moto_node.store.get_run(run_id).execution_arn
    sfn = StubbedSfn(moto_node)
    sfn.describe(arn, "NOT_REDRIVABLE", "Execution history event limit exceeded.")
    with (
        sfn.stubber,
        pytest.raises(ResumeRefused, match="cannot redrive .*: Execution history event limit exceeded"),
    ):
        resume_run(run_id, moto_node.node)
    assert moto_node.store.get_run(run_id).status is Status.FAILED  # nothing changed


def test_a_refused_redrive_puts_the_run_back_as_it_ended(moto_node) -> None:
    run_id = failed_run(moto_node)
    arn = moto_node.store.get_run(run_id).execution_arn
    sfn = StubbedSfn(moto_node)
    sfn.describe(arn)
    sfn.stubber.add_client_error(
        "redrive_execution", "ExecutionLimitExceeded", "too many executions", expected_params=None
    )
    with sfn.stubber, pytest.raises(ResumeRefused, match="redrive refused \\(ExecutionLimitExceeded\\)"):
        resume_run(run_id, moto_node.node)
    run = moto_node.store.get_run(run_id)
    assert run.status is Status.FAILED and run.resume_until is not None  # still kept: it can be tried again


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("succeeded", "SUCCEEDED: there is nothing to resume"),
        ("expired", "no longer holds its slot \\(failed runs keep it 7 day\\(s\\)"),
    ],
)
def test_runs_that_cannot_be_resumed_are_refused(moto_node, change, message) -> None:
    run_id = failed_run(moto_node)
    now = utcnow()
    if change == "succeeded":
        other = moto_node.create_run(workflow_from(EEG))
        moto_node.store.update_run(other.run_id, Status.STARTED)
        moto_node.store.update_run(other.run_id, Status.SUCCEEDED)
        run_id = other.run_id
    else:
        now += timedelta(days=RETENTION_DAYS + 1)
    with pytest.raises(ResumeRefused, match=message):
        resume_run(run_id, moto_node.node, now=now)


def test_an_unknown_run_is_not_found(moto_node) -> None:
    with pytest.raises(RunNotFound):
        resume_run("r-nope", moto_node.node)


def test_the_cleanup_frees_expired_kept_slots_and_their_layer_pins(moto_node) -> None:
    run_id = failed_run(moto_node)
    assert release_expired(moto_node.node) == []  # not due yet, and no run waits
    later = utcnow() + timedelta(days=RETENTION_DAYS, minutes=1)

    assert release_expired(moto_node.node, now=later) == [run_id]

    assert moto_node.node.slots.held_by(run_id) is None
    assert (moto_node.runs_mount / run_id / RETAINED_MARKER).is_file()
    run = moto_node.store.get_run(run_id)
    assert run.status is Status.FAILED and run.resume_until is None
    with pytest.raises(ResumeRefused, match="no longer holds its slot"):
        resume_run(run_id, moto_node.node)


def test_a_waiting_run_takes_the_oldest_kept_slot_early(mocked_aws, tmp_path) -> None:
    node = keeping(build_moto_node(tmp_path / "runs", slots=1))
    kept = failed_run(node)
    workflow = workflow_from(EEG)
    waiting = node.create_run(workflow)
    assert prepare_run(waiting.run_id, node.node).outcome == "queued"  # the only slot is kept

    assert release_expired(node.node) == [kept]

    assert node.node.slots.held_by(waiting.run_id) is not None  # the queue was served
    assert node.store.get_run(kept).resume_until is None


def test_the_execution_s_end_event_after_finalize_leaves_the_kept_slot_alone(moto_node) -> None:
    run_id = failed_run(moto_node)
    answer = handle_event(execution_event(run_id, "FAILED"), moto_node.node)
    assert "already FAILED" in answer
    assert moto_node.node.slots.held_by(run_id) is not None
    assert not (moto_node.runs_mount / run_id).exists()


def test_a_late_end_event_of_the_attempt_before_a_redrive_is_ignored(moto_node) -> None:
    run_id = failed_run(moto_node)
    arn = moto_node.store.get_run(run_id).execution_arn
    sfn = StubbedSfn(moto_node)
    sfn.describe(arn)
    sfn.redrive(arn, f"{run_id}-attempt-2")
    with sfn.stubber:
        resume_run(run_id, moto_node.node)

    late = handle_event(execution_event(run_id, "FAILED", redriveCount=0), moto_node.node)
    running = handle_event(execution_event(run_id, "RUNNING", redriveCount=1), moto_node.node)

    assert late.startswith("ignored: ") and "an earlier attempt's end" in late
    assert "execution running" in running
    assert moto_node.store.get_run(run_id).status is Status.STARTED


def test_a_resumed_step_counts_its_tries_from_one_again(moto_node) -> None:
    run_id = failed_run(moto_node)
    store = moto_node.store
    store.record_task(run_id, "bandpower", "arn:aws:ecs:us-east-1:1:task/c/first")
    assert store.record_failed_task(run_id, "bandpower", "arn:aws:ecs:us-east-1:1:task/c/first") == 1
    arn = store.get_run(run_id).execution_arn
    sfn = StubbedSfn(moto_node)
    sfn.describe(arn)
    sfn.redrive(arn, f"{run_id}-attempt-2")
    with sfn.stubber:
        resume_run(run_id, moto_node.node)

    [earlier] = store.get_run(run_id).history
    assert {s.processor_id: s.attempts for s in earlier.steps}["bandpower"] == 1  # kept in the history
    assert {s.processor_id: s for s in store.list_steps(run_id)}["bandpower"].attempts == 0
    store.record_task(run_id, "bandpower", "arn:aws:ecs:us-east-1:1:task/c/second")
    assert {s.processor_id: s for s in store.list_steps(run_id)}["bandpower"].attempts == 1
    # the retry policy counts this attempt's failures only
    assert store.record_failed_task(run_id, "bandpower", "arn:aws:ecs:us-east-1:1:task/c/second") == 1
