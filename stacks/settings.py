"""The user-editable settings of a compute node: the `pennflow` object of cdk.json's context.

Every field is validated at synth; a bad value stops the synth with one line per fault naming the
field (`pennflow.vpc.privateSubnetIds: ...`), never a traceback.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

from pennflow.workflow.cost import PriceOverrides
from pennflow.workflow.gpu import DEFAULT_GPU_INSTANCE_TYPES, GPU_INSTANCES, known
from stacks import constants as C

# CloudWatch Logs accepts only these retention periods (days).
LOG_RETENTION_DAYS = (
    1,
    3,
    5,
    7,
    14,
    30,
    60,
    90,
    120,
    150,
    180,
    365,
    400,
    545,
    731,
    1096,
    1827,
    2192,
    2557,
    2922,
    3288,
    3653,
)
REGION_RE = r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d$"
EMAIL_RE = r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$"
LAYER_ARN_RE = r"^arn:aws[a-z-]*:lambda:[a-z0-9-]+:\d{12}:layer:[A-Za-z0-9_-]+:\d+$"
# Who may use notebook sessions: IAM roles or users (the API compares a caller's role or user with these).
PRINCIPAL_ARN_RE = r"^arn:aws[a-z-]*:iam::\d{12}:(role|user)/[\w+=,.@/-]+$"
IMAGE_RE = r"^[a-z0-9][a-z0-9._/:@-]*$"


class SettingsError(ValueError):
    """Invalid node settings; the message lists every fault, one per line."""


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
        str_strip_whitespace=True,
    )


class ExistingVpc(_Model):
    """Reuse a VPC: its id, the private subnets tasks and Lambdas run in, and their zones."""

    vpc_id: Annotated[str, Field(pattern=r"^vpc-[0-9a-f]{8,17}$")]
    private_subnet_ids: Annotated[
        list[Annotated[str, Field(pattern=r"^subnet-[0-9a-f]{8,17}$")]], Field(min_length=1)
    ]
    availability_zones: Annotated[
        list[Annotated[str, Field(pattern=r"^[a-z]{2}-[a-z-]+-\d[a-z]$")]], Field(min_length=1)
    ]
    # Route tables of those subnets, one per subnet: needed for the S3 and DynamoDB gateway endpoints.
    private_route_table_ids: list[Annotated[str, Field(pattern=r"^rtb-[0-9a-f]{8,17}$")]] = []
    # Set false when the VPC already has interface endpoints with private DNS for these services.
    create_endpoints: bool = True

    @model_validator(mode="after")
    def _one_subnet_per_zone(self) -> ExistingVpc:
        if len(self.private_subnet_ids) != len(self.availability_zones):
            raise ValueError(
                f"privateSubnetIds has {len(self.private_subnet_ids)} entries and availabilityZones has "
                f"{len(self.availability_zones)}; give one zone per subnet, in the same order"
            )
        if self.private_route_table_ids and len(self.private_route_table_ids) != len(self.private_subnet_ids):
            raise ValueError(
                "privateRouteTableIds needs one route table per private subnet, in the same order"
            )
        return self


class RetentionDays(_Model):
    """How long run files (S3 log archive, old result versions) and CloudWatch logs are kept."""

    run_files: Annotated[int, Field(ge=1, le=3650)] = 90
    logs: int = 30

    @field_validator("logs")
    @classmethod
    def _cloudwatch_value(cls, value: int) -> int:
        if value not in LOG_RETENTION_DAYS:
            raise ValueError(f"CloudWatch Logs accepts only {', '.join(map(str, LOG_RETENTION_DAYS))}")
        return value


class LayerStoragePrices(_Model):
    """EFS storage prices (USD per GB-month) used for layer cost estimates; defaults are us-east-1's."""

    standard: Annotated[float, Field(ge=0)] = 0.30
    infrequent_access: Annotated[float, Field(ge=0)] = 0.016


class ProcessorBuilds(_Model):
    """The CodeBuild project that builds processors registered from source (sourceUrl@tag)."""

    # CodeBuild's Linux sizes: small 3 GB / 2 vCPU, medium 7 GB / 4 vCPU, large 15 GB / 8 vCPU.
    compute_type: Literal["small", "medium", "large"] = "medium"
    timeout_minutes: Annotated[int, Field(ge=5, le=480)] = 60


