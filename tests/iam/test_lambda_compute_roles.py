"""computeType lambda with the roles as synthesized: a run of a READY processor's Lambda variant makes
its slot's function with the runs manager's role, the state machine's role may invoke it, and the daily
prune deletes a function of an unused image with the resume function's role."""

from __future__ import annotations

import contextlib
import json

import boto3
import pytest

from pennflow.node.lambda_functions import DIGEST_TAG
from pennflow.node.processor_builds import DynamoProcessorRegistry
from pennflow.processors.checkout import SourceRef
from pennflow.processors.manifest import parse_manifest
from pennflow.processors.registry import ProcessorRecord, ProcessorStatus
from tests.iam.lifecycle import register, run_record, slot_of, start_run
from tests.iam.moto_node import IamNode
from tests.iam.template import REGION
from tests.iam.test_state_machine_roles import check_machine, role_id_of

pytest_plugins = ["tests.fakes.pennsieve_fixtures"]
pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")

URL, TAG = "https://github.com/example/thumbs", "v1"
DIGEST, LAMBDA_DIGEST = "sha256:" + "ef" * 32, "sha256:" + "1a" * 32
TRUST = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
    ],
}


def ready_lambda_processor(node: IamNode) -> str:
    """The record a finished build leaves (written outside any role), and the slot function roles."""
    environment = node.environment("prepare")
    repository = node.environment("processor_builds")["PROCESSOR_REPOSITORY_URI"]
    record = ProcessorRecord.new(SourceRef(URL, TAG)).model_copy(
        update={
            "status": ProcessorStatus.READY,
            "build_id": "b:1",
            "image_uri": repository,
            "image_digest": DIGEST,
            "lambda_image_digest": LAMBDA_DIGEST,
            "manifest": parse_manifest("runtime: {computeTypes: [lambda]}\n").document(),
        }
    )
    DynamoProcessorRegistry(environment["PROCESSORS_TABLE"]).put(record)
    template = environment["PROCESSOR_FUNCTION_ROLE_TEMPLATE"]
    iam = boto3.client("iam", region_name=REGION)
    for index in range(int(environment["RUN_SLOTS"])):
        name = template.format(slot=f"slot-{index:02d}").rsplit("/", 1)[1]
        with contextlib.suppress(iam.exceptions.EntityAlreadyExistsException):  # IAM outlives one test
            iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(TRUST))
    return repository


def test_a_lambda_run_makes_its_slots_function_and_the_machine_may_invoke_it(iam_node: IamNode):
    node = iam_node
    repository = ready_lambda_processor(node)
    definition = {
        "name": "thumbs",
        "processors": [{"id": "work", "sourceUrl": URL, "tag": TAG, "computeType": "lambda", "memory": 1024}],
    }
    register(node, definition)
    run_id = start_run(node, "thumbs")
    run = run_record(node, run_id)
    assert run.status.value == "STARTED", run.reason
    assert run.images == {"work": f"{repository}@{LAMBDA_DIGEST}"}  # the Lambda variant, by digest

    sfn = boto3.client("stepfunctions", region_name=REGION)
    execution = sfn.describe_execution(executionArn=run.execution_arn)
    (function_arn,) = json.loads(execution["input"])["run"]["functions"].values()
    config = boto3.client("lambda", region_name=REGION).get_function(FunctionName=function_arn)[
        "Configuration"
    ]
    slot = slot_of(node, run_id).slot_id
    assert config["Role"].endswith(f"-fn_{slot}") and config["MemorySize"] == 1024
    assert node.recorder.actions[node.role("prepare")] >= {
        "lambda:GetFunction",
        "lambda:CreateFunction",
        "lambda:TagResource",
        "iam:PassRole",
        "ecr:BatchGetImage",
        "elasticfilesystem:DescribeMountTargets",
        "ec2:DescribeSubnets",
    }

    machine = sfn.describe_state_machine(stateMachineArn=execution["stateMachineArn"])
    role = role_id_of(node, machine["roleArn"])
    assert check_machine(node, machine, execution, role) >= 1
    assert "lambda:InvokeFunction" in node.recorder.actions[role]


def test_the_daily_prune_deletes_functions_of_unused_images_only(iam_node: IamNode):
    node = iam_node
    repository = ready_lambda_processor(node)
    environment = node.environment("resume")
    prefix, template = (
        environment["PROCESSOR_FUNCTION_PREFIX"],
        environment["PROCESSOR_FUNCTION_ROLE_TEMPLATE"],
    )
    lambda_ = boto3.client("lambda", region_name=REGION)
    made = {}
    for name, digest in (("kept", LAMBDA_DIGEST), ("stale", "sha256:" + "00" * 32)):
        made[name] = lambda_.create_function(  # as an earlier preparation left them
            FunctionName=f"{prefix}slot-00-{name}",
            Role=template.format(slot="slot-00"),
            PackageType="Image",
            Code={"ImageUri": f"{repository}@{digest}"},
            Tags={DIGEST_TAG: digest},
        )["FunctionName"]

    assert node.invoke("resume", {"action": "pruneFunctions"}) == {"deleted": [made["stale"]]}
    names = {f["FunctionName"] for f in lambda_.list_functions()["Functions"]}
    assert made["kept"] in names and made["stale"] not in names
    assert node.recorder.actions[node.role("resume")] >= {
        "lambda:ListFunctions",
        "lambda:ListTags",
        "lambda:DeleteFunction",
        "dynamodb:Scan",
    }
