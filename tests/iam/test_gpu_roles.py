"""computeType gpu with the roles as synthesized, on a node with GPU capacity: the API registers the
workflow, prepare registers the EC2 task definition (GPUs, the slot's roles and access point) and
starts the run, and the state machine's role may start every state, the gpu one on the capacity
provider. A node without GPU capacity refuses the workflow at registration, with no AWS call."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from aws_cdk.assertions import Template

from stacks.entrypoint import create_app
from tests.iam.conftest import ACTIONS, CHECKED
from tests.iam.lifecycle import call_api, tiny
from tests.iam.moto_node import PENNSIEVE_SECRET, IamNode, build_node, executions_of_versions
from tests.iam.template import ACCOUNT, REGION, NodeTemplate
from tests.iam.test_state_machine_roles import check_machine, role_id_of, started_execution

pytest_plugins = ["tests.fakes.pennsieve_fixtures"]
pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")

GPU_SETTINGS = {"enabled": True, "instanceTypes": ["g4dn.xlarge", "g4dn.12xlarge"], "maxInstances": 2}


def gpu_tiny() -> dict[str, Any]:
    definition = tiny("gpu-tiny")
    definition["processors"][1].update(computeType="gpu", gpus=2, cpu=8192, memory=32768)
    return definition


@pytest.fixture(scope="module")
def gpu_synthesized(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    app, stack = create_app(
        context={"pennflow": {"account": ACCOUNT, "region": REGION, "gpu": GPU_SETTINGS}},
        outdir=str(tmp_path_factory.mktemp("cdk-out-iam-gpu")),
        with_nag=False,
    )
    app.synth()
    return json.loads(json.dumps(Template.from_stack(stack).to_json()))


@pytest.fixture
def gpu_node(
    pennsieve_aws: None, cognito_user: Any, pennsieve: Any, gpu_synthesized: dict[str, Any], tmp_path: Path
) -> Iterator[IamNode]:
    secret = json.dumps({"apiKey": cognito_user.api_key, "apiSecret": cognito_user.api_secret})
    template = NodeTemplate(gpu_synthesized, suffix=uuid.uuid4().hex[:6])
    node = build_node(template, tmp_path / "runs", {PENNSIEVE_SECRET: secret})
    node.extra_environment.update(
        {"PENNSIEVE_API_HOST": pennsieve.api_host, "PENNSIEVE_API2_HOST": pennsieve.api2_host}
    )
    with node.recorder.installed(), executions_of_versions():
        yield node
    CHECKED.update(node.recorder.checked)
    for role, actions in node.recorder.actions.items():
        ACTIONS.setdefault(role, set()).update(actions)
    node.recorder.assert_clean()


@pytest.fixture
def dataset(pennsieve):
    dataset = pennsieve.add_dataset("eeg")
    dataset.add_package("rec-0.edf", [("rec-0.edf", 1024)])
    return dataset


def test_a_gpu_run_is_registered_prepared_and_started_each_step_with_its_role(gpu_node: IamNode, dataset):
    execution = started_execution(gpu_node, gpu_tiny(), dataset.node_id)
    run = json.loads(execution["input"])
    capacity = gpu_node.environment("prepare")["GPU_CAPACITY_PROVIDER"]
    assert run["node"]["gpuCapacity"] == [{"CapacityProvider": capacity, "Weight": 1, "Base": 0}]
    assert capacity == "pennflow-gpu"

    ecs = boto3.client("ecs", region_name=REGION)
    task = ecs.describe_task_definition(taskDefinition=run["run"]["taskDefinitions"]["work"])[
        "taskDefinition"
    ]
    assert task["requiresCompatibilities"] == ["EC2"]
    (main,) = [c for c in task["containerDefinitions"] if c["name"] == "processor"]
    assert main["resourceRequirements"] == [{"type": "GPU", "value": "2"}]
    assert gpu_node.recorder.actions[gpu_node.role("prepare")] >= {
        "ecs:RegisterTaskDefinition",
        "iam:PassRole",
    }

    machine = boto3.client("stepfunctions", region_name=REGION).describe_state_machine(
        stateMachineArn=execution["stateMachineArn"]
    )
    work = json.loads(machine["definition"])
    assert "CapacityProviderStrategy.$" in json.dumps(work)
    role = role_id_of(gpu_node, machine["roleArn"])
    assert check_machine(gpu_node, machine, execution, role) > 10
    assert gpu_node.recorder.actions[role] >= {"ecs:RunTask", "iam:PassRole"}


def test_a_node_without_gpu_capacity_refuses_the_workflow_with_no_aws_call(iam_node: IamNode):
    reply = call_api(iam_node, "POST", "/workflows", body=gpu_tiny())
    assert reply.status == 422, reply.body
    assert "set pennflow.gpu.enabled true in cdk.json" in reply.body["error"]["message"]
    assert not iam_node.recorder.actions.get(iam_node.role("api"), set()) & {"states:CreateStateMachine"}
