"""What a run costs on a compute node: the itemised formula and the list prices it uses.

Pure arithmetic on usage (task seconds, Lambda invocations, state transitions, bytes): the node
gathers the usage from AWS when a run ends (``pennflow.node.run_cost``), the local engine from
its processes' settings (an estimate). Every line names its quantity, unit and unit price so a
person can check it against the bill; Cost Explorer confirms it through the cost-allocation tags.

The formula (AWS list prices, on demand, no free tier, no Savings Plans):
- Fargate: per task, billed seconds = max(60, ceil(seconds)) (per-second billing with a one-minute
  minimum); vCPU-hours x vCPU price + GB-hours x GB price, for the task's architecture.
- Lambda: GB-seconds (memory x measured duration) x GB-second price, plus requests x request price.
- Step Functions (standard): state transitions x transition price, child executions included.
- NAT gateway: GB processed (the data source's downloads) x processing price.
- EFS: GB-months (bytes kept x the run's lifetime, prorated over a 730-hour month) x storage price.
- GPU instances (``computeType: gpu``): per task, billed seconds = max(60, ceil(seconds)) x the
  task's share of the instance (its largest fraction of the instance's GPUs, vCPUs or memory,
  ``workflow.gpu.task_share``) x the instance type's on-demand hourly list price
  (``workflow.gpu.GPU_INSTANCES``, us-east-1's); the type is the first of the node's
  ``pennflow.gpu.instanceTypes`` (the one its group launches first). Not counted: the instance's
  start before the task and its idle minutes before it scales in (about 15; ECS managed scaling).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from pennflow.workflow.dag import Dag, Parallel, Series, decompose
from pennflow.workflow.definition import ProcessorType, Workflow, runs_on_lambda
from pennflow.workflow.gpu import (
    DEFAULT_GPU_INSTANCE_TYPES,
    GPU_INSTANCES,
    GPU_PRICE_SOURCE,
    GPU_PRICES_AS_OF,
    GPU_PRICES_REGION,
    task_share,
)
from pennflow.workflow.gpu import billed_seconds as ec2_billed_seconds

PRICES_AS_OF = "2026-03-01"
PRICE_SOURCES = {
    "fargate": "https://aws.amazon.com/fargate/pricing/",
    "lambda": "https://aws.amazon.com/lambda/pricing/",
    "stepFunctions": "https://aws.amazon.com/step-functions/pricing/",
    "nat": "https://aws.amazon.com/vpc/pricing/",
    "efs": "https://aws.amazon.com/efs/pricing/",
    "gpuInstances": GPU_PRICE_SOURCE,
}
FARGATE_MINIMUM_SECONDS = 60
HOURS_PER_MONTH = 730  # AWS's own month for GB-month prorating
GIB = 1024**3
DEFAULT_REGION = "us-east-1"


class Architecture(StrEnum):
    X86_64 = "x86_64"
    ARM64 = "arm64"


class Prices(BaseModel):
    """List prices in USD for one region (on demand, Linux)."""

    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True)

    fargate_vcpu_hour_x86: float = Field(ge=0)
    fargate_gb_hour_x86: float = Field(ge=0)
    fargate_vcpu_hour_arm: float = Field(ge=0)
    fargate_gb_hour_arm: float = Field(ge=0)
    lambda_gb_second_arm: float = Field(ge=0)
    lambda_gb_second_x86: float = Field(ge=0)
    lambda_million_requests: float = Field(ge=0)
    state_transitions_thousand: float = Field(ge=0)
    nat_gb_processed: float = Field(ge=0)
    efs_gb_month: float = Field(ge=0)


class PriceOverrides(BaseModel):
    """The cdk.json ``costPrices`` object: any subset of :class:`Prices` for the node's region."""

    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True)

    fargate_vcpu_hour_x86: float | None = Field(None, ge=0)
    fargate_gb_hour_x86: float | None = Field(None, ge=0)
    fargate_vcpu_hour_arm: float | None = Field(None, ge=0)
    fargate_gb_hour_arm: float | None = Field(None, ge=0)
    lambda_gb_second_arm: float | None = Field(None, ge=0)
    lambda_gb_second_x86: float | None = Field(None, ge=0)
    lambda_million_requests: float | None = Field(None, ge=0)
    state_transitions_thousand: float | None = Field(None, ge=0)
    nat_gb_processed: float | None = Field(None, ge=0)
    efs_gb_month: float | None = Field(None, ge=0)


