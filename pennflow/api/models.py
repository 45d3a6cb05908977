"""Request and response bodies of the REST API: camelCase on the wire, as in Pennsieve's API.

Request bodies forbid unknown fields, so a misspelt ``datasetID`` is an error naming it instead
of a setting silently ignored.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, StringConstraints
from pydantic.alias_generators import to_camel

from pennflow.workflow.cost import RunCost
from pennflow.workflow.definition import MAX_NAME, NAME_RE
from pennflow.workflow.runs import RunAttempt, RunRecord, Status, StepRecord

# A run id is its Step Functions execution name: at most 80 characters of [A-Za-z0-9_-].
RUN_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,79}$"
NAME_PATTERN = NAME_RE.pattern
# Pennsieve node ids (N:dataset:<uuid>, N:package:<uuid>) or integer ids.
NODE_ID_PATTERN = r"^(N:[a-z]+:[A-Za-z0-9-]{1,64}|[0-9]{1,18})$"
# A run-level param override: KEY (every processor declaring it) or processor.KEY.
PARAM_KEY_PATTERN = r"^([a-z0-9][a-z0-9-]{0,63}\.)?[A-Za-z_][A-Za-z0-9_]{0,127}$"
MAX_PARAMS = 200
MAX_PARAM_VALUE = 4096
MAX_PACKAGES = 1000
MAX_LAYERS = 20
MAX_LIST_LIMIT = 100
DEFAULT_LIST_LIMIT = 50
MAX_CURSOR = 2048

WorkflowName = Annotated[str, StringConstraints(pattern=NAME_PATTERN, max_length=MAX_NAME)]
LayerName = Annotated[str, StringConstraints(pattern=NAME_PATTERN, max_length=MAX_NAME)]
NodeId = Annotated[str, StringConstraints(pattern=NODE_ID_PATTERN)]
ParamKey = Annotated[str, StringConstraints(pattern=PARAM_KEY_PATTERN)]
ParamValue = Annotated[StrictStr, StringConstraints(max_length=MAX_PARAM_VALUE)]


class _Request(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class _View(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


# ------------------------------------------------------------------ errors


class FieldError(_View):
    field: str = Field(description="The offending field, dotted for nested ones (params.WINDOW).")
    location: Literal["body", "query", "path", "header"] = Field(alias="in")
    message: str


class DefinitionFault(_View):
    processor: str | None = Field(description="Processor id, or null for the workflow itself.")
    field: str
    message: str


class ErrorDetail(_View):
    code: str = Field(description="Stable machine-readable code, e.g. invalid_request, not_found.")
    message: str
    fields: list[FieldError] = Field(default_factory=list)
    faults: list[DefinitionFault] | None = Field(None, description="Every fault of an invalid definition.")
    request_id: str | None = None


class ErrorBody(_View):
    error: ErrorDetail


# ------------------------------------------------------------------ workflows


ManagedBy = Literal["api", "cloudformation"]
MANAGED_BY_DESCRIPTION = (
    "Who owns the workflow: 'api' (POST /workflows) or 'cloudformation' (deployed from the node's workflows "
    "folder; change the file and redeploy)."
)
STACK_TIMES = "None for a workflow deployed from the workflows folder (its stack keeps that history)."


class WorkflowView(_View):
    name: str
    definition_hash: str
    state_machine_arn: str
    state_machine_version_arn: str | None = Field(
        None, description="The published state machine version that runs this definition."
    )
    managed_by: ManagedBy = Field("api", description=MANAGED_BY_DESCRIPTION)
    created_at: datetime | None = Field(description=STACK_TIMES)
    updated_at: datetime | None = Field(description=STACK_TIMES)
    definition: dict[str, Any] = Field(description="The definition as registered, with defaults filled in.")


class WorkflowSummary(_View):
    name: str
    summary: str | None = None
    definition_hash: str
    processors: int
    state_machine_arn: str
    managed_by: ManagedBy = Field("api", description=MANAGED_BY_DESCRIPTION)
    updated_at: datetime | None = Field(description=STACK_TIMES)


class WorkflowList(_View):
    workflows: list[WorkflowSummary]


# ------------------------------------------------------------------ runs


class RunRequest(_Request):
    """Start a run of a registered workflow."""

    workflow: WorkflowName
    dataset_id: NodeId | None = None
    package_ids: list[NodeId] = Field(default_factory=list, max_length=MAX_PACKAGES)
    params: dict[ParamKey, ParamValue] = Field(
        default_factory=dict,
        max_length=MAX_PARAMS,
        description="Overrides of declared defaultParams: KEY (every processor declaring it) or processor.KEY.",
    )
    layers: list[LayerName] = Field(default_factory=list, max_length=MAX_LAYERS)
    force: StrictBool = Field(
        False, description="Start a new run even when a SUCCEEDED run has the same content key."
    )
    dry_run: StrictBool = Field(
        False, description="Validate and return the plan, the inputs and the content key; start nothing."
    )


CONTENT_KEY_DESCRIPTION = (
    "sha256 over the definition hash, each processor's image digest and params, the layer versions and "
    "the input files (ids, paths, sizes, checksums); null when the node could not list the inputs or "
    "layers (see warnings), and such a run is never taken for a duplicate."
)


class RunAccepted(_View):
    run_id: str
    workflow: str
    status: Status
    execution_arn: str = Field(description="The Step Functions execution; its name is the run id.")
    console_url: str
    rerun_of: str | None = None
    content_key: str | None = Field(None, description=CONTENT_KEY_DESCRIPTION)
    warnings: list[str] = Field(default_factory=list, description="What the content key could not pin down.")


class InputsView(_View):
    """The run's input files as its content key covers them (the manifest summary)."""

    dataset_id: str | None = None
    package_ids: list[str] = Field(default_factory=list)
    file_count: int
    total_bytes: int
    files_sha256: str = Field(description="sha256 of the sorted file list (ids, paths, sizes, checksums).")
    without_checksum: int = Field(description="Files Pennsieve lists without a checksum.")


