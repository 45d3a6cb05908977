"""Typed settings of the Lambda functions, read from the environment the stack sets.

Variable names are those of ``stacks/constants.py`` (``ENV``). A missing or bad value fails the
cold start with one line per variable (``RUNS_TABLE: required``), never a traceback.

``ApiSettings`` serves the API function; ``NodeSettings`` the run lifecycle functions (prepare,
status, finalize, cancel, list_batches), which all may start queued runs and so need the whole
node: tables, buckets, cluster, network, task roles, EFS, function ARNs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError


class SettingsError(RuntimeError):
    """The function's environment is incomplete or invalid (one line per variable)."""


def _comma_list(value: Any) -> Any:
    return [part.strip() for part in value.split(",") if part.strip()] if isinstance(value, str) else value


# An IAM role ARN in any partition whose name holds the {slot} and {kind} fields, once each.
SLOT_ROLE_TEMPLATE_RE = r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]*\{slot\}-\{kind\}$"
IdList = Annotated[list[str], BeforeValidator(_comma_list), Field(min_length=1)]


class _EnvSettings(BaseModel):
    """Built from a mapping of environment variables (``os.environ`` when none is given)."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=False, str_strip_whitespace=True)

    def __init__(self, environ: Mapping[str, str] | None = None, **values: Any):
        data = dict(os.environ if environ is None else environ)
        data.update(values)
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise SettingsError(_describe(exc)) from None


class ApiSettings(_EnvSettings):
    node_name: str = Field("pennflow", alias="PENNFLOW_NODE_NAME")
    runs_table: str = Field(alias="RUNS_TABLE", min_length=1)
    workflows_table: str = Field(alias="WORKFLOWS_TABLE", min_length=1)
    idempotency_table: str = Field(alias="IDEMPOTENCY_TABLE", min_length=1)
    state_machine_prefix: str = Field(alias="STATE_MACHINE_PREFIX", min_length=1)
    state_machine_role_arn: str = Field(alias="STATE_MACHINE_ROLE_ARN", min_length=1)
    state_machine_log_group_arn: str | None = Field(None, alias="STATE_MACHINE_LOG_GROUP_ARN")
    prepare_function_name: str = Field(alias="PREPARE_FUNCTION_NAME", min_length=1)
    cancel_function_name: str = Field(alias="CANCEL_FUNCTION_NAME", min_length=1)
    resume_function_name: str | None = Field(None, alias="RESUME_FUNCTION_NAME")  # POST /runs/{id}/resume
    # Keying a run: its files listed with the node's Pennsieve secret, its manifest written to the
    # results bucket, its layers' versions read from the layers table. Without one, no content key.
    pennsieve_secret_arn: str | None = Field(None, alias="PENNSIEVE_SECRET_ARN")
    results_bucket: str | None = Field(None, alias="RESULTS_BUCKET")
    layers_table: str | None = Field(None, alias="LAYERS_TABLE")
    # A run's logs (archived, else live) and results, read by GET /runs/{id}/logs and /results.
    log_bucket: str | None = Field(None, alias="LOG_ARCHIVE_BUCKET")
    processor_log_group: str | None = Field(None, alias="PROCESSOR_LOG_GROUP")
    # A run's estimate (pennflow.api.run_budget): the node's prices, and the per-run ceiling if set.
    region: str | None = Field(None, alias="AWS_REGION")
    cost_prices: str = Field("{}", alias="COST_PRICES")
    run_cost_ceiling: float | None = Field(None, alias="RUN_COST_CEILING_USD", gt=0)
    # computeType gpu (pennflow.node.gpu): the node's GPU capacity provider, absent when it has none.
    gpu_capacity_provider: str | None = Field(None, alias="GPU_CAPACITY_PROVIDER")
    gpu_instance_types: str = Field("", alias="GPU_INSTANCE_TYPES")


class NodeSettings(_EnvSettings):
    node_name: str = Field("pennflow", alias="PENNFLOW_NODE_NAME")
    region: str = Field(alias="AWS_REGION", min_length=1)
    runs_table: str = Field(alias="RUNS_TABLE", min_length=1)
    workflows_table: str = Field(alias="WORKFLOWS_TABLE", min_length=1)
    slots_table: str = Field(alias="SLOTS_TABLE", min_length=1)
    layers_table: str | None = Field(None, alias="LAYERS_TABLE")
    # sourceUrl processors' manifests (cpu, memory) for the images a run pinned (stacks/processors.py)
    processors_table: str | None = Field(None, alias="PROCESSORS_TABLE")
    results_bucket: str = Field(alias="RESULTS_BUCKET", min_length=1)
    log_bucket: str = Field(alias="LOG_ARCHIVE_BUCKET", min_length=1)
    cluster_arn: str = Field(alias="CLUSTER_ARN", min_length=1)
    processor_log_group: str = Field(alias="PROCESSOR_LOG_GROUP", min_length=1)
    execution_role_arn: str = Field(alias="TASK_EXECUTION_ROLE_ARN", min_length=1)
    # One processor and one built-in task role per run slot, named by this template (stacks.compute).
    slot_role_template: str = Field(alias="SLOT_TASK_ROLE_ARN_TEMPLATE", pattern=SLOT_ROLE_TEMPLATE_RE)
    builtin_image: str = Field(alias="BUILTIN_IMAGE", min_length=1)
    file_system_id: str = Field(alias="FILE_SYSTEM_ID", min_length=1)
    layers_access_point_id: str | None = Field(None, alias="LAYERS_ACCESS_POINT_ID")
    runs_mount: Path = Field(Path("/mnt/runs"), alias="RUNS_MOUNT")
    run_slots: int = Field(alias="RUN_SLOTS", ge=1, le=50)
    subnets: IdList = Field(alias="TASK_SUBNET_IDS")
    security_groups: IdList = Field(alias="TASK_SECURITY_GROUP_ID")  # one id, or several comma-separated
    task_family_prefix: str = Field("pf-", alias="TASK_FAMILY_PREFIX", min_length=1)
    state_machine_prefix: str = Field(alias="STATE_MACHINE_PREFIX", min_length=1)
    state_machine_role_arn: str = Field("", alias="STATE_MACHINE_ROLE_ARN")  # only registering needs it
    finalize_function: str = Field(alias="FINALIZE_FUNCTION_ARN", min_length=1)  # an ARN or a name
    list_batches_function: str | None = Field(None, alias="LIST_BATCHES_FUNCTION_ARN")
    download_function: str | None = Field(None, alias="DOWNLOAD_FUNCTION_ARN")
    join_function: str | None = Field(None, alias="JOIN_FUNCTION_ARN")
    retention_days: int = Field(90, alias="RUN_RETENTION_DAYS", ge=1, le=3650)
    # A FAILED or CANCELED run keeps its slot this long, to be resumed (pennflow.node.redrive); 0: never.
    failed_run_retention_days: int = Field(0, alias="FAILED_RUN_RETENTION_DAYS", ge=0, le=14)
    pennsieve_secret_arn: str | None = Field(None, alias="PENNSIEVE_SECRET_ARN")
    layer_jobs_function_name: str | None = Field(None, alias="LAYER_JOBS_FUNCTION_NAME")
    # Resumes a preparation that did not fit in one invocation (pennflow.node.resume).
    prepare_function_name: str | None = Field(None, alias="PREPARE_FUNCTION_NAME")
    # Pennsieve's processor environment (pennflow.workflow.pennsieve_env): the node's half.
    pennsieve_api_host: str = Field("https://api.pennsieve.io", alias="PENNSIEVE_API_HOST")
    pennsieve_api2_host: str = Field("https://api2.pennsieve.io", alias="PENNSIEVE_API2_HOST")
    pennsieve_environment: str = Field("prod", alias="PENNSIEVE_ENVIRONMENT")
    deployment_mode: str = Field("secure", alias="DEPLOYMENT_MODE", pattern="^(basic|secure|compliant)$")
    organization_id: str = Field("", alias="PENNSIEVE_ORGANIZATION_ID")
    # Where each slot's run id and SESSION_TOKEN are written at lease time (SSM parameters).
    slot_parameter_prefix: str | None = Field(None, alias="SLOT_PARAMETER_PREFIX")
    # cdk.json's costPrices (pennflow.workflow.cost.PriceOverrides as JSON); checked at synth.
    cost_prices: str = Field("{}", alias="COST_PRICES")
    gpu_capacity_provider: str | None = Field(None, alias="GPU_CAPACITY_PROVIDER")
    gpu_instance_types: str = Field("", alias="GPU_INSTANCE_TYPES")
    notify_topic_arn: str | None = Field(None, alias="NOTIFY_TOPIC_ARN")  # run ends (stacks/notifications.py)
    # computeType lambda: the processor functions' name prefix and per-slot role (stacks/lambda_compute.py).
    processor_function_prefix: str | None = Field(None, alias="PROCESSOR_FUNCTION_PREFIX")
    processor_function_role_template: str | None = Field(
        None, alias="PROCESSOR_FUNCTION_ROLE_TEMPLATE", pattern=r"^arn:[^{}]*\{slot\}[^{}]*$"
    )


def _describe(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        name = ".".join(str(part) for part in error["loc"]) or "environment"
        message = "required" if error["type"] == "missing" else error["msg"]
        lines.append(f"{name}: {message}")
    return "invalid function settings:\n" + "\n".join(lines)


@cache
def node_settings() -> NodeSettings:
    return NodeSettings()


@cache
def node() -> Any:
    """The run lifecycle's dependencies, built once per Lambda container (see pennflow.node.lifecycle.Node)."""
    from lambdas.observability import MetricsListener

    return build_node(node_settings(), listener=MetricsListener())


