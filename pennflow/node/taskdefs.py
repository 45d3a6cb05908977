"""Content-addressed ECS task definitions: one per (processor content, run slot), registered once.

The family is ``<prefix><first 16 hex of sha256(the registration request)>``; the request holds
everything that makes the task what it is (image, cpu, memory, command, layers, the slot's access
point, roles, log group, stream prefix, fan-in sources). The same content therefore always maps
to the same family, and a slot that ran a processor before reuses its task definition: each slot
remembers the families it has (DynamoDB, on the slot item), so a warm start makes no ECS call at
all, and a cold one asks ``DescribeTaskDefinition`` before it ever registers.

``RegisterTaskDefinition`` is throttled account-wide (a burst of 20, then 1 per second): the
registrations a node ever makes are (distinct processor contents) x (slots that ran them), not a
number that grows with runs. Two preparations never register the same family at once, because a
family names one slot's access point and a slot is leased to one run at a time.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pennflow.aws import arns as aws_arns
from pennflow.aws import client as aws_client
from pennflow.aws import error_code
from pennflow.layers.jobs import LAYERS_RW_MOUNT  # where layer versions are written
from pennflow.node.gpu import ec2_registration
from pennflow.node.resume import MIN_CALL_SECONDS, PreparationPaused, TimeBudget
from pennflow.node.slots import Slot, SlotPool
from pennflow.workflow.asl import CONTAINER_NAME
from pennflow.workflow.asl_lambda import is_lambda
from pennflow.workflow.contract import (
    LAYERS_MOUNT,
    RUN_MOUNT,
    RunLayout,
    builds_union,
    env_name,
    layers_python_path,
)
from pennflow.workflow.cost_tags import NODE_TAG
from pennflow.workflow.definition import ComputeType, Processor, ProcessorType, TargetType, Workflow
from pennflow.workflow.pennsieve_env import RUN_VARIABLES, SESSION_TOKEN

FAN_IN_CONTAINER = "fan-in"
FAN_IN_MEMORY_MIB = 128  # the union is hard links: a small soft reservation is plenty
RUN_VOLUME = "run"
LAYERS_VOLUME = "layers"  # the whole /layers tree, read-write: persistent-layer data targets only
BUILTIN_MODULE = "pennflow.node.builtins"
SLOT_TAG = "pennflow:slot"
PROCESSOR_TAG = "pennflow:processor"
HASH_CHARS = 16
RUN_ID_PARAMETER = "run-id"
TOKEN_PARAMETER = "session-token"


@dataclass(frozen=True)
class TaskSettings:
    """The node-wide values every task definition names (from the Lambda settings)."""

    file_system_id: str
    execution_role_arn: str
    # Each run slot has its own task roles, whose IAM policy mounts that slot's access point only:
    # "arn:...:role/<node>_<region>_{slot}-{kind}", kind "processor" or "builtin" (set by the stack).
    slot_role_template: str
    builtin_image: str
    log_group: str
    region: str
    layers_access_point_id: str | None = None
    family_prefix: str = "pf-"
    # Pennsieve's node-wide variables (PENNSIEVE_API_HOST, ..., DEPLOYMENT_MODE) for every processor.
    pennsieve_environment: Mapping[str, str] = field(default_factory=dict)
    # Each slot's run id and SESSION_TOKEN are SSM parameters under this prefix, written at lease
    # (pennflow.node.session_tokens); task definitions name them in ``secrets``.
    slot_parameter_prefix: str | None = None
    session_tokens: bool = False  # the node has Pennsieve credentials to mint tokens from
    node_name: str | None = None  # its pennflow:node cost tag, propagated to every task (cost_tags)

    def slot_parameter(self, slot_id: str, leaf: str) -> str:
        return f"{self.slot_parameter_prefix}{slot_id}/{leaf}"

    def slot_parameter_arn(self, slot_id: str, leaf: str) -> str:
        """The full ARN (a name with '/' needs one); partition and account are the execution role's."""
        role = aws_arns.parse(self.execution_role_arn)
        name = self.slot_parameter(slot_id, leaf).lstrip("/")
        return aws_arns.build("ssm", self.region, role.account, f"parameter/{name}", partition=role.partition)

    # Built-ins only: where their credentials and results live (a secret's ARN, never its value).
    builtin_environment: Mapping[str, str] = field(default_factory=dict)

    def task_role_arn(self, slot_id: str, *, builtin: bool) -> str:
        return self.slot_role_template.format(slot=slot_id, kind="builtin" if builtin else "processor")


