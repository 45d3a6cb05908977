"""``computeType: gpu`` on a node: the capacity it runs on, its task definitions, and the refusals.

A gpu processor is an ECS task on the node's GPU capacity provider (``stacks/gpu.py``: an Auto Scaling
group of ECS GPU-optimized instances, 0 at rest, in the same private subnets). Its task definition is
the Fargate one (``taskdefs.registration``: the slot's access point with IAM auth, the slot's task
role, the execution role, the same logs) made EC2-compatible with the GPU count as a resource
requirement; the state machine starts it with the node's capacity-provider strategy
(``$.node.gpuCapacity``) instead of ``LaunchType: FARGATE``.

A node without GPU capacity (``pennflow.gpu.enabled`` off) refuses such a workflow when it is
registered, and so does a node whose instance types cannot hold the processor's GPUs, cpu and memory.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pennflow.workflow.asl_states import CONTAINER_NAME
from pennflow.workflow.definition import ComputeType, Processor, Workflow
from pennflow.workflow.gpu import GPU_SETTING, fit_problem


@dataclass(frozen=True)
class GpuCapacity:
    """The node's GPU capacity provider and the instance types its group launches (from the environment)."""

    capacity_provider: str | None = None
    instance_types: tuple[str, ...] = ()

    @property
    def enabled(self) -> bool:
        return bool(self.capacity_provider)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> GpuCapacity:
        types = tuple(t.strip() for t in environ.get("GPU_INSTANCE_TYPES", "").split(",") if t.strip())
        return cls(environ.get("GPU_CAPACITY_PROVIDER") or None, types)

    def strategy(self) -> list[dict[str, Any]]:
        """RunTask's ``CapacityProviderStrategy``: every gpu task on the GPU group."""
        return [{"CapacityProvider": self.capacity_provider, "Weight": 1, "Base": 0}]


def gpu_processors(workflow: Workflow) -> list[Processor]:
    return [p for p in workflow.processors if p.compute_type is ComputeType.GPU]


def registration_problems(workflow: Workflow, capacity: GpuCapacity) -> dict[str, str]:
    """processor id -> why this node cannot run it on a GPU (empty when it can, or none asks for one)."""
    problems: dict[str, str] = {}
    for processor in gpu_processors(workflow):
        if not capacity.enabled:
            problems[processor.id] = (
                f"computeType gpu needs GPU capacity on this node: set {GPU_SETTING} true in cdk.json "
                "and deploy the node again"
            )
            continue
        why = fit_problem(
            processor.id,
            gpus=processor.gpu_count,
            cpu=processor.cpu,
            memory=processor.memory,
            instance_types=capacity.instance_types,
        )
        if why:
            problems[processor.id] = why
    return problems


def ec2_registration(request: dict[str, Any], processor: Processor) -> dict[str, Any]:
    """The Fargate registration request of ``taskdefs.registration`` made into a GPU one: EC2
    compatibility (awsvpc stays: the task's own ENI in the private subnets, the task security group)
    and the processor's GPUs reserved for its container. Volumes, roles and logs are unchanged."""
    containers = [dict(c) for c in request["containerDefinitions"]]
    for container in containers:
        if container["name"] == CONTAINER_NAME:
            container["resourceRequirements"] = [{"type": "GPU", "value": str(processor.gpu_count)}]
    return {**request, "requiresCompatibilities": ["EC2"], "containerDefinitions": containers}
