"""ARNs the runtime builds name the partition the node runs in (aws, aws-cn, aws-us-gov)."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest

from lambdas.settings import NodeSettings, SettingsError
from pennflow.api.runs import console_url
from pennflow.aws import arns
from pennflow.node.registry import DynamoWorkflowRegistry, StateMachineSettings
from pennflow.node.taskdefs import TaskSettings
from pennflow.workflow.asl import CompileOptions, compile_workflow
from pennflow.workflow.definition import parse_definition

WORKFLOW = """
name: tiny
processors:
  - {id: source, type: data-source}
  - {id: step, image: example/step:1, dependsOn: [source], scatter: {batchSize: 2}}
  - {id: results, type: data-target, targetType: s3, dependsOn: [step]}
"""


@pytest.mark.parametrize(
    ("region", "partition"),
    [
        ("us-east-1", "aws"),
        ("cn-north-1", "aws-cn"),
        ("cn-northwest-1", "aws-cn"),
        ("us-gov-west-1", "aws-us-gov"),
    ],
)
def test_the_partition_comes_from_the_region(region: str, partition: str) -> None:
    assert arns.partition_for_region(region) == partition
    arn = arns.build("states", region, "123456789012", "stateMachine:lab_tiny")
    assert arn == f"arn:{partition}:states:{region}:123456789012:stateMachine:lab_tiny"
    assert arns.partition_of(arn) == partition


def test_parse_refuses_what_is_not_an_arn() -> None:
    with pytest.raises(ValueError, match="not an ARN"):
        arns.parse("lab_tiny")
    assert arns.parse("arn:aws-cn:iam::123456789012:role/a:b").resource == "role/a:b"


def _resources(definition: Any) -> list[str]:
    if isinstance(definition, dict):
        found = [v for k, v in definition.items() if k == "Resource" and isinstance(v, str)]
        return found + [r for v in definition.values() for r in _resources(v)]
    if isinstance(definition, list):
        return [r for v in definition for r in _resources(v)]
    return []


def test_the_compiler_writes_integrations_in_the_given_partition() -> None:
    workflow = parse_definition(WORKFLOW, "yaml")
    china = compile_workflow(workflow, CompileOptions(partition="aws-cn"))
    resources = _resources(china)
    # lambda:invoke, s3:getObject and s3:putObject (the Distributed Maps' reader and result writer) and
    # ecs:runTask.sync all appear
    assert {r.split(":::")[1] for r in resources} == {
        "lambda:invoke",
        "s3:getObject",
        "s3:putObject",
        "ecs:runTask.sync",
    }
    assert all(r.startswith("arn:aws-cn:states:::") for r in resources)
    assert "arn:aws:" not in json.dumps(china)
    default = _resources(compile_workflow(workflow))
    assert all(r.startswith("arn:aws:states:::") for r in default)


class _FakeStepFunctions:
    """Records create_state_machine; the registry needs nothing else on a first registration."""

    def __init__(self, region: str):
        self.meta = SimpleNamespace(region_name=region)
        self.exceptions = SimpleNamespace(StateMachineAlreadyExists=type("Exists", (Exception,), {}))
        self.created: list[dict[str, Any]] = []

    def create_state_machine(self, **request: Any) -> dict[str, Any]:
        self.created.append(request)
        arn = f"arn:aws-cn:states:{self.meta.region_name}:123456789012:stateMachine:{request['name']}"
        return {"stateMachineArn": arn, "stateMachineVersionArn": f"{arn}:1"}


class _FakeDynamo:
    def __init__(self) -> None:
        self.items: dict[str, dict] = {}

    def get_item(self, TableName: str, Key: dict, ConsistentRead: bool) -> dict:  # noqa: N803 (boto3 names)
        item = self.items.get(Key["name"]["S"])
        return {"Item": item} if item else {}

    def put_item(self, TableName: str, Item: dict, **conditions: object) -> None:  # noqa: N803
        self.items[Item["name"]["S"]] = Item


def test_a_node_in_china_registers_state_machines_with_china_integrations() -> None:
    sfn = _FakeStepFunctions("cn-north-1")
    machines = StateMachineSettings(prefix="lab_", role_arn="arn:aws-cn:iam::123456789012:role/lab-states")
    registry = DynamoWorkflowRegistry("workflows", machines, dynamodb=_FakeDynamo(), stepfunctions=sfn)

    record, created = registry.register(parse_definition(WORKFLOW, "yaml"))

    assert created and record.state_machine_arn.startswith("arn:aws-cn:states:cn-north-1:")
    (request,) = sfn.created
    resources = _resources(json.loads(request["definition"]))
    assert resources and all(r.startswith("arn:aws-cn:states:::") for r in resources)
    assert (
        machines.arn("tiny", "cn-north-1")
        == "arn:aws-cn:states:cn-north-1:123456789012:stateMachine:lab_tiny"
    )


@pytest.mark.parametrize(
    ("arn", "host"),
    [
        ("arn:aws:states:eu-west-1:1:execution:lab_x:r", "https://eu-west-1.console.aws.amazon.com/"),
        ("arn:aws-cn:states:cn-north-1:1:execution:lab_x:r", "https://console.amazonaws.cn/"),
        ("arn:aws-us-gov:states:us-gov-west-1:1:execution:lab_x:r", "https://console.amazonaws-us-gov.com/"),
    ],
)
def test_console_links_open_the_partition_console(arn: str, host: str) -> None:
    url = console_url(arn)
    assert url.startswith(host) and url.endswith(arn) and f"region={arn.split(':')[3]}" in url


def test_a_slot_task_role_is_its_template_filled_in() -> None:
    template = "arn:aws-cn:iam::123456789012:role/lab_cn-north-1_{slot}-{kind}"
    settings = TaskSettings(
        file_system_id="fs-1",
        execution_role_arn="arn:aws-cn:iam::123456789012:role/exec",
        slot_role_template=template,
        builtin_image="builtin:1",
        log_group="logs",
        region="cn-north-1",
    )
    assert (
        settings.task_role_arn("slot-03", builtin=False)
        == "arn:aws-cn:iam::123456789012:role/lab_cn-north-1_slot-03-processor"
    )
    assert settings.task_role_arn("slot-03", builtin=True).endswith("_slot-03-builtin")


NODE_ENV = {
    "AWS_REGION": "cn-north-1",
    "RUNS_TABLE": "runs",
    "WORKFLOWS_TABLE": "workflows",
    "SLOTS_TABLE": "slots",
    "RESULTS_BUCKET": "results",
    "LOG_ARCHIVE_BUCKET": "logs",
    "CLUSTER_ARN": "arn:aws-cn:ecs:cn-north-1:123456789012:cluster/c",
    "PROCESSOR_LOG_GROUP": "processors",
    "TASK_EXECUTION_ROLE_ARN": "arn:aws-cn:iam::123456789012:role/exec",
    "BUILTIN_IMAGE": "builtin:1",
    "FILE_SYSTEM_ID": "fs-1",
    "RUN_SLOTS": "2",
    "TASK_SUBNET_IDS": "subnet-1",
    "TASK_SECURITY_GROUP_ID": "sg-1",
    "STATE_MACHINE_PREFIX": "lab_",
    "FINALIZE_FUNCTION_ARN": "lab_finalize",
}


def test_the_slot_role_template_is_read_and_checked() -> None:
    template = "arn:aws-cn:iam::123456789012:role/lab_cn-north-1_{slot}-{kind}"
    assert NodeSettings({**NODE_ENV, "SLOT_TASK_ROLE_ARN_TEMPLATE": template}).slot_role_template == template
    for bad in ("arn:aws:iam::123456789012:role/lab-processor", "lab_{slot}-{kind}"):
        with pytest.raises(SettingsError, match="SLOT_TASK_ROLE_ARN_TEMPLATE"):
            NodeSettings({**NODE_ENV, "SLOT_TASK_ROLE_ARN_TEMPLATE": bad})
    with pytest.raises(SettingsError, match="SLOT_TASK_ROLE_ARN_TEMPLATE: required"):
        NodeSettings(NODE_ENV)


def test_the_runtime_fills_in_the_role_names_the_stack_creates() -> None:
    from stacks import constants as C

    settings = TaskSettings(
        file_system_id="fs-1",
        execution_role_arn="arn:aws:iam::123456789012:role/exec",
        slot_role_template=C.slot_role_name("lab", "eu-west-1", "{slot}", "{kind}"),
        builtin_image="builtin:1",
        log_group="logs",
        region="eu-west-1",
    )
    filled = {settings.task_role_arn("slot-07", builtin=builtin) for builtin in (True, False)}
    assert filled == {C.slot_role_name("lab", "eu-west-1", "slot-07", kind) for kind in C.SLOT_ROLE_KINDS}
