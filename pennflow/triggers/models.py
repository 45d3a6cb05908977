"""Trigger rules, dataset events and debounce windows (pydantic), camelCase on the wire.

A **trigger rule** says: when files matching ``fileGlob`` arrive in dataset ``datasetId``, start
workflow ``workflow`` with ``params`` and ``layers`` once the uploads have gone quiet for
``debounceSeconds`` (and at the latest ``maxWaitSeconds`` after the first of them).

Debounce is trailing-edge (the window closes once no matching upload came for ``debounceSeconds``)
rather than a fixed window from the first upload: an upload of 500 recordings that lasts twenty
minutes should start one run on all of them, not four runs on whatever had arrived. ``maxWaitSeconds``
(default one hour) bounds the wait when uploads never stop.

A **dataset event** is what a webhook delivery or an EventBridge ``Dataset Files Added`` event
carries. Unknown fields are ignored (senders add fields over time); known ones are validated,
and every fault names its field (``files.3.path``).
"""

from __future__ import annotations

import fnmatch
import math
import secrets
from collections.abc import Iterable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from pennflow.api.models import MAX_LAYERS, MAX_PARAMS, LayerName, NodeId, ParamKey, ParamValue, WorkflowName

UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
DATASET_ID_PATTERN = rf"^N:dataset:{UUID}$"
RULE_ID_PATTERN = r"^trg-[0-9a-f]{32}$"
WINDOW_ID_PATTERN = r"^[0-9a-f]{32}$"
# Delivery ids as senders make them: UUIDs, ULIDs, "evt_..." strings.
EVENT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@+=-]{0,127}$"
EVENT_TYPE_PATTERN = r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$"
# No control characters: a path is matched with fnmatch and shown to people.
PATH_PATTERN = r"^[^\x00-\x1f\x7f]+$"

FILES_UPLOADED = "files.uploaded"
TRIGGERING_EVENT_TYPES = frozenset({FILES_UPLOADED})
EVENT_SOURCE = "pennflow.datasets"
EVENT_DETAIL_TYPE = "Dataset Files Added"

MIN_DEBOUNCE_SECONDS = 1
MAX_DEBOUNCE_SECONDS = 900  # SQS's longest message delay: one message per window, no re-arming chains
DEFAULT_DEBOUNCE_SECONDS = 60
DEFAULT_MAX_WAIT_SECONDS = 3600
MAX_WAIT_LIMIT_SECONDS = 86400
MAX_GLOB = 256
MAX_PATH = 1024
MAX_EVENT_FILES = 1000
MAX_DESCRIPTION = 500

DatasetId = Annotated[str, StringConstraints(pattern=DATASET_ID_PATTERN)]
RuleId = Annotated[str, StringConstraints(pattern=RULE_ID_PATTERN)]
EventId = Annotated[str, StringConstraints(pattern=EVENT_ID_PATTERN)]
FileGlob = Annotated[str, StringConstraints(min_length=1, max_length=MAX_GLOB, pattern=PATH_PATTERN)]
FilePath = Annotated[str, StringConstraints(min_length=1, max_length=MAX_PATH, pattern=PATH_PATTERN)]
Seconds = Annotated[StrictInt, Field(ge=MIN_DEBOUNCE_SECONDS)]


def new_rule_id() -> str:
    return f"trg-{secrets.token_hex(16)}"


def new_window_id() -> str:
    return secrets.token_hex(16)


def utc(epoch_seconds: float) -> datetime:
    return datetime.fromtimestamp(epoch_seconds, UTC)


