"""Registering a workflow too large for one state machine creates its child machines first."""

from __future__ import annotations

import json

import boto3

from pennflow.node.registry import DynamoWorkflowRegistry, StateMachineSettings
from pennflow.workflow.definition import Workflow, validate_definition
from tests.integration import api_support
from tests.integration.api_support import ACCOUNT, Api
from tests.integration.aws_fixtures import REGION
from tests.unit.test_compiler_scale import pipeline

api = api_support.api
mocked_aws = api_support.mocked_aws

PREFIX = "pennflow-api_"


def large(timeout: int = 3600) -> Workflow:
    """A 1,000-processor pipeline that is not series-parallel: over 1 MB as one machine."""
    dag = pipeline(1000)
    processors = [
        {"id": n, "image": f"img/{n}:1", "dependsOn": list(dag.deps[n]), "timeoutSeconds": timeout}
        if dag.deps[n]
        else {"id": n, "type": "data-source"}
        for n in dag.nodes
    ]
    return validate_definition({"name": "large", "processors": processors})


def machine(name: str) -> str:
    return f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{name}"


def test_registering_a_split_workflow_creates_each_child_and_names_its_version(api: Api) -> None:
    registry = DynamoWorkflowRegistry(
        api_support.WORKFLOWS_TABLE,
        StateMachineSettings(prefix=PREFIX, role_arn=api_support.ENVIRONMENT["STATE_MACHINE_ROLE_ARN"]),
    )
    sfn = boto3.client("stepfunctions", region_name=REGION)
    record, new = registry.register(large())
    assert new and record.state_machine_arn == machine(f"{PREFIX}large")
    names = sorted(m["name"] for m in sfn.list_state_machines()["stateMachines"])
    children = [n for n in names if n.startswith(f"{PREFIX}large_part")]
    assert len(children) >= 2 and names == sorted([f"{PREFIX}large", *children])
    parent = sfn.describe_state_machine(stateMachineArn=record.state_machine_arn)["definition"]
    assert "${Part" not in parent
    for number in range(1, len(children) + 1):
        child = machine(f"{PREFIX}large_part{number}")
        assert f'"{child}:1"' in parent, f"the parent starts version 1 of part {number}"
        assert len(sfn.describe_state_machine(stateMachineArn=child)["definition"].encode()) <= 1_048_576
    assert len(parent.encode()) <= 1_048_576

    record, new = registry.register(large(timeout=7200))  # changed: every machine gets a new version
    parent = json.dumps(sfn.describe_state_machine(stateMachineArn=record.state_machine_arn)["definition"])
    assert not new and record.version_arn == f"{record.state_machine_arn}:2"
    assert f"{machine(f'{PREFIX}large_part1')}:2" in parent
