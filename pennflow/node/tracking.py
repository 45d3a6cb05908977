"""EventBridge events -> run store (the status Lambda).

Two kinds of events arrive, at least once and in any order:

- Step Functions "Execution Status Change" (the execution name is the run id): RUNNING marks the
  run STARTED (a redrive's too); an end that did not go through the state machine's own finalize
  state is finalized here: every failure (the machine catches none, so that a redrive runs the
  failed processor again: ``pennflow.node.redrive``), a timeout, a stop from the console.
- ECS "Task State Change" for a processor task (the ``processor`` container's overrides carry
  ``RUN_ID`` and ``PROCESSOR_ID``): the first event of a task ARN counts one attempt and marks the
  step STARTED; STOPPED gives SUCCEEDED on exit code 0, FAILED once as many distinct tasks
  have failed as the processor's retry policy allows attempts (before that the step stays STARTED
  with the attempt's exit code and reason; counting failed task ARNs, not events, keeps this right
  when a retry's events overtake the failed attempt's). Batch tasks of a scattered processor only
  annotate the step (its attempts are the most tries of one batch, from 1); finalize gives it its
  final status. A task stopped by someone (a cancel, a failed sibling) decides nothing.
- ``pennflow.processor`` "Processor Invocation State Change" of a ``computeType: lambda`` step, put by
  the function's bootstrap (``pennflow.processors.lambda_bootstrap``) at the invocation's start and end:
  the same attempt as a task's (``<function ARN>/<request id>``, its task id the request id, so its log
  stream and archive are found as a task's), read from the same fields, written by the same code below.
  Only events of this node's functions (the name prefix) for a run of that function's slot count.

Every status write is conditional, so a duplicated event changes nothing and a late RUNNING can
never move a finished step back. Events that are not ours, or malformed, are ignored with a
precise message (raising would only make EventBridge retry the same event).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pennflow.node.cancel import cancel_run
from pennflow.node.lifecycle import Node, release_when_idle
from pennflow.processors import lambda_bootstrap as boot
from pennflow.workflow.asl import CONTAINER_NAME
from pennflow.workflow.runs import RunRecord, Status, utcnow

log = logging.getLogger(__name__)

EXECUTION_EVENT = "Step Functions Execution Status Change"
TASK_EVENT = "ECS Task State Change"
INVOCATION_EVENT = boot.EVENT_DETAIL_TYPE
ACTIVE_TASK_STATUSES = frozenset({"PROVISIONING", "PENDING", "ACTIVATING", "RUNNING"})
EXECUTION_ENDS = frozenset({"SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"})
STOPPED_BY_SOMEONE = "UserInitiated"  # ECS stopCode of StopTask: not the processor's own outcome


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class ExecutionDetail(_Model):
    execution_arn: str = Field(alias="executionArn")
    name: str
    status: str
    error: str | None = None
    cause: str | None = None
    redrive_count: int | None = Field(None, alias="redriveCount")  # how many redrives came before


class KeyValue(_Model):
    name: str
    value: str | None = None


class ContainerOverride(_Model):
    name: str
    environment: list[KeyValue] = Field(default_factory=list)


class Overrides(_Model):
    container_overrides: list[ContainerOverride] = Field(default_factory=list, alias="containerOverrides")


class Container(_Model):
    name: str
    exit_code: int | None = Field(None, alias="exitCode")
    reason: str | None = None


class TaskDetail(_Model):
    task_arn: str = Field(alias="taskArn")
    last_status: str = Field(alias="lastStatus")
    overrides: Overrides = Field(default_factory=Overrides)
    containers: list[Container] = Field(default_factory=list)
    stopped_reason: str | None = Field(None, alias="stoppedReason")
    stop_code: str | None = Field(None, alias="stopCode")
    started_at: datetime | None = Field(None, alias="startedAt")
    stopped_at: datetime | None = Field(None, alias="stoppedAt")

    def environment(self) -> dict[str, str]:
        for override in self.overrides.container_overrides:
            if override.name == CONTAINER_NAME:
                return {kv.name: kv.value or "" for kv in override.environment}
        return {}

    def processor_container(self) -> Container | None:
        return next((c for c in self.containers if c.name == CONTAINER_NAME), None)


@dataclass(frozen=True)
class Attempt:
    """One try of a step, as an ECS task or a Lambda invocation: what the step records are made from."""

    ref: str  # a task ARN, or "<function ARN>/<request id>": ".../<task id>" names its log stream
    run_id: str | None
    processor_id: str | None
    batch: str | None
    active: bool  # starting or running; else stopped, or a status that needs nothing
    stopped: bool
    exit_code: int | None
    reason: str | None
    stopped_by_someone: bool
    started_at: datetime | None
    stopped_at: datetime | None
    status: str  # for the log line


def _task_attempt(task: TaskDetail) -> Attempt:
    env = task.environment()
    container = task.processor_container()
    return Attempt(
        ref=task.task_arn,
        run_id=env.get("RUN_ID"),
        processor_id=env.get("PROCESSOR_ID"),
        batch=env.get("BATCH_INDEX"),
        active=task.last_status in ACTIVE_TASK_STATUSES,
        stopped=task.last_status == "STOPPED",
        exit_code=container.exit_code if container else None,
        reason=task.stopped_reason or (container.reason if container else None),
        stopped_by_someone=task.stop_code == STOPPED_BY_SOMEONE,
        started_at=task.started_at,
        stopped_at=task.stopped_at,
        status=task.last_status,
    )


class InvocationDetail(_Model):
    """The bootstrap's event (``lambda_bootstrap.StepEvents``)."""

    run_id: str = Field(alias="runId", min_length=1)
    processor_id: str = Field(alias="processorId", min_length=1)
    function_name: str = Field(alias="functionName")
    attempt: str = Field(min_length=1)
    status: str
    batch_index: str | None = Field(None, alias="batchIndex")
    exit_code: int | None = Field(None, alias="exitCode")
    reason: str | None = None
    started_at: datetime | None = Field(None, alias="startedAt")
    stopped_at: datetime | None = Field(None, alias="stoppedAt")

    def attempt_of_step(self) -> Attempt:
        return Attempt(
            ref=self.attempt,
            run_id=self.run_id,
            processor_id=self.processor_id,
            batch=self.batch_index,
            active=self.status == "RUNNING",
            stopped=self.status == "STOPPED",
            exit_code=self.exit_code,
            reason=self.reason,
            stopped_by_someone=False,  # a stop of the execution ends the invocation with no event
            started_at=self.started_at,
            stopped_at=self.stopped_at,
            status=self.status,
        )


