"""Run and processor status model, shared by the local engine and the compute node.

Statuses are the ones Pennsieve users know. A status only moves forward: stores apply an update
only when the current status is one of ``allowed_predecessors(new)``, so a duplicated or late
event can never move a run or a processor backwards.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from pennflow.workflow.status import Status

_NEXT: dict[Status, frozenset[Status]] = {
    Status.NOT_STARTED: frozenset({Status.STARTED, Status.CANCELING, Status.CANCELED, Status.FAILED}),
    Status.STARTED: frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELING, Status.CANCELED}),
    # A cancel may lose the race with the end of the run; the outcome that happened wins.
    Status.CANCELING: frozenset({Status.CANCELED, Status.FAILED, Status.SUCCEEDED}),
    Status.SUCCEEDED: frozenset(),
    Status.FAILED: frozenset(),
    Status.CANCELED: frozenset(),
}


def can_transition(old: Status, new: Status) -> bool:
    return new in _NEXT[old]


# A resume (``pennflow resume``, ``POST /runs/{id}/resume``) reopens an ended run that did not succeed.
# It is not a status transition: only the resume itself makes it, conditional on the run's status and
# attempt number, so a late event can still never move a run backwards.
RESUMABLE: frozenset[Status] = frozenset({Status.FAILED, Status.CANCELED})


def can_resume(old: Status) -> bool:
    return old in RESUMABLE


def allowed_predecessors(new: Status) -> frozenset[Status]:
    """The statuses from which ``new`` may be written (the condition of a conditional write)."""
    return frozenset(old for old, nexts in _NEXT.items() if new in nexts)


def new_run_id() -> str:
    """Sortable by creation time (ms timestamp in base 36) and unguessable."""
    return f"r-{_base36(int(time.time() * 1000))}-{secrets.token_hex(4)}"


def _base36(value: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while value:
        value, rem = divmod(value, 36)
        out = digits[rem] + out
    return out or "0"


def utcnow() -> datetime:
    return datetime.now(UTC)


def timestamp(moment: datetime) -> str:
    """Fixed-width UTC text: string order is time order (stores sort and compare on it)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class _Record(BaseModel):
    model_config = ConfigDict(extra="ignore")


class StepSummary(_Record):
    """How one processor ended in an earlier attempt of the run."""

    processor_id: str
    status: Status
    attempts: int = 0
    exit_code: int | None = None
    reason: str | None = None
    reused: bool = False


class RunAttempt(_Record):
    """An earlier attempt of a resumed run, as it ended."""

    attempt: int
    status: Status
    definition_hash: str
    params: dict[str, dict[str, str]] = Field(default_factory=dict)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    failed_processor: str | None = None
    reason: str | None = None
    steps: list[StepSummary] = Field(default_factory=list)


class RunRecord(_Record):
    run_id: str
    workflow: str
    definition_hash: str
    status: Status = Status.NOT_STARTED
    dataset_id: str | None = None
    package_ids: list[str] = Field(default_factory=list)
    params: dict[str, dict[str, str]] = Field(default_factory=dict)
    layers: list[dict[str, str]] = Field(default_factory=list)
    created_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    failed_processor: str | None = None
    exit_code: int | None = None
    reason: str | None = None
    execution_arn: str | None = None
    content_key: str | None = None
    origin: str = "local"
    attempt: int = 1  # raised by each resume
    history: list[RunAttempt] = Field(default_factory=list)  # the earlier attempts, oldest first
    # On a node: until when a FAILED or CANCELED run keeps its slot (files and execution) to be resumed.
    resume_until: datetime | None = None
    rerun_of: str | None = None  # the run this one repeats (`pennflow rerun`, POST /runs/{id}/rerun)
    # The itemised cost (pennflow.workflow.cost.RunCost, camelCase): measured on a node, estimated locally.
    cost: dict[str, Any] | None = None
    # processor id -> the image it ran, pinned by digest (a sourceUrl@tag built by the node's registry)
    images: dict[str, str] = Field(default_factory=dict)


class StepRecord(_Record):
    run_id: str
    processor_id: str
    status: Status = Status.NOT_STARTED
    attempts: int = 0
    exit_code: int | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    reason: str | None = None
    log_path: str | None = None
    # Recorded when the step succeeds: what it computed (``pennflow.data.step_keys``) and the content
    # of what it wrote, so that a resume can reuse it.
    step_key: str | None = None
    output_hash: str | None = None
    reused: bool = False  # this attempt of the run reused the output of an earlier one
    # One entry per attempt (pennflow.engine.resource_use.AttemptUse, camelCase): CPU time, peak memory.
    resource_use: list[dict[str, Any]] = Field(default_factory=list)

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None


def ended_attempt(record: RunRecord, steps: Sequence[StepRecord]) -> RunAttempt:
    """The attempt of ``record`` that ended, as a resumed run's history keeps it (local and node)."""
    return RunAttempt(
        attempt=record.attempt,
        status=record.status,
        definition_hash=record.definition_hash,
        params=record.params,
        started_at=record.started_at,
        finished_at=record.finished_at,
        failed_processor=record.failed_processor,
        reason=record.reason,
        steps=[
            StepSummary(
                processor_id=step.processor_id,
                status=step.status,
                attempts=step.attempts,
                exit_code=step.exit_code,
                reason=step.reason,
                reused=step.reused,
            )
            for step in steps
        ],
    )