class UnknownLayer(ValueError):
    def __init__(self, name: str, processor_id: str):
        super().__init__(
            f"processor {processor_id!r} asks for layer {name!r}, which does not exist on this node"
        )


def registration(
    processor: Processor,
    *,
    slot_id: str,
    access_point_id: str,
    settings: TaskSettings,
    layer_access_points: Mapping[str, str],
    extra_layers: Sequence[str] = (),
) -> dict[str, Any]:
    """The ``RegisterTaskDefinition`` request (without family and tags) for a processor in a slot:
    the slot's access point at /mnt/run and the slot's own task role.

    A processor that gets a token reads ``SESSION_TOKEN`` from its slot's parameter through
    ``secrets``: ECS resolves it when the task starts, so the token is in no override or state.
    """
    layers = list(dict.fromkeys([*extra_layers, *processor.layers]))
    volumes = [_efs_volume(RUN_VOLUME, settings.file_system_id, access_point_id)]
    mounts = [{"sourceVolume": RUN_VOLUME, "containerPath": str(RUN_MOUNT), "readOnly": False}]
    for name in layers:
        access_point = layer_access_points.get(name)
        if not access_point:
            raise UnknownLayer(name, processor.id)
        volume = f"layer-{name}"
        volumes.append(_efs_volume(volume, settings.file_system_id, access_point))
        mounts.append({"sourceVolume": volume, "containerPath": str(LAYERS_MOUNT / name), "readOnly": True})
    if processor.target_type is TargetType.PERSISTENT_LAYER:
        if not settings.layers_access_point_id:
            raise ValueError(
                f"processor {processor.id!r}: a persistent-layer target needs the layers access point"
            )
        volumes.append(_efs_volume(LAYERS_VOLUME, settings.file_system_id, settings.layers_access_point_id))
        # beside /mnt/layers, which stays read-only as the contract says
        mounts.append(
            {"sourceVolume": LAYERS_VOLUME, "containerPath": str(LAYERS_RW_MOUNT), "readOnly": False}
        )

    builtin = processor.is_builtin
    fan_in = builds_union(processor) and processor.scatter is None
    main = {
        "name": CONTAINER_NAME,
        "image": settings.builtin_image if builtin else processor.image or "",
        "essential": True,
        "memoryReservation": processor.memory - (FAN_IN_MEMORY_MIB if fan_in else 0),
        "mountPoints": mounts,
        "environment": _layer_environment(layers),
        "logConfiguration": _logs(settings, processor.id),
    }
    if not main["image"]:
        raise ValueError(
            f"processor {processor.id!r}: no image (resolve its sourceUrl@tag to an image first)"
        )
    main["environment"] += [
        {"name": k, "value": v} for k, v in sorted(settings.pennsieve_environment.items())
    ]
    if slot_id and settings.slot_parameter_prefix:
        main["secrets"] = _slot_secrets(processor, settings, slot_id)
    if builtin:
        main["command"] = builtin_command(processor)
        main["environment"] += [
            {"name": k, "value": v} for k, v in sorted(settings.builtin_environment.items())
        ]
    containers = [main]
    if fan_in:
        containers.insert(0, _fan_in_container(processor, settings))
        main["dependsOn"] = [{"containerName": FAN_IN_CONTAINER, "condition": "SUCCESS"}]
    request = {
        "taskRoleArn": settings.task_role_arn(slot_id, builtin=builtin),
        "executionRoleArn": settings.execution_role_arn,
        "networkMode": "awsvpc",
        "requiresCompatibilities": ["FARGATE"],
        "cpu": str(processor.cpu),
        "memory": str(processor.memory),
        "containerDefinitions": containers,
        "volumes": volumes,
    }
    if processor.compute_type is ComputeType.GPU:  # the same task on the node's GPU instances
        return ec2_registration(request, processor)
    return request


