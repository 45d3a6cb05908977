"""A run with a computeType gpu processor prepared on moto: its task definition is the Fargate one made
EC2-compatible with the GPU count reserved (same access point, roles, logs), and the execution input
names the node's GPU capacity provider, which the compiled state starts the task with."""

from __future__ import annotations

import dataclasses
import json

import boto3
import pytest

from pennflow.node.lifecycle import prepare_run
from pennflow.workflow import asl
from tests.integration import aws_fixtures
from tests.integration.aws_fixtures import REGION, MotoNode, workflow_from

mocked_aws = aws_fixtures.mocked_aws
moto_node = aws_fixtures.moto_node

GPU_WORKFLOW = """
    name: segment
    processors:
      - {id: prep, image: "ghcr.io/x/prep:1"}
      - {id: infer, image: "ghcr.io/x/infer:1", computeType: gpu, gpus: 2, cpu: 8192, memory: 30720,
         dependsOn: [prep]}
"""


def _prepared(moto_node: MotoNode, provider: str | None) -> tuple[dict, dict]:
    moto_node.node.config = dataclasses.replace(moto_node.node.config, gpu_capacity_provider=provider)
    workflow = workflow_from(GPU_WORKFLOW)
    moto_node.register(workflow)
    run = moto_node.create_run(workflow)
    prepare_run(run.run_id, moto_node.node)
    record = moto_node.store.get_run(run.run_id)
    execution = boto3.client("stepfunctions", region_name=REGION).describe_execution(
        executionArn=record.execution_arn
    )
    payload = json.loads(execution["input"])
    ecs = boto3.client("ecs", region_name=REGION)
    tasks = {
        key: ecs.describe_task_definition(taskDefinition=arn)["taskDefinition"]
        for key, arn in payload["run"]["taskDefinitions"].items()
    }
    return payload, tasks


def test_a_gpu_processor_gets_an_ec2_task_definition_with_its_gpus_and_the_slots_isolation(
    moto_node: MotoNode,
) -> None:
    payload, tasks = _prepared(moto_node, "pennflow-gpu")
    gpu, plain = tasks["infer"], tasks["prep"]

    assert gpu["requiresCompatibilities"] == ["EC2"] and gpu["networkMode"] == "awsvpc"
    assert plain["requiresCompatibilities"] == ["FARGATE"]
    main = next(c for c in gpu["containerDefinitions"] if c["name"] == asl.CONTAINER_NAME)
    assert main["resourceRequirements"] == [{"type": "GPU", "value": "2"}]
    assert (gpu["cpu"], gpu["memory"]) == ("8192", "30720")
    # The same run folder (the slot's access point, IAM auth), task role, execution role and logs as Fargate.
    for key in ("volumes", "taskRoleArn", "executionRoleArn"):
        assert gpu[key] == plain[key], key
    assert gpu["volumes"][0]["efsVolumeConfiguration"]["authorizationConfig"] == {
        "accessPointId": moto_node.slot_access_points["slot-00"],
        "iam": "ENABLED",
    }
    assert main["logConfiguration"]["options"]["awslogs-stream-prefix"] == "infer"
    assert payload["node"]["gpuCapacity"] == [{"CapacityProvider": "pennflow-gpu", "Weight": 1, "Base": 0}]


def test_the_compiled_gpu_state_starts_on_the_capacity_provider_and_others_on_fargate() -> None:
    machine = asl.compile_workflow(workflow_from(GPU_WORKFLOW))
    text = json.dumps(machine)
    states = {}
    for match in ("prep", "infer"):
        states[match] = _state(machine, match)
    assert states["infer"]["Parameters"]["CapacityProviderStrategy.$"] == "$.node.gpuCapacity"
    assert "LaunchType" not in states["infer"]["Parameters"]
    assert states["prep"]["Parameters"]["LaunchType"] == "FARGATE"
    assert text.count("CapacityProviderStrategy") == 1


def test_a_node_without_gpu_capacity_cannot_start_a_gpu_run() -> None:
    workflow = workflow_from(GPU_WORKFLOW)
    node = {"cluster": "c", "subnets": [], "securityGroups": [], "finalizeFunction": "f"}
    with pytest.raises(ValueError, match="node settings missing: gpuCapacity"):
        asl.execution_input(
            workflow, run_id="r", task_definitions={"prep": "a", "infer": "b"}, params={}, node=node
        )


def _state(definition: dict, name: str) -> dict:
    stack = [definition]
    while stack:
        states = stack.pop().get("States", {})
        if name in states:
            return states[name]
        for state in states.values():
            stack += state.get("Branches", [])
    raise KeyError(name)