def node_for(context: Any) -> Any:
    """The node with this invocation's time budget: a preparation that would not fit is handed on."""
    from dataclasses import replace

    from pennflow.node.resume import TimeBudget

    return replace(node(), budget=TimeBudget.of_lambda(context))


def _pennsieve_environment(settings: NodeSettings) -> dict[str, str]:
    from pennflow.workflow.pennsieve_env import PennsieveNodeEnvironment

    return PennsieveNodeEnvironment(
        api_host=settings.pennsieve_api_host,
        api_host2=settings.pennsieve_api2_host,
        environment=settings.pennsieve_environment,
        region=settings.region,
        deployment_mode=settings.deployment_mode,
        organization_id=settings.organization_id,
    ).variables()


def _processor_functions(settings: NodeSettings) -> Any:
    from pennflow.node.lambda_functions import FunctionSettings, ProcessorFunctions

    return ProcessorFunctions(
        FunctionSettings(
            name_prefix=settings.processor_function_prefix or "",
            role_template=settings.processor_function_role_template or "",
            subnets=tuple(settings.subnets),
            security_groups=tuple(settings.security_groups),
            region=settings.region,
            log_group=settings.processor_log_group,
            slot_parameter_prefix=settings.slot_parameter_prefix,
            session_tokens=bool(settings.pennsieve_secret_arn),
            pennsieve_environment=_pennsieve_environment(settings),
            node_name=settings.node_name,
        )
    )


