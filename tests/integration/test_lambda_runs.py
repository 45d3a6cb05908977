"""The run lifecycle with a computeType lambda processor on moto: prepare creates the slot's function on
first use and the next run in that slot reuses it; a node without processor functions fails the run."""

from __future__ import annotations

import json

import boto3

from pennflow.node.lambda_functions import FunctionSettings, ProcessorFunctions
from pennflow.node.lifecycle import prepare_run, release_when_idle
from pennflow.workflow.runs import Status
from tests.integration import aws_fixtures
from tests.integration.aws_fixtures import REGION, MotoNode

mocked_aws = aws_fixtures.mocked_aws
moto_node = aws_fixtures.moto_node
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/pennflow_processors@sha256:" + "d" * 64
TRUST = {
    "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
    ]
}


def lambda_workflow():
    return aws_fixtures.workflow_from(f"""
        name: quick
        processors:
          - id: prep
            image: prep:1
          - id: thumbs
            image: {IMAGE}
            computeType: lambda
            memory: 1024
            dependsOn: [prep]
        """)


def with_functions(moto_node: MotoNode) -> list[str]:
    """The node's processor functions on moto; returns the names CreateFunction was called with."""
    iam = boto3.client("iam", region_name=REGION)
    account = boto3.client("sts", region_name=REGION).get_caller_identity()["Account"]
    for slot in moto_node.slot_access_points:
        iam.create_role(RoleName=f"pennflow_{REGION}-fn_{slot}", AssumeRolePolicyDocument=json.dumps(TRUST))
    client = boto3.client("lambda", region_name=REGION)
    created: list[str] = []
    client.meta.events.register(
        "before-parameter-build.lambda.CreateFunction",
        lambda params, **_: created.append(params["FunctionName"]),
    )
    settings = FunctionSettings(
        name_prefix="pennflow_fn-",
        role_template=f"arn:aws:iam::{account}:role/pennflow_{REGION}-fn_{{slot}}",
        subnets=["subnet-0a"],
        security_groups=["sg-0a"],
        region=REGION,
        log_group=aws_fixtures.PROCESSOR_LOG_GROUP,
    )
    moto_node.node.functions = ProcessorFunctions(settings, client)
    return created


def functions_of(result) -> dict[str, str]:
    sfn = boto3.client("stepfunctions", region_name=REGION)
    execution = sfn.describe_execution(executionArn=result.execution_arn)
    return json.loads(execution["input"])["run"]["functions"]


def test_prepare_creates_the_slots_function_once_and_the_next_run_reuses_it(moto_node: MotoNode):
    created = with_functions(moto_node)
    workflow = lambda_workflow()
    moto_node.register(workflow)
    first = prepare_run(moto_node.create_run(workflow).run_id, moto_node.node)
    assert first.outcome == "started", first.detail
    (function,) = functions_of(first).values()
    assert created == [function.rsplit(":", 1)[-1]] and f"fn-{first.slot_id}-" in function
    assert moto_node.registrations and all("thumbs" not in f for f in moto_node.registrations)

    moto_node.store.update_run(first.run_id, Status.SUCCEEDED)
    release_when_idle(first.run_id, moto_node.node)
    second = prepare_run(moto_node.create_run(workflow).run_id, moto_node.node)
    assert second.outcome == "started" and second.slot_id == first.slot_id
    assert functions_of(second) == functions_of(first) and len(created) == 1  # reused, not made again


def test_a_node_without_processor_functions_fails_a_lambda_run_saying_why(moto_node: MotoNode):
    workflow = lambda_workflow()
    moto_node.register(workflow)
    run = moto_node.create_run(workflow)
    result = prepare_run(run.run_id, moto_node.node)
    assert result.outcome == "failed"
    assert "no processor functions configured: computeType lambda cannot run" in result.detail
    assert moto_node.store.get_run(run.run_id).status.value == "FAILED"
