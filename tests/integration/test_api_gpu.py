"""computeType gpu through the API: refused at registration by a node without GPU capacity (naming the
setting) or whose instances are too small; registered and compiled onto the capacity provider otherwise."""

from __future__ import annotations

import json

import boto3
import pytest

from tests.integration import api_support
from tests.integration.api_support import Api, tiny
from tests.integration.aws_fixtures import REGION

api = api_support.api
mocked_aws = api_support.mocked_aws


def gpu_tiny(**changes):
    return tiny("gpu-tiny", computeType="gpu", **changes)


def test_a_node_without_gpu_capacity_refuses_a_gpu_workflow_naming_the_setting(api: Api) -> None:
    reply = api("POST", "/workflows", body=gpu_tiny())

    assert reply.status == 422, reply.body
    assert reply.error["code"] == "no_gpu_capacity"
    assert "set pennflow.gpu.enabled true in cdk.json" in reply.error["message"]
    assert ("body", "processors.work.computeType") in reply.fields()
    machines = boto3.client("stepfunctions", region_name=REGION).list_state_machines()["stateMachines"]
    assert not [m for m in machines if m["name"].endswith("gpu-tiny")]  # nothing was deployed


def test_a_gpu_workflow_too_big_for_the_nodes_instances_is_refused(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GPU_CAPACITY_PROVIDER", "pennflow-gpu")
    monkeypatch.setenv("GPU_INSTANCE_TYPES", "g4dn.xlarge")

    reply = api("POST", "/workflows", body=gpu_tiny(gpus=2))

    assert reply.status == 422, reply.body
    assert "asks for 2 GPU" in reply.error["message"]
    assert "g4dn.xlarge (1 GPU, 4096 cpu, 15360 MiB for tasks)" in reply.error["message"]
    assert "pennflow.gpu.instanceTypes" in reply.error["message"]


def test_a_node_with_gpu_capacity_registers_it_onto_the_capacity_provider(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GPU_CAPACITY_PROVIDER", "pennflow-gpu")
    monkeypatch.setenv("GPU_INSTANCE_TYPES", "g4dn.xlarge,g4dn.12xlarge")

    reply = api("POST", "/workflows", body=gpu_tiny(gpus=4, cpu=8192, memory=32768))

    assert reply.status == 201, reply.body
    machine = boto3.client("stepfunctions", region_name=REGION).describe_state_machine(
        stateMachineArn=reply.body["stateMachineArn"]
    )
    work = _task(json.loads(machine["definition"]), "work")
    assert work["Parameters"]["CapacityProviderStrategy.$"] == "$.node.gpuCapacity"
    assert "LaunchType" not in work["Parameters"]


def _task(definition: dict, name: str) -> dict:
    """The state named ``name`` anywhere in the machine (inside Parallel branches too)."""
    stack = [definition]
    while stack:
        states = stack.pop().get("States", {})
        if name in states:
            return states[name]
        for state in states.values():
            stack += state.get("Branches", [])
            if "ItemProcessor" in state:
                stack.append(state["ItemProcessor"])
    raise KeyError(name)