class Event(_Model):
    detail_type: str = Field(alias="detail-type")
    source: str
    time: datetime | None = None
    detail: dict[str, Any]


def handle_event(event: Any, node: Node) -> str:
    """Apply one EventBridge event; returns what was done (for the log), never raises on bad input."""
    try:
        parsed = Event.model_validate(event)
    except ValidationError as exc:
        return _ignored(f"not an EventBridge event: {_fields(exc)}")
    try:
        if parsed.detail_type == EXECUTION_EVENT:
            return _execution_changed(ExecutionDetail.model_validate(parsed.detail), node)
        if parsed.detail_type == TASK_EVENT:
            task = TaskDetail.model_validate(parsed.detail)
            return _attempt_changed(_task_attempt(task), f"task {task.task_arn}", parsed.time, node)
        if parsed.detail_type == INVOCATION_EVENT and parsed.source == boot.EVENT_SOURCE:
            return _invocation_changed(InvocationDetail.model_validate(parsed.detail), parsed.time, node)
    except ValidationError as exc:
        return _ignored(f"malformed {parsed.detail_type!r} event: {_fields(exc)}")
    return _ignored(f"unexpected event type {parsed.detail_type!r} from {parsed.source!r}")


# ------------------------------------------------------------------ executions


def _execution_changed(detail: ExecutionDetail, node: Node) -> str:
    run = node.store.get_run(detail.name)
    if run is None:
        return _ignored(f"execution {detail.execution_arn} is not a run of this node")
    if detail.status == "RUNNING":
        changed = node.store.update_run(run.run_id, Status.STARTED, execution_arn=detail.execution_arn)
        return f"run {run.run_id}: execution running" + (
            "" if changed else f" (run already {run.status.value})"
        )
    if detail.status not in EXECUTION_ENDS:
        return _ignored(f"execution status {detail.status!r} of run {run.run_id} needs nothing")
    if detail.redrive_count is not None and detail.redrive_count < run.attempt - 1:
        # The end of an attempt the run was resumed from (pennflow.node.redrive), delivered late.
        return _ignored(f"run {run.run_id} is at attempt {run.attempt}: an earlier attempt's end")
    if run.status.is_terminal:
        released = release_when_idle(run.run_id, node)
        return f"run {run.run_id}: already {run.status.value}" + (
            "" if released else "; tasks still stopping"
        )
    from pennflow.node.finalize import finalize_run

    if detail.status == "ABORTED":
        status = cancel_run(run.run_id, node, reason="the execution was stopped")
    elif detail.status == "SUCCEEDED":
        status = finalize_run(run.run_id, "SUCCEEDED", None, node).status
    else:
        failure = {"Error": detail.error or f"States.{detail.status}", "Cause": detail.cause or ""}
        if detail.status == "TIMED_OUT":
            failure["Error"] = "States.Timeout"
        status = finalize_run(run.run_id, "FAILED", failure, node).status
    return f"run {run.run_id}: execution {detail.status}, finalized as {status.value}"


# ------------------------------------------------------------------ tasks


