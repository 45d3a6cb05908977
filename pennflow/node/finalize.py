"""The end of a run: final statuses, log archive, provenance record, slot release (DESIGN §5).

Called by the state machine's final state with ``{"runId", "outcome": "SUCCEEDED"}``, by a cancel,
and by the status tracker when an execution ended otherwise (``failure``: the error and cause it
failed with; the machine catches nothing, so that a redrive runs the failed processor). Every step can run
twice (status writes are conditional, archives overwrite), so a retried call finishes the job.

- Final status: SUCCEEDED; FAILED naming the processor and its exit code (parsed from the ECS
  task description Step Functions puts in ``failure.Cause``, else from the step records); and
  CANCELED when the run was CANCELING (a cancel stops the tasks, which then fail).
- Logs: each task's CloudWatch stream ``<processor>/<container>/<task id>`` is copied, gzip, to
  ``s3://<log bucket>/runs/<run_id>/logs/<processor>/<task id>.log.gz``, page by page through a
  spooled temporary file, so memory stays bounded whatever the log size.
- Provenance: ``s3://<results bucket>/runs/<run_id>/run.json``.
- The slot is released once no task of the run is alive, its files kept at ``/runs/<run_id>/``.
"""

from __future__ import annotations

import gzip
import json
import logging
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pennflow.aws import error_code
from pennflow.node.lifecycle import Node, RunNotFound, layer_names, release_when_idle
from pennflow.node.redrive import keep_for_resume
from pennflow.node.run_cost import record_run_cost
from pennflow.node.run_end import publish_run_end
from pennflow.node.taskdefs import FAN_IN_CONTAINER
from pennflow.processors.registry import pinned_workflow
from pennflow.workflow.asl import CONTAINER_NAME
from pennflow.workflow.definition import Workflow
from pennflow.workflow.runs import RunRecord, Status, StepRecord, utcnow

log = logging.getLogger(__name__)

OUTCOMES = ("SUCCEEDED", "FAILED", "CANCELED")
LOG_PAGE_EVENTS = 10_000
SPOOL_BYTES = 8 * 1024 * 1024  # beyond this a log archive spills from memory to /tmp
PROVENANCE_VERSION = 1


@dataclass(frozen=True)
class FailedProcessor:
    processor_id: str | None
    exit_code: int | None
    reason: str


@dataclass(frozen=True)
class RunSummary:
    """What finalize did; the handler turns it into metrics."""

    run_id: str
    workflow: str
    status: Status
    duration_seconds: float | None
    processor_seconds: dict[str, float] = field(default_factory=dict)
    failed: FailedProcessor | None = None
    log_keys: list[str] = field(default_factory=list)
    slot_released: bool = False
    cost: dict[str, Any] | None = None  # the itemised cost (pennflow.workflow.cost.RunCost, camelCase)


def finalize_run(
    run_id: str, outcome: str, failure: Mapping[str, Any] | None, node: Node, *, now: datetime | None = None
) -> RunSummary:
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)}, got {outcome!r}")
    run = node.store.get_run(run_id)
    if run is None:
        raise RunNotFound(run_id)
    now = now or utcnow()
    steps = node.store.list_steps(run_id)
    version = node.workflows.get_version(run.workflow, run.definition_hash)
    workflow = pinned_workflow(version.workflow(), run.images, node.processors) if version else None
    ended_now = False
    if not run.status.is_terminal:  # a repeated call finds the run settled and only finishes the rest
        final = final_status(run.status, outcome)
        failed = None
        if final is Status.FAILED:
            failed = failed_processor(
                failure, steps, lambda: _failed_state(node, run.execution_arn, workflow)
            )
        _settle_steps(node, run_id, steps, final, failed, now)
        fields: dict[str, Any] = {"finished_at": now}
        if failed is not None:
            fields.update(
                failed_processor=failed.processor_id, exit_code=failed.exit_code, reason=failed.reason
            )
        ended_now = node.store.update_run(run_id, final, **fields)
    run = node.store.get_run(run_id) or run
    failed = (
        FailedProcessor(run.failed_processor, run.exit_code, run.reason or "")
        if run.status is Status.FAILED
        else None
    )

    log_keys = archive_logs(node, run_id, node.store.step_tasks(run_id))
    for processor_id in sorted({key.split("/")[3] for key in log_keys}):  # runs/<run>/logs/<processor>/...
        log_path = f"s3://{node.config.log_bucket}/runs/{run_id}/logs/{processor_id}/"
        node.store.update_step(run_id, processor_id, log_path=log_path)
    steps = node.store.list_steps(run_id)
    run = record_run_cost(node, run, steps, workflow, now=now)
    slot = node.slots.held_by(run_id)
    record = provenance(run, steps, workflow, outcome, failed, log_keys, slot)
    node.s3.put_object(
        Bucket=node.config.results_bucket,
        Key=f"runs/{run_id}/run.json",
        Body=json.dumps(record, indent=2, sort_keys=True).encode(),
        ContentType="application/json",
    )
    # A run that can be resumed keeps its slot and layer pins (pennflow.node.redrive: the setting
    # failedRunRetentionDays); the slot cleanup lets go of them.
    kept = slot is not None and keep_for_resume(run, node, now)
    if workflow is not None and not kept:
        node.layers.unpin(layer_names(run, workflow), run_id)
    # A succeeded execution waited for every task to stop (runTask.sync); other ends may leave
    # tasks stopping, and the slot waits for them.
    released = not kept and release_when_idle(run_id, node, slot, tasks_all_stopped=outcome == "SUCCEEDED")
    if released:
        _purge(node)
    summary = RunSummary(
        run_id=run_id,
        workflow=run.workflow,
        status=run.status,
        duration_seconds=_seconds(run.started_at, run.finished_at),
        processor_seconds={
            s.processor_id: s.duration_seconds for s in steps if s.duration_seconds is not None
        },
        failed=failed,
        log_keys=log_keys,
        slot_released=released,
        cost=run.cost,
    )
    if ended_now:  # measured and told once, whatever retries follow
        node.listener.run_finished(summary)
        publish_run_end(node, run)
    return summary