def family(request: Mapping[str, Any], prefix: str) -> str:
    canonical = json.dumps(request, sort_keys=True, separators=(",", ":"))
    return prefix + hashlib.sha256(canonical.encode()).hexdigest()[:HASH_CHARS]


def builtin_command(processor: Processor) -> list[str]:
    """The built-in image's entry point for a data source or target."""
    command = ["python", "-m", BUILTIN_MODULE, processor.type.value]
    if processor.type is ProcessorType.DATA_TARGET and processor.target_type is not None:
        command += ["--target-type", processor.target_type.value]
    return command


def fan_in_command(processor: Processor) -> list[str]:
    layout = RunLayout(RUN_MOUNT)
    sources = [f"{dep}={layout.output_dir(dep)}" for dep in processor.dependencies]
    return ["python", "-m", "pennflow.node.fanin", "--dest", str(layout.union_dir(processor.id)), *sources]


class TaskDefinitions:
    """Describe-or-register, remembering each slot's families on its slot item."""

    def __init__(self, settings: TaskSettings, slots: SlotPool, ecs_client: Any = None):
        self.settings = settings
        self.slots = slots
        self._ecs = ecs_client

    @property
    def ecs(self) -> Any:
        if self._ecs is None:
            self._ecs = aws_client("ecs")
        return self._ecs

    def requests(
        self, workflow: Workflow, slot: Slot, layers: Mapping[str, str], extra_layers: Sequence[str] = ()
    ) -> dict[str, tuple[str, dict[str, Any]]]:
        """processor id -> (family, registration request) for this slot; ``layers``: name -> access point."""
        out = {}
        # A data source is a Distributed Map of download Lambdas (pennflow.workflow.asl), a lambda
        # processor the slot's function (pennflow.node.lambda_functions): no task to define.
        tasks = (
            p for p in workflow.processors if p.type is not ProcessorType.DATA_SOURCE and not is_lambda(p)
        )
        for processor in tasks:
            request = registration(
                processor,
                slot_id=slot.slot_id,
                access_point_id=slot.access_point_id,
                settings=self.settings,
                layer_access_points=layers,
                extra_layers=extra_layers,
            )
            out[processor.id] = (family(request, self.settings.family_prefix), request)
        return out

    def warmth(
        self, workflow: Workflow, layers: Mapping[str, str], extra_layers: Sequence[str] = ()
    ) -> Callable[[Slot], int]:
        """A lease preference: how many of this workflow's task definitions a slot already has."""

        def score(slot: Slot) -> int:
            try:
                families = {fam for fam, _ in self.requests(workflow, slot, layers, extra_layers).values()}
            except ValueError:
                return 0  # the start itself reports the problem
            return len(families & slot.task_definitions.keys())

        return score

    def ensure(
        self,
        workflow: Workflow,
        slot: Slot,
        layers: Mapping[str, str],
        extra_layers: Sequence[str] = (),
        budget: TimeBudget | None = None,
    ) -> dict[str, str]:
        """processor id -> task definition ARN in this slot, registering only what the slot lacks.

        With a ``budget``, raises :class:`PreparationPaused` rather than start a call that would eat
        into its reserve; each family is on the slot item as soon as it is registered, so the next
        invocation goes on from there. A call is always made before pausing: every pass progresses.
        """
        budget = budget or TimeBudget()
        requests = self.requests(workflow, slot, layers, extra_layers)
        known = dict(slot.task_definitions)
        arns: dict[str, str] = {}
        done, cost = 0, MIN_CALL_SECONDS  # cost: the slowest describe-or-register seen in this pass
        for processor_id, (fam, request) in requests.items():
            if fam not in known:
                if done and not budget.allows(cost):
                    raise PreparationPaused(done, len({f for f, _ in requests.values()} - known.keys()))
                before = budget.seconds_left()
                known[fam] = self._describe(fam) or self._register(fam, request, slot, processor_id)
                self.slots.remember_task_definition(slot.slot_id, fam, known[fam])
                if budget.limited:
                    cost = max(cost, before - budget.seconds_left())
                done += 1
            arns[processor_id] = known[fam]
        return arns

    def _describe(self, fam: str) -> str | None:
        try:
            found = self.ecs.describe_task_definition(taskDefinition=fam)["taskDefinition"]
        except Exception as exc:
            if error_code(exc) == "ClientException":  # no such family
                return None
            raise
        return found["taskDefinitionArn"] if found.get("status", "ACTIVE") == "ACTIVE" else None

    def _register(self, fam: str, request: dict[str, Any], slot: Slot, processor_id: str) -> str:
        response = self.ecs.register_task_definition(
            family=fam,
            tags=[
                {"key": SLOT_TAG, "value": slot.slot_id},
                {"key": PROCESSOR_TAG, "value": processor_id},
                *([{"key": NODE_TAG, "value": self.settings.node_name}] if self.settings.node_name else []),
            ],
            **request,
        )
        return response["taskDefinition"]["taskDefinitionArn"]