class GpuCapacity(_Model):
    """GPU instances for computeType gpu processors (``stacks/gpu.py``); off unless enabled.

    An Auto Scaling group of ECS GPU-optimized instances, 0 at rest, grown by ECS managed scaling
    when a gpu task waits, up to ``maxInstances``; the first of ``instanceTypes`` is launched first.
    """

    enabled: bool = False
    instance_types: Annotated[list[str], Field(min_length=1, max_length=10)] = list(
        DEFAULT_GPU_INSTANCE_TYPES
    )
    max_instances: Annotated[int, Field(ge=1, le=100)] = 2
    volume_gib: Annotated[int, Field(ge=30, le=2000)] = 100  # the root volume: GPU images are large

    @field_validator("instance_types")
    @classmethod
    def _known_types(cls, value: list[str]) -> list[str]:
        unknown = [name for name in value if name not in GPU_INSTANCES]
        if unknown:
            raise ValueError(
                f"{', '.join(map(repr, unknown))}: not a GPU instance type pennflow prices; one of {known()}"
            )
        if len(set(value)) != len(value):
            raise ValueError("an instance type is listed twice")
        return value


class NodeSettings(_Model):
    # Never the separator C.NODE_SEPARATOR ("_"), so one node's name prefix can never begin another's.
    node_name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]*$", max_length=C.NODE_NAME_MAX)] = (
        C.DEFAULT_NODE_NAME
    )
    account: Annotated[str | None, Field(pattern=r"^\d{12}$")] = None
    region: Annotated[str | None, Field(pattern=REGION_RE)] = None
    vpc: ExistingVpc | None = None  # None (written "new" in cdk.json): the node creates its own VPC
    max_azs: Annotated[int, Field(ge=2, le=3)] = 2
    # Data sources and targets reach the Pennsieve API over the internet: keep one NAT gateway unless
    # the VPC reaches it another way. With 0, subnets are isolated and only the endpoints are reachable.
    nat_gateways: Literal[0, 1] = 1
    # Interface endpoints keep task traffic off the NAT but cost about $204 a month at rest (14 x 2 AZs);
    # false sends that traffic through the NAT instead (needs natGateways 1).
    interface_endpoints: bool = True
    alarm_email: Annotated[str | None, Field(pattern=EMAIL_RE)] = None
    # Who hears each run's end by e-mail (alarmEmail when unset); notifyWebhook adds a webhook (its URL
    # goes in the secret the stack creates) that receives Slack-compatible JSON.
    notify_email: Annotated[str | None, Field(pattern=EMAIL_RE)] = None
    notify_webhook: bool = False
    retention_days: RetentionDays = RetentionDays()
    workflows_folder: Annotated[str, Field(min_length=1)] = C.DEFAULT_WORKFLOWS_FOLDER
    run_slots: Annotated[int, Field(ge=1, le=C.MAX_RUN_SLOTS)] = 10
    # A FAILED or CANCELED run keeps its slot (files, execution) this many days so that it can be
    # resumed (POST /runs/{id}/resume: Step Functions redrive, possible for 14 days); 0 frees it at once.
    # A run waiting for a slot takes the oldest kept one early (pennflow.node.redrive).
    failed_run_retention_days: Annotated[int, Field(ge=0, le=C.REDRIVE_DAYS)] = 7
    layer_storage_prices: LayerStoragePrices = LayerStoragePrices()
    # Prices for run costs (pennflow.workflow.cost): the region's dated list prices unless set here.
    cost_prices: PriceOverrides = PriceOverrides()
    # USD. monthlyBudget: an AWS Budgets budget on the node's cost-allocation tag, alerting the alarms topic
    # at 80% actual and 100% forecast. runCostCeiling: the API refuses a run whose estimate is above it.
    monthly_budget: Annotated[float | None, Field(gt=0)] = None
    run_cost_ceiling: Annotated[float | None, Field(gt=0)] = None
    processor_builds: ProcessorBuilds = ProcessorBuilds()
    # Interactive notebook sessions (stacks/notebooks.py): off by default, and with it off the node has
    # no notebook resource at all. A session is a Fargate task reached through SSM port forwarding only.
    interactive: bool = False
    # A session stops after this long without activity (jupyter_server's shutdown_no_activity_timeout).
    notebook_idle_minutes: Annotated[int, Field(ge=5, le=7 * 24 * 60)] = 60
    # The IAM roles and users allowed to start and connect to sessions (at least one when interactive).
    notebook_principals: list[Annotated[str, Field(pattern=PRINCIPAL_ARN_RE)]] = []
    # Image of the sessions' Jupyter server (jupyter_server on its PATH), and the Python its kernels run:
    # only python-env layers built for that minor version are offered to a session.
    notebook_image: Annotated[str, Field(pattern=IMAGE_RE, max_length=255)] = (
        "ghcr.io/pennflow/notebook:0.1.0"
    )
    notebook_python: Annotated[str, Field(pattern=r"^3\.\d{1,2}$")] = "3.12"
    gpu: GpuCapacity = GpuCapacity()
    # Image of the built-in data sources/targets and the fan-in helper (processors/builtin).
    builtin_image: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._/:@-]*$", max_length=255)] = (
        "ghcr.io/pennflow/builtin:0.1.0"
    )
    # Image of the built-in layer_build processor (processors/builtin/layer_build): its Python is the
    # Python of every python-env layer the node builds.
    layer_build_image: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._/:@-]*$", max_length=255)] = (
        "ghcr.io/pennflow/layer-build:0.1.0"
    )
    # What processors get as Pennsieve's PENNSIEVE_API_HOST, PENNSIEVE_API_HOST2, ENVIRONMENT and
    # ORGANIZATION_ID (pennflow.workflow.pennsieve_env); the built-ins use the same hosts.
    pennsieve_api_host: Annotated[str, Field(pattern=r"^https?://[^\s]+$")] = "https://api.pennsieve.io"
    pennsieve_api2_host: Annotated[str, Field(pattern=r"^https?://[^\s]+$")] = "https://api2.pennsieve.io"
    pennsieve_environment: Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]*$")] = "prod"
    pennsieve_organization_id: Annotated[str, Field(pattern=r"^(N:organization:[0-9a-f-]+)?$")] = ""
    reserve_concurrency: bool = True  # turn off in accounts whose Lambda concurrency quota is 10
    powertools_layer_arn: Annotated[str | None, Field(pattern=LAYER_ARN_RE)] = None  # default: public layer
    dependency_layer_arns: list[Annotated[str, Field(pattern=LAYER_ARN_RE)]] = []

    @field_validator("vpc", mode="before")
    @classmethod
    def _new_or_existing(cls, value: Any) -> Any:
        if value in ("new", None):
            return None
        if not isinstance(value, dict):
            raise ValueError('expected "new" or an object {vpcId, privateSubnetIds, availabilityZones}')
        return value

    @field_validator("workflows_folder")
    @classmethod
    def _relative_folder(cls, value: str) -> str:
        if value.startswith("/") or ".." in value.split("/"):
            raise ValueError("give a folder inside the project, relative to cdk.json")
        return value

    @model_validator(mode="after")
    def _tasks_can_reach_aws(self) -> NodeSettings:
        if not self.interface_endpoints and self.nat_gateways == 0:
            raise ValueError(
                "interfaceEndpoints false needs natGateways 1: without either, tasks cannot pull images or "
                "write logs"
            )
        return self

    @model_validator(mode="after")
    def _sessions_have_users(self) -> NodeSettings:
        if self.interactive and not self.notebook_principals:
            raise ValueError(
                "interactive true needs notebookPrincipals: the IAM role or user ARNs allowed to use sessions"
            )
        return self

    @property
    def reuses_vpc(self) -> bool:
        return self.vpc is not None


def load_settings(raw: Any) -> NodeSettings:
    """Validate the `pennflow` context value (a dict, a JSON string from `-c`, or None for defaults)."""
    if raw is None:
        raw = {}
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as err:
            raise SettingsError(
                f"{C.CONTEXT_KEY}: not valid JSON ({err.msg} at position {err.pos})"
            ) from None
    if not isinstance(raw, dict):
        raise SettingsError(f"{C.CONTEXT_KEY}: expected an object of settings, got {type(raw).__name__}")
    try:
        return NodeSettings.model_validate(raw)
    except ValidationError as err:
        raise SettingsError("\n".join(_describe(e) for e in err.errors())) from None


def _describe(error: dict[str, Any]) -> str:
    # Validators add their own name to the location (e.g. "function-after[...]"); users never wrote it.
    loc = [str(part) for part in error["loc"] if not re.match(r"^function-\w+\[", str(part))]
    field = ".".join([C.CONTEXT_KEY, *loc])
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown setting"
    shown = error.get("input")
    if error["type"] != "extra_forbidden" and not isinstance(shown, dict | list):
        message += f" (got {shown!r})"
    return f"{field}: {message}"
