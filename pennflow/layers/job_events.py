"""The events the layer-jobs function receives: jobs from the API, ECS task state changes, and a
persistent-layer target's calls; parsed into typed requests (a malformed one is answered, never retried)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
)
from pydantic.alias_generators import to_camel

from pennflow.layers.jobs import LayerName, validation_problems

# ------------------------------------------------------------------ events


class _Request(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True)


class BuildRequest(_Request):
    action: Literal["build"]
    layer: LayerName
    version: int = Field(ge=1)


class PopulateRequest(_Request):
    action: Literal["populate"]
    layer: LayerName
    version: int = Field(ge=1)
    dataset_id: str = Field(min_length=1)
    package_ids: list[str] = Field(default_factory=list)


class RemoveRequest(_Request):
    action: Literal["remove"]
    layer: LayerName
    access_points: dict[str, str] = Field(default_factory=dict)


class BeginTargetRequest(_Request):
    action: Literal["begin-target"]
    layer: LayerName
    run_id: str = Field(min_length=1)
    processor_id: str = Field(min_length=1)
    resume_version: int | None = Field(None, ge=1)  # a retried target's earlier reservation
    resume_token: str | None = None


class StatsModel(_Request):
    size_bytes: int = Field(ge=0)
    file_count: int = Field(ge=0)
    checksum: str = Field(min_length=1)


class PublishTargetRequest(_Request):
    action: Literal["publish-target"]
    layer: LayerName
    version: int = Field(ge=1)
    token: str = Field(min_length=1)
    stats: StatsModel


class FailTargetRequest(_Request):
    action: Literal["fail-target"]
    layer: LayerName
    version: int = Field(ge=1)
    token: str = Field(min_length=1)
    error: str = Field(min_length=1)


JobRequest = Annotated[
    BuildRequest
    | PopulateRequest
    | RemoveRequest
    | BeginTargetRequest
    | PublishTargetRequest
    | FailTargetRequest,
    Field(discriminator="action"),
]
_REQUEST = TypeAdapter(JobRequest)


class ContainerState(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    name: str
    exit_code: int | None = None
    reason: str | None = None


class TaskStopped(BaseModel):
    """The ``detail`` of an ECS Task State Change event, as far as finishing a job needs it."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    task_arn: str
    last_status: str
    started_by: str | None = None
    stopped_reason: str | None = None
    containers: list[ContainerState] = Field(default_factory=list)

    @property
    def task_id(self) -> str:
        return self.task_arn.rsplit("/", 1)[-1]


class MalformedJobEvent(ValueError):
    def __init__(self, problems: Sequence[str]):
        super().__init__("malformed layer-jobs event: " + "; ".join(problems))
        self.problems = list(problems)


def parse_request(event: Any) -> JobRequest:
    try:
        return _REQUEST.validate_python(event)
    except ValidationError as exc:
        raise MalformedJobEvent(validation_problems(exc)) from None


def parse_task_event(event: Mapping[str, Any]) -> TaskStopped:
    try:
        return TaskStopped.model_validate(event.get("detail"))
    except ValidationError as exc:
        raise MalformedJobEvent([f"detail.{p}" for p in validation_problems(exc)]) from None