class ImageView(_View):
    reference: str
    digest: str | None = None
    source: str = Field(description="pinned | ecr | builtin | command | unresolved (a tag that can move).")
    detail: str | None = None


class ProcessorPlan(_View):
    id: str
    type: str
    image: ImageView
    params: dict[str, str]


class LayerVersion(_View):
    name: str
    version: int | str
    checksum: str | None = None


class RunPlan(_View):
    """What a run would do (``dryRun``): nothing is created or started."""

    dry_run: Literal[True] = True
    workflow: str
    definition_hash: str
    content_key: str | None = Field(description=CONTENT_KEY_DESCRIPTION)
    duplicate_of: str | None = Field(
        None, description="The SUCCEEDED run with this content key: a start without force returns it."
    )
    dataset_id: str | None
    package_ids: list[str]
    params: dict[str, dict[str, str]] = Field(description="Each processor's params after the overrides.")
    layers: list[str]
    layer_versions: list[LayerVersion] = Field(description="The published version of each layer mounted.")
    inputs: InputsView | None = Field(description="The dataset's files, summarized; null without a dataset.")
    processors: list[ProcessorPlan]
    warnings: list[str]
    plan: str = Field(description="The compiled structure and any ordering the compiler added.")
    cost_estimate: RunCost | None = Field(
        None,
        description="The most the run can cost: every processor to its timeout on every attempt, the "
        "dataset through the NAT and on EFS; a start is refused (422) above the node's runCostCeiling.",
    )


class StepView(_View):
    processor_id: str
    status: Status
    attempts: int
    exit_code: int | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_seconds: float | None = None
    reason: str | None = None
    log_path: str | None = None
    reused: bool = Field(
        False, description="A resumed run's step that SUCCEEDED in an earlier attempt: not run again."
    )

    @classmethod
    def of(cls, step: StepRecord) -> StepView:
        return cls(**step.model_dump(), duration_seconds=step.duration_seconds)


class AttemptStepView(_View):
    """How one processor ended in an earlier attempt of a resumed run."""

    processor_id: str
    status: Status
    attempts: int = Field(description="Its tries in that attempt of the run, counted from 1.")
    exit_code: int | None = None
    reason: str | None = None
    reused: bool = False


class RunAttemptView(_View):
    """An earlier attempt of a resumed run, as it ended (``pennflow status`` lists them too)."""

    attempt: int
    status: Status
    definition_hash: str
    params: dict[str, dict[str, str]]
    started_at: datetime | None = None
    finished_at: datetime | None = None
    failed_processor: str | None = None
    reason: str | None = None
    steps: list[AttemptStepView]

    @classmethod
    def of(cls, attempt: RunAttempt) -> RunAttemptView:
        return cls.model_validate(attempt.model_dump())


class RunSummary(_View):
    run_id: str
    workflow: str
    status: Status
    dataset_id: str | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    failed_processor: str | None = None

    @classmethod
    def of(cls, run: RunRecord) -> RunSummary:
        return cls(**run.model_dump(include=set(cls.model_fields)))


class RunDuplicate(_View):
    """A start whose content key matches a SUCCEEDED run: that run is the answer, nothing starts."""

    duplicate_of: str = Field(description="The SUCCEEDED run with the same content key.")
    content_key: str
    run: RunSummary
    message: str


class RunView(RunSummary):
    definition_hash: str
    content_key: str | None = None
    params: dict[str, dict[str, str]]
    layers: list[dict[str, str]]
    exit_code: int | None = None
    reason: str | None = None
    execution_arn: str | None = None
    console_url: str | None = None
    origin: str
    rerun_of: str | None = Field(None, description="The run this one repeats, for a rerun.")
    attempt: int = Field(
        1, description="The run's attempt: 1, raised by each resume (POST /runs/{id}/resume)."
    )
    history: list[RunAttemptView] = Field(
        default_factory=list, description="The earlier attempts of a resumed run, oldest first."
    )
    resume_until: datetime | None = Field(
        None,
        description="A FAILED or CANCELED run keeps its slot until then (failedRunRetentionDays) and can "
        "be resumed; null otherwise.",
    )
    steps: list[StepView]
    cost: RunCost | None = Field(
        None, description="What the run cost, itemised at the node's prices; null until it has ended."
    )


class RunList(_View):
    runs: list[RunSummary]
    cursor: str | None = Field(None, description="Pass back as ?cursor= for the next page; null at the end.")


class CancelAccepted(_View):
    run_id: str
    status: Status