def final_status(current: Status, outcome: str) -> Status:
    if current.is_terminal:
        return current
    if outcome == "SUCCEEDED":
        return Status.SUCCEEDED  # a cancel that lost the race: what happened wins
    if outcome == "CANCELED" or current is Status.CANCELING:
        return Status.CANCELED
    return Status.FAILED


# ------------------------------------------------------------------ which processor failed


def failed_processor(
    failure: Mapping[str, Any] | None,
    steps: list[StepRecord],
    failed_state: Callable[[], str | None] = lambda: None,
) -> FailedProcessor:
    """From the ECS task description in ``failure.Cause`` when there is one; else the processor
    whose state failed in the execution history (Lambda states: downloads, batch listing); else
    the step records."""
    error = str((failure or {}).get("Error") or "")
    cause = (failure or {}).get("Cause")
    task = _task_description(cause)
    if task is not None:
        found = _from_task(task, error)
        if found is not None:
            return found
    cause_text = cause if isinstance(cause, str) else None
    from_steps = _from_steps(steps, error, cause_text)
    if from_steps.exit_code is not None:
        return from_steps
    processor_id = failed_state()
    if processor_id is not None:
        detail = f": {cause_text[:500]}" if cause_text else ""
        return FailedProcessor(
            processor_id, None, f"processor {processor_id!r} failed ({error or 'no error given'}){detail}"
        )
    return from_steps


def _task_description(cause: Any) -> dict[str, Any] | None:
    parsed = cause
    if isinstance(cause, str) and cause.lstrip().startswith("{"):
        try:
            parsed = json.loads(cause)
        except json.JSONDecodeError:
            return None
    if not isinstance(parsed, dict):
        return None
    # A failed child machine (a split workflow, startExecution.sync:2) reports its execution: the
    # processor's own failure is that execution's Cause, one level down per nested child.
    if "ExecutionArn" in parsed and "Cause" in parsed:
        return _task_description(parsed["Cause"])
    return parsed


def _get(mapping: Mapping[str, Any], name: str) -> Any:
    """Step Functions writes the task description in PascalCase; ECS itself in camelCase."""
    return mapping.get(name, mapping.get(name[0].lower() + name[1:]))


def _from_task(task: dict[str, Any], error: str) -> FailedProcessor | None:
    overrides = _get(task, "Overrides") or {}
    env: dict[str, str] = {}
    for container in _get(overrides, "ContainerOverrides") or []:
        if _get(container, "Name") == CONTAINER_NAME:
            env = {_get(e, "Name"): _get(e, "Value") for e in _get(container, "Environment") or []}
    processor_id = env.get("PROCESSOR_ID")
    if processor_id is None:
        return None
    containers = {_get(c, "Name"): c for c in _get(task, "Containers") or []}
    main = containers.get(CONTAINER_NAME, {})
    fan_in = containers.get(FAN_IN_CONTAINER, {})
    exit_code = _get(main, "ExitCode")
    stopped = _get(task, "StoppedReason") or ""
    if exit_code is None and _get(fan_in, "ExitCode") not in (None, 0):
        reason = f"processor {processor_id!r}: building its fan-in input failed (exit code {_get(fan_in, 'ExitCode')})"
    elif exit_code is None:
        reason = f"processor {processor_id!r} did not run: {stopped or _get(main, 'Reason') or error}"
    else:
        reason = f"processor {processor_id!r} failed with exit code {exit_code}"
    batch = env.get("BATCH_INDEX")
    if batch is not None:
        reason += f" (batch {batch})"
    return FailedProcessor(processor_id, exit_code, reason)