def build_node(settings: NodeSettings, listener: Any = None) -> Any:
    from pennflow.node.lifecycle import Node, NodeConfig, NoLayers, PennsieveManifests, RegistryLayerPins
    from pennflow.node.registry import DynamoWorkflowRegistry, StateMachineSettings
    from pennflow.node.resume import AsyncPrepare, NoContinuation
    from pennflow.node.slots import SlotFolders, SlotPool
    from pennflow.node.taskdefs import TaskDefinitions, TaskSettings
    from pennflow.stores.dynamodb import DynamoRunStore

    slots = SlotPool(
        settings.slots_table, file_system_id=settings.file_system_id, slot_count=settings.run_slots
    )
    task_settings = TaskSettings(
        file_system_id=settings.file_system_id,
        execution_role_arn=settings.execution_role_arn,
        slot_role_template=settings.slot_role_template,
        builtin_image=settings.builtin_image,
        log_group=settings.processor_log_group,
        region=settings.region,
        layers_access_point_id=settings.layers_access_point_id,
        family_prefix=settings.task_family_prefix,
        pennsieve_environment=_pennsieve_environment(settings),
        slot_parameter_prefix=settings.slot_parameter_prefix,
        session_tokens=bool(settings.pennsieve_secret_arn),
        node_name=settings.node_name,
        builtin_environment={
            name: value
            for name, value in {
                "PENNSIEVE_SECRET_ARN": settings.pennsieve_secret_arn,
                "RESULTS_BUCKET": settings.results_bucket,
                # persistent-layer targets reserve and publish layer versions through it
                "LAYER_JOBS_FUNCTION_NAME": settings.layer_jobs_function_name,
            }.items()
            if value
        },
    )
    machines = StateMachineSettings(
        prefix=settings.state_machine_prefix, role_arn=settings.state_machine_role_arn
    )
    if settings.layers_table:
        from pennflow.layers.dynamodb import DynamoLayerRegistry

        layers: Any = RegistryLayerPins(DynamoLayerRegistry(settings.layers_table))
    else:
        layers = NoLayers()
    config = NodeConfig(
        cluster_arn=settings.cluster_arn,
        subnets=tuple(settings.subnets),
        security_groups=tuple(settings.security_groups),
        finalize_function=settings.finalize_function,
        list_batches_function=settings.list_batches_function,
        download_function=settings.download_function,
        join_function=settings.join_function,
        log_group=settings.processor_log_group,
        log_bucket=settings.log_bucket,
        results_bucket=settings.results_bucket,
        retention_days=settings.retention_days,
        failed_run_retention_days=settings.failed_run_retention_days,
        region=settings.region,
        cost_prices=settings.cost_prices,
        notify_topic_arn=settings.notify_topic_arn,
        gpu_capacity_provider=settings.gpu_capacity_provider,
        gpu_instance_types=tuple(t for t in settings.gpu_instance_types.split(",") if t),
    )
    extra: dict[str, Any] = {"listener": listener} if listener is not None else {}
    if task_settings.slot_parameter_prefix:
        from pennflow.node.session_tokens import SlotRunParameters

        extra["run_parameters"] = SlotRunParameters(task_settings)
    if settings.processor_function_prefix and settings.processor_function_role_template:
        extra["functions"] = _processor_functions(settings)
    if settings.processors_table:
        from pennflow.node.processor_builds import DynamoProcessorRegistry

        extra["processors"] = DynamoProcessorRegistry(settings.processors_table)
    return Node(
        config=config,
        store=DynamoRunStore(settings.runs_table),
        slots=slots,
        folders=SlotFolders(settings.runs_mount),
        task_definitions=TaskDefinitions(task_settings, slots),
        workflows=DynamoWorkflowRegistry(settings.workflows_table, machines),
        layers=layers,
        manifests=PennsieveManifests(settings.results_bucket),
        continuation=(
            AsyncPrepare(settings.prepare_function_name)
            if settings.prepare_function_name
            else NoContinuation()
        ),
        **extra,
    )


class SessionEnvironment(_EnvSettings):
    """What the notebooks function reads besides the node (stacks/notebooks.py sets it)."""

    image: str = Field(alias="NOTEBOOK_IMAGE", min_length=1)
    python_version: str = Field(alias="NOTEBOOK_PYTHON", pattern=r"^3\.\d{1,2}$")
    idle_minutes: int = Field(alias="NOTEBOOK_IDLE_MINUTES", ge=5, le=7 * 24 * 60)
    security_group: str = Field(alias="NOTEBOOK_SECURITY_GROUP_ID", min_length=1)
    log_group: str = Field(alias="NOTEBOOK_LOG_GROUP", min_length=1)
    family_prefix: str = Field(alias="NOTEBOOK_FAMILY_PREFIX", min_length=1)


@cache
def session_settings() -> Any:
    from pennflow.node.notebooks import SessionSettings

    return SessionSettings(**SessionEnvironment().model_dump())