_US = Prices(
    fargate_vcpu_hour_x86=0.04048,
    fargate_gb_hour_x86=0.004445,
    fargate_vcpu_hour_arm=0.03238,
    fargate_gb_hour_arm=0.00356,
    lambda_gb_second_arm=0.0000133334,
    lambda_gb_second_x86=0.0000166667,
    lambda_million_requests=0.20,
    state_transitions_thousand=0.025,
    nat_gb_processed=0.045,
    efs_gb_month=0.30,
)
# Regions whose list prices match us-east-1's on every line above (the pricing pages of PRICE_SOURCES,
# read on PRICES_AS_OF). Any other region falls back to us-east-1's and says so: set costPrices.
LIST_PRICES: dict[str, Prices] = {
    "us-east-1": _US,
    "us-east-2": _US,
    "us-west-2": _US,
}


@dataclass(frozen=True)
class PriceTable:
    region: str
    prices: Prices
    listed: bool  # False: the region is not in LIST_PRICES and us-east-1's prices stand in
    overridden: tuple[str, ...] = ()


def price_table(
    region: str | None, overrides: PriceOverrides | Mapping[str, float] | None = None
) -> PriceTable:
    """The region's list prices with the node's overrides applied on top."""
    region = region or DEFAULT_REGION
    base = LIST_PRICES.get(region)
    listed = base is not None
    prices = base or LIST_PRICES[DEFAULT_REGION]
    if overrides is None:
        return PriceTable(region, prices, listed)
    if not isinstance(overrides, PriceOverrides):
        overrides = PriceOverrides.model_validate(dict(overrides))
    changed = overrides.model_dump(exclude_none=True)
    return PriceTable(region, prices.model_copy(update=changed), listed, tuple(sorted(changed)))


# ------------------------------------------------------------------ usage


@dataclass(frozen=True)
class TaskUsage:
    """One ECS task (an attempt, or a scatter batch) as Fargate bills it."""

    processor_id: str
    cpu_units: int  # 1024 = 1 vCPU
    memory_mib: int
    seconds: float
    architecture: Architecture = Architecture.X86_64
    gpus: int = 0  # a computeType gpu task: on an EC2 GPU instance, not Fargate
    instance_type: str = DEFAULT_GPU_INSTANCE_TYPES[0]

    @property
    def billed_seconds(self) -> int:
        return ec2_billed_seconds(self.seconds) if self.gpus else fargate_billed_seconds(self.seconds)


@dataclass(frozen=True)
class LambdaUsage:
    function: str
    invocations: int
    memory_mb: int
    seconds: float  # the invocations' summed duration (0 when only requests are counted)
    architecture: Architecture = Architecture.ARM64


# A computeType lambda processor's function (pennflow.node.lambda_functions), billed as
# "processor:<id>" at the processor's memory: its image is built on the build's x86_64 image and the
# function is made with Lambda's default architecture, x86_64.
PROCESSOR_FUNCTION = "processor:"
PROCESSOR_FUNCTION_ARCHITECTURE = Architecture.X86_64


def processor_function_usage(
    processor_id: str, invocations: int, memory_mb: int, seconds: float
) -> LambdaUsage:
    """A lambda processor's invocations, measured (the node's histories) or estimated (a definition)."""
    return LambdaUsage(
        PROCESSOR_FUNCTION + processor_id, invocations, memory_mb, seconds, PROCESSOR_FUNCTION_ARCHITECTURE
    )