class _Wire(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class _Request(_Wire):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


# ------------------------------------------------------------------ rules


class Scope(StrEnum):
    """What a triggered run reads: the uploaded packages only, or the whole dataset."""

    UPLOADS = "uploads"
    DATASET = "dataset"


class TriggerRuleRequest(_Request):
    """POST /triggers: start ``workflow`` when files matching ``fileGlob`` arrive in ``datasetId``."""

    dataset_id: DatasetId = Field(description="The Pennsieve dataset watched (N:dataset:<uuid>).")
    workflow: WorkflowName = Field(description="A registered workflow.")
    file_glob: FileGlob | None = Field(
        None,
        description="fnmatch pattern on the uploaded file paths (`*` also crosses `/`); "
        "an upload with no matching file starts nothing. Omitted: every file matches.",
    )
    debounce_seconds: Annotated[Seconds, Field(le=MAX_DEBOUNCE_SECONDS)] = Field(
        DEFAULT_DEBOUNCE_SECONDS,
        description="The run starts once no matching file arrived for this long (1..900).",
    )
    max_wait_seconds: Annotated[Seconds, Field(le=MAX_WAIT_LIMIT_SECONDS)] = Field(
        DEFAULT_MAX_WAIT_SECONDS,
        description="... and at the latest this long after the first matching file (>= debounceSeconds).",
    )
    scope: Scope = Field(
        Scope.UPLOADS,
        description="uploads: the run reads the uploaded packages (the whole dataset when the events "
        "name no packages or too many); dataset: the run reads the whole dataset.",
    )
    params: dict[ParamKey, ParamValue] = Field(default_factory=dict, max_length=MAX_PARAMS)
    layers: list[LayerName] = Field(default_factory=list, max_length=MAX_LAYERS)
    enabled: StrictBool = True
    description: Annotated[str, StringConstraints(max_length=MAX_DESCRIPTION)] = ""

    @field_validator("max_wait_seconds")
    @classmethod
    def _wait_covers_debounce(cls, value: int, info: ValidationInfo) -> int:
        debounce = info.data.get("debounce_seconds")
        if debounce is not None and value < debounce:
            raise ValueError(f"must be at least debounceSeconds ({debounce})")
        return value


class TriggerRule(_Wire):
    """A stored rule: the request's fields plus identity and bookkeeping."""

    rule_id: RuleId
    dataset_id: DatasetId
    workflow: str
    file_glob: str | None = None
    debounce_seconds: int
    max_wait_seconds: int
    scope: Scope = Scope.UPLOADS
    params: dict[str, str] = Field(default_factory=dict)
    layers: list[str] = Field(default_factory=list)
    enabled: bool = True
    description: str = ""
    created_at: datetime
    created_by: str | None = None

    @classmethod
    def create(cls, request: TriggerRuleRequest, *, now: datetime, created_by: str | None) -> TriggerRule:
        return cls(rule_id=new_rule_id(), **request.model_dump(), created_at=now, created_by=created_by)

    def matching_files(self, files: Iterable[FileRef]) -> list[FileRef]:
        """The files this rule reacts to (case-sensitive fnmatch, the same on every platform)."""
        if self.file_glob is None:
            return list(files)
        return [f for f in files if fnmatch.fnmatchcase(f.path, self.file_glob)]


# ------------------------------------------------------------------ events


class FileRef(_Wire):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    path: FilePath = Field(description="The file's path in the dataset, e.g. sub-01/eeg/run-1.edf.")
    package_id: NodeId | None = Field(None, description="Its Pennsieve package (N:package:<uuid>).")


class DatasetEvent(_Wire):
    """What happened to a dataset: the body of a webhook delivery, the detail of an EventBridge event."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    event_id: EventId = Field(description="Unique per event; a repeated delivery of it starts nothing.")
    event_type: Annotated[str, StringConstraints(pattern=EVENT_TYPE_PATTERN)] = Field(
        description="files.uploaded starts runs; other types are acknowledged and ignored."
    )
    dataset_id: DatasetId
    files: list[FileRef] = Field(default_factory=list, max_length=MAX_EVENT_FILES)
    occurred_at: datetime | None = None


class EventBridgeDatasetEvent(BaseModel):
    """The EventBridge envelope; ``detail`` carries a dataset event.

    EventBridge's own event ``id`` stands in for a missing ``detail.eventId`` (it is stable across
    EventBridge's retries of one event), and ``detail.eventType`` defaults to files.uploaded, which
    is what the detail type says.
    """

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    id: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    source: Literal["pennflow.datasets"]
    detail_type: Literal["Dataset Files Added"] = Field(alias="detail-type")
    detail: DatasetEvent

    @model_validator(mode="before")
    @classmethod
    def _defaults_from_envelope(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("detail"), dict):
            detail = dict(data["detail"])
            if "eventId" not in detail and "event_id" not in detail and isinstance(data.get("id"), str):
                detail["eventId"] = data["id"]
            detail.setdefault("eventType", FILES_UPLOADED)
            data = {**data, "detail": detail}
        return data


# ------------------------------------------------------------------ windows


class WindowAddition(BaseModel):
    """What one event adds to a rule's window: its matching files."""

    event_id: str
    paths: frozenset[str]
    package_ids: frozenset[str]
    file_count: int

    @classmethod
    def of(cls, event_id: str, files: Iterable[FileRef]) -> WindowAddition:
        files = list(files)
        return cls(
            event_id=event_id,
            paths=frozenset(f.path for f in files),
            package_ids=frozenset(f.package_id for f in files if f.package_id),
            file_count=len(files),
        )


class PendingWindow(BaseModel):
    """A rule's open debounce window (at most one per rule, so per rule and dataset).

    ``paths`` and ``package_ids`` are bounded (see ``store.WINDOW_CAPS``); past the bound only the
    counts grow and ``truncated`` is set, and a run of such a window reads the whole dataset.
    """

    rule_id: str
    window_id: str
    dataset_id: str
    opened_at: float
    last_event_at: float
    debounce_seconds: int
    max_wait_seconds: int
    first_event_id: str
    event_count: int = 1
    file_count: int = 0
    paths: frozenset[str] = frozenset()
    package_ids: frozenset[str] = frozenset()
    truncated: bool = False
    version: int = 1  # grows with every event, so closing a window never loses a late one

    @property
    def due_at(self) -> float:
        return min(self.last_event_at + self.debounce_seconds, self.opened_at + self.max_wait_seconds)

    @property
    def expires_at(self) -> int:
        """When the store may forget it: a day past its latest due time (a safety net only)."""
        return math.ceil(self.opened_at + self.max_wait_seconds + 86400)


class WindowStatus(StrEnum):
    FIRING = "FIRING"  # closed; the run is being started (a retry of the message resumes here)
    STARTED = "STARTED"
    SKIPPED = "SKIPPED"  # the rule was deleted or disabled before the window closed
    REFUSED = "REFUSED"  # the node refused the run (e.g. the workflow is no longer registered)


class FiredWindow(BaseModel):
    """A closed window: what its run was started with, and the outcome."""

    window_id: str
    rule_id: str
    dataset_id: str
    opened_at: float
    fired_at: float
    first_event_id: str
    event_count: int
    file_count: int
    paths: frozenset[str] = frozenset()
    package_ids: frozenset[str] = frozenset()
    truncated: bool = False
    status: WindowStatus = WindowStatus.FIRING
    run_id: str | None = None
    reason: str | None = None

    @classmethod
    def closing(cls, window: PendingWindow, *, now: float) -> FiredWindow:
        return cls(
            **window.model_dump(include=set(cls.model_fields) & set(PendingWindow.model_fields)),
            fired_at=now,
        )


class TriggeredRun(BaseModel):
    """What the RunStarter is asked to start. ``key`` is the same for every attempt on one window."""

    key: str
    workflow: str
    dataset_id: str
    package_ids: list[str]
    params: dict[str, str]
    layers: list[str]
    reason: str


# ------------------------------------------------------------------ API views


class PendingView(_Wire):
    window_id: str
    opened_at: datetime
    fires_at: datetime = Field(description="If no further matching file arrives.")
    events: int
    files: int

    @classmethod
    def of(cls, window: PendingWindow) -> PendingView:
        return cls(
            window_id=window.window_id,
            opened_at=utc(window.opened_at),
            fires_at=utc(window.due_at),
            events=window.event_count,
            files=window.file_count,
        )


class TriggerView(_Wire):
    rule_id: str
    dataset_id: str
    workflow: str
    file_glob: str | None
    debounce_seconds: int
    max_wait_seconds: int
    scope: Scope
    params: dict[str, str]
    layers: list[str]
    enabled: bool
    description: str
    created_at: datetime
    created_by: str | None = None
    pending: PendingView | None = Field(None, description="The open window, if files are waiting.")

    @classmethod
    def of(cls, rule: TriggerRule, pending: PendingWindow | None = None) -> TriggerView:
        return cls(**rule.model_dump(), pending=PendingView.of(pending) if pending else None)


class TriggerList(_Wire):
    triggers: list[TriggerView]
    cursor: str | None = Field(None, description="Pass back as ?cursor= for the next page; null at the end.")


class TriggerDeleted(_Wire):
    rule_id: str
    deleted: Literal[True] = True
