"""Resume a FAILED or CANCELED run on the node: Step Functions redrive, in the slot the run kept.

(Not ``pennflow.node.resume``, which hands a preparation on to the next prepare invocation.)

A redrive continues the run's own execution (same ARN, same input, so the same slot's task
definitions and access point) from the states that did not succeed; the states that succeeded
are not run again. Step Functions redrives FAILED, TIMED_OUT and ABORTED (stopped: a CANCELED
run) Standard executions for 14 days after they ended, unless the execution hit its history
limit or its maximum duration; ``DescribeExecution``'s ``redriveStatus`` says so, and its reason is
the 409's.

What a redrive runs again, as AWS documents it: it "continues the failed execution from the
unsuccessful step and uses the same input", keeping the results of the successful steps, and a
Parallel redrives "only the iterations and branches that failed or aborted" (the RedriveExecution
API reference, https://docs.aws.amazon.com/step-functions/latest/apireference/API_RedriveExecution.html,
and the developer guide's "Redriving executions",
https://docs.aws.amazon.com/step-functions/latest/dg/redrive-executions.html); a state is
unsuccessful when its ``<type>StateEntered`` event has no ``<type>StateExited`` one ("Redriving Map
Runs", https://docs.aws.amazon.com/step-functions/latest/dg/redrive-map-run.html). A caught error
is not such a state: the state that catches it exits to the Catch's target. So the compiled
machines catch nothing (``pennflow.workflow.asl``): a failed processor fails the execution at its
own state, the status tracker finalizes the run from the FAILED event, and a redrive runs that
processor, the branches aborted with it and everything after them, and no processor that
SUCCEEDED. (With a Catch into a finalize and a Fail state, the Fail state was the unsuccessful
step and a redrive ran no processor: ``tests/integration/test_redrive_semantics.py``.) A redrive
runs with the execution's own input, so a node's run resumes with the params it was given.

The run's files must still be in its slot: a FAILED or CANCELED run keeps its slot for
``failedRunRetentionDays`` (``keep_for_resume``, called by finalize) instead of moving its files
out and freeing the slot. ``release_expired`` (scheduled) frees the slots whose time is up, and the
oldest kept one early when runs are waiting for a slot, so kept runs never starve the queue.

The run record goes back to STARTED through one conditional write (``DynamoRunStore.reopen_run``:
still FAILED or CANCELED at the expected attempt, and still kept), so two resumes, or a resume and
the cleanup, never both win. Its history keeps the ended attempt; its SUCCEEDED steps are marked
reused, the others NOT_STARTED, for the status tracker to follow again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from pennflow.aws import error_code
from pennflow.node.lifecycle import Node, RunNotFound, layer_names, release_when_idle
from pennflow.workflow.runs import (
    RESUMABLE,
    RunRecord,
    Status,
    ended_attempt,
    utcnow,
)

log = logging.getLogger(__name__)

REDRIVABLE = "REDRIVABLE"


class ResumeRefused(Exception):
    """The run cannot be resumed now; the message says why (the API's 409)."""


@dataclass(frozen=True)
class Resumed:
    run_id: str
    attempt: int
    status: Status
    reused: list[str] = field(default_factory=list)  # processors that SUCCEEDED: not run again
    redrive_date: datetime | None = None


def keep_for_resume(run: RunRecord, node: Node, now: datetime) -> bool:
    """Finalize's choice for a run that ended FAILED or CANCELED: keep its slot (files, execution)
    for the retention setting instead of releasing it. False when the node keeps none (setting 0)."""
    days = node.config.failed_run_retention_days
    if days <= 0 or run.status not in RESUMABLE or not run.execution_arn:
        return False
    if run.resume_until is not None:  # a repeated finalize: kept already
        return True
    return node.store.update_run_when(run.run_id, RESUMABLE, resume_until=now + timedelta(days=days))


def resume_run(run_id: str, node: Node, *, now: datetime | None = None) -> Resumed:
    """Redrive the run's execution; RunNotFound, or ResumeRefused saying why it cannot be."""
    now = now or utcnow()
    run = node.store.get_run(run_id)
    if run is None:
        raise RunNotFound(run_id)
    check_resumable(run, node, now)
    steps = node.store.list_steps(run_id)
    history = [*run.history, ended_attempt(run, steps)]
    if not node.store.reopen_run(run_id, attempt=run.attempt, history=history, now=now):
        latest = node.store.get_run(run_id)
        state = latest.status.value if latest else "gone"
        raise ResumeRefused(
            f"run {run_id} changed meanwhile (now {state}): it was resumed or released already"
        )
    try:
        redriven = node.sfn.redrive_execution(
            executionArn=run.execution_arn, clientToken=f"{run_id}-attempt-{run.attempt + 1}"
        )
    except Exception as exc:
        # Put the run back as it ended, still kept, so the caller can see why and try again.
        why = f"redrive refused ({error_code(exc) or type(exc).__name__}): {exc}"
        node.store.update_run(run_id, run.status, finished_at=now, reason=why, resume_until=run.resume_until)
        raise ResumeRefused(f"run {run_id} could not be resumed: {why}") from None
    reused = [step.processor_id for step in steps if step.status is Status.SUCCEEDED]
    log.info("run %s redriven (attempt %d), reused %s", run_id, run.attempt + 1, reused)
    return Resumed(run_id, run.attempt + 1, Status.STARTED, reused, redriven.get("redriveDate"))


def check_resumable(run: RunRecord, node: Node, now: datetime) -> None:
    """ResumeRefused unless the run ended FAILED or CANCELED, kept its slot, and Step Functions
    can redrive its execution."""
    run_id = run.run_id
    if run.status is Status.SUCCEEDED:
        raise ResumeRefused(f"run {run_id} SUCCEEDED: there is nothing to resume")
    if run.status not in RESUMABLE:
        raise ResumeRefused(
            f"run {run_id} is {run.status.value}: only a FAILED or CANCELED run can be resumed"
        )
    if not run.execution_arn:
        raise ResumeRefused(f"run {run_id} never started an execution: start a new run instead")
    if run.resume_until is None or run.resume_until <= now:
        days = node.config.failed_run_retention_days
        raise ResumeRefused(
            f"run {run_id} no longer holds its slot (failed runs keep it {days} day(s), "
            "failedRunRetentionDays): its files were moved out; start a new run instead"
        )
    if node.slots.held_by(run_id) is None:
        raise ResumeRefused(f"run {run_id} no longer holds its slot: start a new run instead")
    described = node.sfn.describe_execution(executionArn=run.execution_arn)
    if described.get("redriveStatus") != REDRIVABLE:
        why = described.get("redriveStatusReason") or described.get("redriveStatus") or "no reason given"
        raise ResumeRefused(f"Step Functions cannot redrive run {run_id}'s execution: {why}")


def release_expired(node: Node, *, now: datetime | None = None) -> list[str]:
    """The scheduled cleanup: free the slots of kept runs whose time is up (their files moved to
    ``/runs/<run_id>/`` as any run's are), and the oldest kept slot when runs wait for one and none is
    free. Returns the runs whose slot was freed."""
    now = now or utcnow()
    slots = node.slots.slots()
    kept: list[tuple[datetime, str]] = []
    for slot in slots:
        run = node.store.get_run(slot.run_id) if slot.run_id else None
        if run is not None and run.status in RESUMABLE and run.resume_until is not None:
            kept.append((run.resume_until, run.run_id))
    due = [run_id for until, run_id in sorted(kept) if until <= now]
    waiting = bool(node.slots.queued()) and not any(slot.is_free for slot in slots)
    if waiting and not due and kept:
        due = [min(kept)[1]]  # a queued run needs a slot more than a kept run needs resuming
    released = []
    for run_id in due:
        # Conditional: a resume that won keeps the run STARTED, and then it keeps its slot.
        if node.store.update_run_when(run_id, RESUMABLE, resume_until=None):
            _unpin_layers(run_id, node)
            release_when_idle(run_id, node)
            released.append(run_id)
    return released


def _unpin_layers(run_id: str, node: Node) -> None:
    """The layer versions the kept run still pinned (finalize left them for a resume)."""
    run = node.store.get_run(run_id)
    version = node.workflows.get_version(run.workflow, run.definition_hash) if run else None
    if run is not None and version is not None:
        node.layers.unpin(layer_names(run, version.workflow()), run_id)