def _slot_secrets(processor: Processor, settings: TaskSettings, slot_id: str) -> list[dict[str, str]]:
    """The run's Pennsieve names and token, read from the slot's parameters when the task starts."""
    run_id = settings.slot_parameter_arn(slot_id, RUN_ID_PARAMETER)
    secrets = [{"name": name, "valueFrom": run_id} for name in RUN_VARIABLES]
    if settings.session_tokens and processor.gets_token:
        secrets.append(
            {"name": SESSION_TOKEN, "valueFrom": settings.slot_parameter_arn(slot_id, TOKEN_PARAMETER)}
        )
    return secrets


def _efs_volume(name: str, file_system_id: str, access_point_id: str) -> dict[str, Any]:
    return {
        "name": name,
        "efsVolumeConfiguration": {
            "fileSystemId": file_system_id,
            "transitEncryption": "ENABLED",
            "authorizationConfig": {"accessPointId": access_point_id, "iam": "ENABLED"},
        },
    }


def _logs(settings: TaskSettings, stream_prefix: str) -> dict[str, Any]:
    return {
        "logDriver": "awslogs",
        "options": {
            "awslogs-group": settings.log_group,
            "awslogs-region": settings.region,
            "awslogs-stream-prefix": stream_prefix,
        },
    }


def _layer_environment(layers: Sequence[str]) -> list[dict[str, str]]:
    """The contract's layer variables for every layer this task mounts (its own and the run's)."""
    env = [{"name": "LAYERS_DIR", "value": str(LAYERS_MOUNT)}]
    env += [{"name": f"LAYER_{env_name(name)}_DIR", "value": str(LAYERS_MOUNT / name)} for name in layers]
    path = layers_python_path(layers, LAYERS_MOUNT)
    if path:
        env.append({"name": "PYTHONPATH", "value": path})
    return env


def _fan_in_container(processor: Processor, settings: TaskSettings) -> dict[str, Any]:
    return {
        "name": FAN_IN_CONTAINER,
        "image": settings.builtin_image,
        "essential": False,
        "memoryReservation": FAN_IN_MEMORY_MIB,
        "command": fan_in_command(processor),
        "mountPoints": [{"sourceVolume": RUN_VOLUME, "containerPath": str(RUN_MOUNT), "readOnly": False}],
        "logConfiguration": _logs(settings, processor.id),
    }