def _invocation_changed(detail: InvocationDetail, at: datetime | None, node: Node) -> str:
    label = f"invocation {detail.attempt}"
    prefix = node.functions.settings.name_prefix if node.functions is not None else None
    if not prefix or not detail.function_name.startswith(prefix):
        return _ignored(f"{label}: function {detail.function_name!r} is not one of this node's processors")
    # The function's name is "<prefix><slot>-<hash>" (pennflow.node.lambda_functions.function_name): a
    # slot held by another run means the event is not of this run (a late one of a freed slot still is).
    slot_id = detail.function_name[len(prefix) :].rsplit("-", 1)[0]
    slot = node.slots.get(slot_id)
    if slot is not None and slot.run_id and slot.run_id != detail.run_id:
        return _ignored(f"{label}: {slot_id} is held by run {slot.run_id}, not {detail.run_id}")
    return _attempt_changed(detail.attempt_of_step(), label, at, node)


def _attempt_changed(attempt: Attempt, label: str, at: datetime | None, node: Node) -> str:
    run_id, processor_id = attempt.run_id, attempt.processor_id
    if not run_id or not processor_id:
        return _ignored(f"{label} is not a processor task (no RUN_ID/PROCESSOR_ID override)")
    run = node.store.get_run(run_id)
    if run is None:
        return _ignored(f"{label} names run {run_id!r}, which this node does not know")
    where = f"run {run_id}, processor {processor_id}"
    if attempt.active:
        first = _attempt_seen(node, attempt, run_id, processor_id, at)
        return f"{where}: {attempt.status}" + (" (attempt counted)" if first else "")
    if not attempt.stopped:
        return f"{where}: {attempt.status}, nothing to record"
    _attempt_seen(node, attempt, run_id, processor_id, at)  # STOPPED may be the first event of it
    outcome = _attempt_stopped(node, run, processor_id, attempt, at)
    if run.status.is_terminal or run.status is Status.CANCELING:
        outcome += "" if release_when_idle(run_id, node) else "; the run's slot waits for its other tasks"
    return f"{where}: {outcome}"


def _attempt_seen(node: Node, attempt: Attempt, run_id: str, processor_id: str, at: datetime | None) -> bool:
    if attempt.batch is None:
        first = node.store.record_task(run_id, processor_id, attempt.ref)
    else:  # a scatter's attempts are its batches' most tries, not its count of batch tasks
        first = node.store.record_batch_task(run_id, processor_id, attempt.batch, attempt.ref)
    started = attempt.started_at or at or utcnow()
    node.store.update_step(run_id, processor_id, Status.STARTED, started_at=started)
    return first


def _attempt_stopped(
    node: Node, run: RunRecord, processor_id: str, attempt: Attempt, at: datetime | None
) -> str:
    exit_code = attempt.exit_code
    why = attempt.reason or "no reason given"
    finished = attempt.stopped_at or at or utcnow()
    batch = attempt.batch
    if attempt.stopped_by_someone:
        node.store.update_step_when(run.run_id, processor_id, {Status.STARTED}, reason=f"task stopped: {why}")
        return f"task stopped by request ({why})"
    if batch is not None:
        if exit_code == 0:
            return f"batch {batch} succeeded"
        reason = f"batch {batch} exited {exit_code}: {why}"
        node.store.update_step_when(
            run.run_id, processor_id, {Status.STARTED}, exit_code=exit_code, reason=reason
        )
        return reason
    if exit_code == 0:
        changed = node.store.update_step(
            run.run_id, processor_id, Status.SUCCEEDED, exit_code=0, finished_at=finished
        )
        return "succeeded" if changed else "succeeded (step already final)"
    failures = node.store.record_failed_task(run.run_id, processor_id, attempt.ref)
    allowed = _allowed_attempts(node, run, processor_id)
    reason = f"attempt {failures} of {allowed} exited {exit_code}: {why}"
    if failures < allowed:
        node.store.update_step_when(
            run.run_id, processor_id, {Status.STARTED}, exit_code=exit_code, reason=reason + "; retrying"
        )
        return reason + "; retrying"
    node.store.update_step(
        run.run_id, processor_id, Status.FAILED, exit_code=exit_code, reason=reason, finished_at=finished
    )
    return reason


def _allowed_attempts(node: Node, run: RunRecord, processor_id: str) -> int:
    """1 + the retries the processor's policy allows (1 when the definition cannot be found)."""
    version = node.workflows.get_version(run.workflow, run.definition_hash)
    if version is None:
        return 1
    try:
        retry = version.workflow().processor(processor_id).retry
    except KeyError:
        return 1
    return 1 + (retry.max_attempts if retry else 0)


def _fields(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'event'}: {err['msg'].lower()}" for err in exc.errors()
    )


def _ignored(message: str) -> str:
    log.warning("event ignored: %s", message)
    return f"ignored: {message}"