@dataclass(frozen=True)
class RunUsage:
    tasks: list[TaskUsage] = field(default_factory=list)
    lambdas: list[LambdaUsage] = field(default_factory=list)
    state_transitions: int = 0
    nat_bytes: int = 0
    efs_bytes: int = 0
    efs_seconds: float = 0.0  # how long efs_bytes stayed on the file system


def fargate_billed_seconds(seconds: float) -> int:
    return max(FARGATE_MINIMUM_SECONDS, math.ceil(max(seconds, 0.0)))


# ------------------------------------------------------------------ cost


class CostLine(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    item: str  # fargate-vcpu | fargate-memory | lambda-duration | lambda-requests | ...
    description: str
    quantity: float
    unit: str
    unit_price: float
    usd: float
    processor_id: str | None = None


class RunCost(BaseModel):
    """An itemised cost; ``estimate`` when computed from settings rather than measured usage."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    currency: str = "USD"
    region: str
    prices_as_of: str = PRICES_AS_OF
    list_prices: bool = True
    overridden: list[str] = Field(default_factory=list)
    estimate: bool = False
    lines: list[CostLine] = Field(default_factory=list)
    total_usd: float = 0.0
    notes: list[str] = Field(default_factory=list)  # what the figure leaves out or had to assume

    def by_processor(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        for line in self.lines:
            if line.processor_id is not None:
                totals[line.processor_id] = totals.get(line.processor_id, 0.0) + line.usd
        return totals

    def by_item(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        for line in self.lines:
            totals[line.item] = totals.get(line.item, 0.0) + line.usd
        return totals


def run_cost(
    usage: RunUsage, table: PriceTable, *, estimate: bool = False, notes: Iterable[str] = ()
) -> RunCost:
    p = table.prices
    lines: list[CostLine] = []
    for processor_id, tasks in _by_processor(usage.tasks).items():
        lines += _fargate_lines(processor_id, [t for t in tasks if not t.gpus], p)
        lines += _gpu_lines(processor_id, [t for t in tasks if t.gpus])
    for fn in usage.lambdas:
        # a lambda processor's lines are its own, as its Fargate tasks' would be
        owner = (
            fn.function.removeprefix(PROCESSOR_FUNCTION)
            if fn.function.startswith(PROCESSOR_FUNCTION)
            else None
        )
        gb_price = p.lambda_gb_second_arm if fn.architecture is Architecture.ARM64 else p.lambda_gb_second_x86
        if fn.seconds > 0:
            gb_seconds = fn.memory_mb / 1024 * fn.seconds
            lines.append(
                _line(
                    "lambda-duration",
                    f"{fn.function}: {fn.memory_mb} MB x {fn.seconds:.3f} s",
                    gb_seconds,
                    "GB-second",
                    gb_price,
                    owner,
                )
            )
        if fn.invocations:
            lines.append(
                _line(
                    "lambda-requests",
                    f"{fn.function}: {fn.invocations} invocations",
                    fn.invocations / 1e6,
                    "million requests",
                    p.lambda_million_requests,
                    owner,
                )
            )
    if usage.state_transitions:
        lines.append(
            _line(
                "state-transitions",
                f"{usage.state_transitions} state transitions",
                usage.state_transitions / 1000,
                "thousand transitions",
                p.state_transitions_thousand,
            )
        )
    if usage.nat_bytes:
        lines.append(
            _line(
                "nat-processed",
                "data source downloads through the NAT gateway",
                usage.nat_bytes / GIB,
                "GB",
                p.nat_gb_processed,
            )
        )
    if usage.efs_bytes and usage.efs_seconds > 0:
        gb_months = usage.efs_bytes / GIB * usage.efs_seconds / 3600 / HOURS_PER_MONTH
        lines.append(
            _line(
                "efs-storage",
                f"run files on EFS for {usage.efs_seconds / 3600:.2f} h",
                gb_months,
                "GB-month",
                p.efs_gb_month,
            )
        )
    return RunCost(
        region=table.region,
        list_prices=table.listed,
        overridden=list(table.overridden),
        estimate=estimate,
        lines=lines,
        total_usd=round(sum(line.usd for line in lines), 9),
        notes=[
            *notes,
            *([] if table.listed else [f"no list prices for {table.region}: {DEFAULT_REGION}'s used"]),
            *_gpu_notes(usage.tasks, table.region),
        ],
    )


def _by_processor(tasks: Iterable[TaskUsage]) -> dict[str, list[TaskUsage]]:
    grouped: dict[str, list[TaskUsage]] = {}
    for task in tasks:
        grouped.setdefault(task.processor_id, []).append(task)
    return grouped


def _fargate_lines(processor_id: str, tasks: list[TaskUsage], p: Prices) -> list[CostLine]:
    lines = []
    for arch in Architecture:
        same = [t for t in tasks if t.architecture is arch]
        if not same:
            continue
        arm = arch is Architecture.ARM64
        vcpu_hours = sum(t.cpu_units / 1024 * t.billed_seconds for t in same) / 3600
        gb_hours = sum(t.memory_mib / 1024 * t.billed_seconds for t in same) / 3600
        billed = sum(t.billed_seconds for t in same)
        what = f"{len(same)} task(s), {billed} billed s, {arch.value}"
        lines.append(
            _line(
                "fargate-vcpu",
                what,
                vcpu_hours,
                "vCPU-hour",
                p.fargate_vcpu_hour_arm if arm else p.fargate_vcpu_hour_x86,
                processor_id,
            )
        )
        lines.append(
            _line(
                "fargate-memory",
                what,
                gb_hours,
                "GB-hour",
                p.fargate_gb_hour_arm if arm else p.fargate_gb_hour_x86,
                processor_id,
            )
        )
    return lines


def _gpu_lines(processor_id: str, tasks: list[TaskUsage]) -> list[CostLine]:
    lines = []
    for name in dict.fromkeys(t.instance_type for t in tasks):
        kind = GPU_INSTANCES[name]
        same = [t for t in tasks if t.instance_type == name]
        hours = sum(
            t.billed_seconds * task_share(kind, gpus=t.gpus, cpu=t.cpu_units, memory=t.memory_mib)
            for t in same
        )
        billed = sum(t.billed_seconds for t in same)
        what = f"{len(same)} task(s), {billed} billed s on {name} ({kind.gpus} x {kind.gpu_model})"
        lines.append(
            _line("gpu-instance", what, hours / 3600, "instance-hour", kind.usd_per_hour, processor_id)
        )
    return lines


def _gpu_notes(tasks: Iterable[TaskUsage], region: str) -> list[str]:
    if not any(t.gpus for t in tasks):
        return []
    notes = [
        f"GPU instances at {GPU_PRICES_REGION} on-demand list prices of {GPU_PRICES_AS_OF}; the instance's start "
        "and its idle minutes before it scales in are not counted"
    ]
    if region != GPU_PRICES_REGION:
        notes.append(f"no GPU instance prices for {region}: {GPU_PRICES_REGION}'s used")
    return notes


def _line(
    item: str,
    description: str,
    quantity: float,
    unit: str,
    unit_price: float,
    processor_id: str | None = None,
) -> CostLine:
    return CostLine(
        item=item,
        description=description,
        quantity=round(quantity, 9),
        unit=unit,
        unit_price=unit_price,
        usd=round(quantity * unit_price, 9),
        processor_id=processor_id,
    )


def format_usd(amount: float) -> str:
    """Cents for ordinary amounts, more digits for the fractions of a cent small runs cost."""
    if amount == 0:
        return "$0.00"
    if abs(amount) < 0.01:
        return f"${amount:.5f}"
    if abs(amount) < 1:
        return f"${amount:.4f}"
    return f"${amount:,.2f}"


# ------------------------------------------------------------------ estimates from a definition

# The node's Lambda functions (stacks/constants.py): python3.12 on arm64.
DOWNLOAD_FUNCTION_MB = 1024
LIFECYCLE_FUNCTION_MB = 512


def estimate_workflow(
    workflow: Workflow,
    table: PriceTable,
    *,
    seconds: Mapping[str, Iterable[float]] | None = None,
    dataset_bytes: int = 0,
    gpu_instance_type: str = DEFAULT_GPU_INSTANCE_TYPES[0],
) -> RunCost:
    """What the run would cost on a node: each processor's Fargate tasks at its cpu/memory (a processor
    that runs as a Lambda function: its invocations, GB-seconds at its memory and requests), and the
    data source's bytes through the NAT and kept on EFS for the run's span.

    With ``seconds`` (processor id -> each attempt's or batch's duration, as measured locally) the
    durations are those; without, each processor runs to its timeout on every attempt its retry
    policy allows: the most the run can cost, the figure a per-run ceiling is checked against.
    """
    tasks: list[TaskUsage] = []
    lambdas = [LambdaUsage("finalize", 1, LIFECYCLE_FUNCTION_MB, 0.0)]
    span = 0.0
    for processor in workflow.processors:
        if processor.type is ProcessorType.DATA_SOURCE:
            continue
        if seconds is not None:
            durations = list(seconds.get(processor.id, ()))
        else:
            attempts = 1 + (processor.retry.max_attempts if processor.retry else 0)
            durations = [float(processor.timeout_seconds)] * attempts
        span += sum(durations)
        if runs_on_lambda(processor):
            lambdas.append(
                processor_function_usage(processor.id, len(durations), processor.memory, sum(durations))
            )
            continue
        tasks += [
            TaskUsage(
                processor.id,
                processor.cpu,
                processor.memory,
                s,
                gpus=processor.gpu_count,
                instance_type=gpu_instance_type,
            )
            for s in durations
        ]
    has_source = any(p.type is ProcessorType.DATA_SOURCE for p in workflow.processors)
    usage = RunUsage(
        tasks=tasks,
        lambdas=lambdas,
        state_transitions=estimated_transitions(workflow),
        nat_bytes=dataset_bytes if has_source else 0,
        efs_bytes=dataset_bytes,
        efs_seconds=span,
    )
    return run_cost(usage, table, estimate=True)


def estimated_transitions(workflow: Workflow) -> int:
    """States a run enters when nothing retries: the wrapper, finalize and succeed states, one
    per processor task (two for a data source: its map and its verify), plus one per Parallel."""

    def parallels(plan: object) -> int:
        if isinstance(plan, Parallel):
            return 1 + sum(parallels(branch) for branch in plan.branches)
        if isinstance(plan, Series):
            return sum(parallels(part) for part in plan.parts)
        return 0

    plan = decompose(Dag.from_workflow(workflow)).plan
    per_processor = sum(
        2 if p.type is ProcessorType.DATA_SOURCE or p.scatter else 1 for p in workflow.processors
    )
    return 3 + per_processor + parallels(plan)


# ------------------------------------------------------------------ text


ITEM_NAMES = {
    "fargate-vcpu": "Fargate vCPU",
    "fargate-memory": "Fargate memory",
    "lambda-duration": "Lambda duration",
    "lambda-requests": "Lambda requests",
    "state-transitions": "Step Functions",
    "nat-processed": "NAT gateway",
    "efs-storage": "EFS storage",
    "gpu-instance": "GPU instances",
}


def summary_lines(cost: Mapping[str, object] | RunCost | None, *, indent: str = "  ") -> list[str]:
    """The cost as a person reads it in a terminal: the total, then each kind of charge."""
    if cost is None:
        return []
    parsed = cost if isinstance(cost, RunCost) else RunCost.model_validate(cost)
    label = "estimated cost on a node" if parsed.estimate else "cost"
    prices = f"{parsed.region} list prices of {parsed.prices_as_of}"
    if parsed.overridden:
        prices += f", {len(parsed.overridden)} overridden"
    lines = [f"{label}: {format_usd(parsed.total_usd)} ({prices})"]
    parts = [f"{ITEM_NAMES.get(item, item)} {format_usd(usd)}" for item, usd in parsed.by_item().items()]
    if parts:
        lines.append(indent + ", ".join(parts))
    lines += [indent + note for note in parsed.notes]
    return lines
