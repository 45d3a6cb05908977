"""Run and processor status model, shared by the local engine and the compute node.

Statuses are the ones Pennsieve users know. A status only moves forward: stores apply an update
only when the current status is one of ``allowed_predecessors(new)``, so a duplicated or late
event can never move a run or a processor backwards.
"""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime

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

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None