FAILURE_EVENTS = frozenset(
    {
        "TaskFailed",
        "TaskTimedOut",
        "LambdaFunctionFailed",
        "LambdaFunctionTimedOut",
        "MapRunFailed",
        "ExecutionFailed",
    }
)


def _failed_state(node: Node, execution_arn: str | None, workflow: Workflow | None) -> str | None:
    """The processor whose state failed first in the latest attempt, from the execution history (state
    names are ids); a redriven execution's history keeps the attempts before it, up to its last
    ``ExecutionRedriven`` event."""
    if not execution_arn or workflow is None:
        return None
    ids = {p.id for p in workflow.processors}
    try:
        events = {
            event["id"]: event
            for page in node.sfn.get_paginator("get_execution_history").paginate(
                executionArn=execution_arn, includeExecutionData=False
            )
            for event in page.get("events", [])
        }
    except Exception as exc:
        if error_code(exc) in ("ExecutionDoesNotExist", "InvalidArn", "AccessDeniedException"):
            return None
        raise
    redriven = max((e["id"] for e in events.values() if e["type"] == "ExecutionRedriven"), default=0)
    for event in sorted(events.values(), key=lambda e: e["id"]):
        if event["id"] < redriven or event["type"] not in FAILURE_EVENTS:
            continue
        walk = event
        while walk is not None:  # back to the state this failure happened in
            name = walk.get("stateEnteredEventDetails", {}).get("name")
            if name is not None:
                first_word = name.split(" ")[0]  # "<id> batches", "<id> batch", "<id> verify", ...
                if name in ids or first_word in ids:
                    return name if name in ids else first_word
                break
            walk = events.get(walk.get("previousEventId"))
    return None


def _from_steps(steps: list[StepRecord], error: str, cause: str | None) -> FailedProcessor:
    exited = [s for s in steps if s.exit_code not in (None, 0) and s.status is not Status.SUCCEEDED]
    running = [s for s in steps if s.status is Status.STARTED]
    suspect = (exited or running or [None])[0]
    what = "timed out" if error == "States.Timeout" else f"failed ({error or 'no error given'})"
    if suspect is None:
        detail = f": {cause}" if cause else ""
        return FailedProcessor(None, None, f"the run {what}{detail}")
    code = suspect.exit_code
    reason = f"processor {suspect.processor_id!r} {what}"
    if code is not None:
        reason = f"processor {suspect.processor_id!r} failed with exit code {code}"
    return FailedProcessor(suspect.processor_id, code, reason)


def _settle_steps(
    node: Node,
    run_id: str,
    steps: list[StepRecord],
    final: Status,
    failed: FailedProcessor | None,
    now: datetime,
) -> None:
    """Give every step that started a final status consistent with the run's."""
    for step in steps:
        pid = step.processor_id
        if step.status.is_terminal:
            continue
        if failed is not None and pid == failed.processor_id:
            fields = {"exit_code": failed.exit_code} if failed.exit_code is not None else {}
            node.store.update_step(
                run_id, pid, Status.FAILED, reason=failed.reason, finished_at=now, **fields
            )
        elif final is Status.SUCCEEDED:
            # The run succeeded, so every processor did, whatever events are still on their way.
            node.store.update_step(run_id, pid, Status.STARTED, started_at=step.started_at or now)
            node.store.update_step(run_id, pid, Status.SUCCEEDED, finished_at=step.finished_at or now)
        elif step.status in (Status.STARTED, Status.CANCELING):
            why = "the run was canceled" if final is Status.CANCELED else "stopped: another processor failed"
            node.store.update_step(run_id, pid, Status.CANCELED, reason=why, finished_at=now)


# ------------------------------------------------------------------ logs


