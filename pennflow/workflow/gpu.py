"""GPU instances a node may run ``computeType: gpu`` processors on: sizes, list prices, and the fit check.

A gpu processor is an ECS task on the node's GPU capacity provider (an Auto Scaling group of EC2 GPU
instances, scaled to zero at rest, ``stacks/gpu.py``). The node's settings (cdk.json
``pennflow.gpu.instanceTypes``) name instance types from this table only, so that registration can
refuse a processor no instance can hold and a run's cost can price the instance time.

Prices: on-demand Linux, us-east-1, as the EC2 on-demand pricing page
(https://aws.amazon.com/ec2/pricing/on-demand/) listed them on ``GPU_PRICES_AS_OF``; re-read them
there before relying on a figure. EC2 bills per second with a one-minute minimum. Another region
falls back to these and the cost says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

GPU_PRICES_AS_OF = "2025-01-01"
GPU_PRICES_REGION = "us-east-1"
GPU_PRICE_SOURCE = "https://aws.amazon.com/ec2/pricing/on-demand/"
# What the ECS agent, the Docker daemon and the OS keep of an instance's memory; a task asks for the rest.
ECS_RESERVED_MEMORY_MIB = 1024
EC2_MINIMUM_SECONDS = 60
GPU_SETTING = "pennflow.gpu.enabled"


@dataclass(frozen=True)
class GpuInstance:
    name: str
    vcpus: int
    memory_gib: int
    gpus: int
    gpu_model: str
    usd_per_hour: float  # on demand, Linux, GPU_PRICES_REGION

    @property
    def task_memory_mib(self) -> int:
        return self.memory_gib * 1024 - ECS_RESERVED_MEMORY_MIB

    @property
    def task_cpu_units(self) -> int:
        return self.vcpus * 1024


GPU_INSTANCES: dict[str, GpuInstance] = {
    i.name: i
    for i in (
        GpuInstance("g4dn.xlarge", 4, 16, 1, "NVIDIA T4", 0.526),
        GpuInstance("g4dn.2xlarge", 8, 32, 1, "NVIDIA T4", 0.752),
        GpuInstance("g4dn.4xlarge", 16, 64, 1, "NVIDIA T4", 1.204),
        GpuInstance("g4dn.8xlarge", 32, 128, 1, "NVIDIA T4", 2.176),
        GpuInstance("g4dn.12xlarge", 48, 192, 4, "NVIDIA T4", 3.912),
        GpuInstance("g5.xlarge", 4, 16, 1, "NVIDIA A10G", 1.006),
        GpuInstance("g5.2xlarge", 8, 32, 1, "NVIDIA A10G", 1.212),
        GpuInstance("g5.4xlarge", 16, 64, 1, "NVIDIA A10G", 1.624),
        GpuInstance("g5.12xlarge", 48, 192, 4, "NVIDIA A10G", 5.672),
        GpuInstance("g6.xlarge", 4, 16, 1, "NVIDIA L4", 0.8048),
        GpuInstance("g6.2xlarge", 8, 32, 1, "NVIDIA L4", 0.9776),
        GpuInstance("g6.12xlarge", 48, 192, 4, "NVIDIA L4", 4.6016),
        GpuInstance("p3.2xlarge", 8, 61, 1, "NVIDIA V100", 3.06),
        GpuInstance("p3.8xlarge", 32, 244, 4, "NVIDIA V100", 12.24),
    )
}
DEFAULT_GPU_INSTANCE_TYPES = ("g4dn.xlarge",)


def instance(name: str) -> GpuInstance:
    try:
        return GPU_INSTANCES[name]
    except KeyError:
        raise ValueError(f"{name!r} is not a GPU instance type pennflow knows: one of {known()}") from None


def known() -> str:
    return ", ".join(GPU_INSTANCES)


def fit_problem(
    processor_id: str, *, gpus: int, cpu: int, memory: int, instance_types: Sequence[str]
) -> str | None:
    """Why no instance of ``instance_types`` can hold the task (None when one can): ECS would leave it
    PROVISIONING for ever, so registration refuses it instead."""
    types = [GPU_INSTANCES[name] for name in instance_types if name in GPU_INSTANCES]
    if any(gpus <= t.gpus and cpu <= t.task_cpu_units and memory <= t.task_memory_mib for t in types):
        return None
    largest = ", ".join(
        f"{t.name} ({t.gpus} GPU, {t.task_cpu_units} cpu, {t.task_memory_mib} MiB for tasks)" for t in types
    )
    return (
        f"processor {processor_id!r} asks for {gpus} GPU, {cpu} cpu and {memory} MiB, more than any of the "
        f"node's GPU instance types holds: {largest or 'none'}; set pennflow.gpu.instanceTypes in cdk.json "
        "or ask for less"
    )


def task_share(instance_type: GpuInstance, *, gpus: int, cpu: int, memory: int) -> float:
    """The part of an instance a task takes (its largest fraction of GPUs, vCPUs or memory): what it is
    charged of the instance's time. A one-GPU task on a one-GPU instance takes all of it."""
    return min(
        1.0,
        max(
            gpus / instance_type.gpus,
            cpu / instance_type.task_cpu_units,
            memory / instance_type.task_memory_mib,
        ),
    )


def billed_seconds(seconds: float) -> int:
    return max(EC2_MINIMUM_SECONDS, int(-(-max(seconds, 0.0) // 1)))