def archive_logs(node: Node, run_id: str, tasks: Mapping[str, list[str]]) -> list[str]:
    """Copy each task's log streams to S3 (gzip); returns the keys written."""
    keys = []
    for processor_id, task_arns in tasks.items():
        for task_arn in task_arns:
            task_id = task_arn.rsplit("/", 1)[-1]
            for container, suffix in ((CONTAINER_NAME, ""), (FAN_IN_CONTAINER, ".fan-in")):
                key = f"runs/{run_id}/logs/{processor_id}/{task_id}{suffix}.log.gz"
                stream = f"{processor_id}/{container}/{task_id}"
                if archive_stream(node, stream, key):
                    keys.append(key)
    return keys


def archive_stream(node: Node, stream: str, key: str) -> bool:
    """One CloudWatch stream to one gzip object; False when the stream does not exist."""
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as spool:
        with gzip.GzipFile(fileobj=spool, mode="wb") as archive:
            try:
                for event in _log_events(node, stream):
                    moment = datetime.fromtimestamp(event["timestamp"] / 1000, UTC).isoformat()
                    archive.write(f"{moment} {event['message'].rstrip()}\n".encode())
            except Exception as exc:
                if error_code(exc) == "ResourceNotFoundException":
                    return False
                raise
        spool.seek(0)
        node.s3.upload_fileobj(
            spool, node.config.log_bucket, key, ExtraArgs={"ContentType": "application/gzip"}
        )
    return True


def _log_events(node: Node, stream: str):
    token = None
    while True:
        request = {
            "logGroupName": node.config.log_group,
            "logStreamName": stream,
            "startFromHead": True,
            "limit": LOG_PAGE_EVENTS,
        }
        if token:
            request["nextToken"] = token
        page = node.logs.get_log_events(**request)
        yield from page.get("events", [])
        following = page.get("nextForwardToken")
        if not following or following == token:  # the same token twice: the end of the stream
            return
        token = following


# ------------------------------------------------------------------ provenance


def provenance(
    run: RunRecord,
    steps: list[StepRecord],
    workflow: Workflow | None,
    outcome: str,
    failed: FailedProcessor | None,
    log_keys: list[str],
    slot: Any,
) -> dict[str, Any]:
    """What ran, on what, with which parameters, and how it went: ``runs/<run_id>/run.json``."""
    processors = {p.id: p for p in workflow.processors} if workflow else {}
    run_layers = [layer["name"] for layer in run.layers if layer.get("name")]
    return {
        "version": PROVENANCE_VERSION,
        "runId": run.run_id,
        "workflow": run.workflow,
        "definitionHash": run.definition_hash,
        "datasetId": run.dataset_id,
        "origin": run.origin,
        "executionArn": run.execution_arn,
        "outcome": outcome,
        "status": run.status.value,
        "reason": run.reason,
        "createdAt": _iso(run.created_at),
        "startedAt": _iso(run.started_at),
        "finishedAt": _iso(run.finished_at),
        "durationSeconds": _seconds(run.started_at, run.finished_at),
        "layers": run.layers,
        "cost": run.cost,
        "failure": None
        if failed is None
        else {"processor": failed.processor_id, "exitCode": failed.exit_code, "reason": failed.reason},
        "slot": getattr(slot, "slot_id", None),
        "processors": [
            _processor_record(step, processors.get(step.processor_id), run, run_layers, log_keys)
            for step in steps
        ],
    }


def _processor_record(
    step: StepRecord, processor: Any, run: RunRecord, run_layers: list[str], log_keys: list[str]
) -> dict[str, Any]:
    prefix = f"runs/{run.run_id}/logs/{step.processor_id}/"
    record: dict[str, Any] = {
        "id": step.processor_id,
        "status": step.status.value,
        "attempts": step.attempts,
        "exitCode": step.exit_code,
        "reason": step.reason,
        "startedAt": _iso(step.started_at),
        "finishedAt": _iso(step.finished_at),
        "durationSeconds": step.duration_seconds,
        "params": run.params.get(step.processor_id, {}),
        "logs": [key for key in log_keys if key.startswith(prefix)],
    }
    if processor is not None:
        record.update(
            type=processor.type.value,
            image=processor.image,
            sourceUrl=processor.source_url,
            tag=processor.tag,
            cpu=processor.cpu,
            memory=processor.memory,
            layers=list(dict.fromkeys([*run_layers, *processor.layers])),
            dependsOn=list(processor.dependencies),
        )
    return record


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    return (end - start).total_seconds() if start and end else None


def _purge(node: Node) -> None:
    try:
        purged = node.folders.purge_expired(node.config.retention_days)
    except OSError:
        log.exception("purging expired run folders failed; the next finalize tries again")
        return
    if purged:
        log.info("purged expired run folders: %s", ", ".join(purged))
