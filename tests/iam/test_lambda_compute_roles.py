"""computeType lambda with the roles as synthesized: a run of a READY processor's Lambda variant makes
its slot's function with the runs manager's role, the state machine's role may invoke it, and the daily
prune deletes a function of an unused image with the resume function's role."""

from __future__ import annotations

import contextlib
import json
import os

import boto3
import pytest

from pennflow.node.lambda_functions import DIGEST_TAG
from pennflow.node.processor_builds import DynamoProcessorRegistry
from pennflow.processors import lambda_bootstrap as boot
from pennflow.processors.checkout import SourceRef
from pennflow.processors.manifest import parse_manifest
from pennflow.processors.registry import ProcessorRecord, ProcessorStatus
from tests.fakes.lambda_runtime import fake_aws, fake_runtime
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


def slot_function_role(node: IamNode, slot: str) -> str:
    """The logical id of the slot's function role (its RoleName ends with '-fn_<slot>')."""
    (role,) = [
        logical_id
        for logical_id, resource in node.template.of_type("AWS::IAM::Role").items()
        if json.dumps(resource["Properties"].get("RoleName", "")).rstrip('"]}').endswith(f"-fn_{slot}")
    ]
    return role


def test_a_lambda_steps_events_and_log_lines_are_sent_with_its_slot_role_and_tracked_by_status(
    iam_node: IamNode, tmp_path
):
    node = iam_node
    ready_lambda_processor(node)
    definition = {
        "name": "thumbs",
        "processors": [{"id": "work", "sourceUrl": URL, "tag": TAG, "computeType": "lambda", "memory": 1024}],
    }
    register(node, definition)
    run_id = start_run(node, "thumbs")
    run = run_record(node, run_id)
    sfn = boto3.client("stepfunctions", region_name=REGION)
    (function_arn,) = json.loads(sfn.describe_execution(executionArn=run.execution_arn)["input"])["run"][
        "functions"
    ].values()
    log_group = node.environment("finalize")["PROCESSOR_LOG_GROUP"]

    # What the bootstrap sends for one invocation (loopback), then the same calls with the slot's role.
    event = {
        "processorId": "work",
        "environment": [{"Name": "RUN_ID", "Value": run_id}, {"Name": "PROCESSOR_ID", "Value": "work"}],
    }
    with fake_aws() as aws, fake_runtime() as runtime:
        runtime.invoke(event, "req-1")
        environ = {
            "PATH": os.environ["PATH"],
            "AWS_REGION": REGION,
            "AWS_LAMBDA_FUNCTION_NAME": function_arn.rsplit(":", 1)[-1],
            boot.LOG_GROUP_VAR: log_group,
            boot.EVENTS_ENDPOINT_VAR: aws.url,
            boot.LOGS_ENDPOINT_VAR: aws.url,
            boot.COMMAND_VAR: json.dumps(["echo", "made thumbnails"]),
        }
        boot.serve(boot.RuntimeApi(runtime.address), environ, max_invocations=1)
    role = slot_function_role(node, slot_of(node, run_id).slot_id)
    events, logs = boto3.client("events", region_name=REGION), boto3.client("logs", region_name=REGION)
    with node.recorder.as_role(role):
        for body in aws.bodies("Logs_20140328.CreateLogStream"):
            logs.create_log_stream(**body)
        for body in aws.bodies("Logs_20140328.PutLogEvents"):
            logs.put_log_events(**body)
        for body in aws.bodies("AWSEvents.PutEvents"):
            assert events.put_events(**body)["FailedEntryCount"] == 0
    assert node.recorder.actions[role] >= {"events:PutEvents", "logs:CreateLogStream", "logs:PutLogEvents"}

    for entry in aws.events():  # as the step events rule delivers them
        delivered = {"detail-type": entry["DetailType"], "source": entry["Source"], "detail": entry["Detail"]}
        assert "ignored" not in node.invoke("status", delivered)["result"]
    (step,) = [s for s in run_record_steps(node, run_id) if s.processor_id == "work"]
    assert step.status.value == "SUCCEEDED" and step.attempts == 1 and step.started_at is not None
    stream = "work/processor/req-1"
    assert [
        e["message"] for e in logs.get_log_events(logGroupName=log_group, logStreamName=stream)["events"]
    ] == ["made thumbnails"]


def run_record_steps(node: IamNode, run_id: str):
    from pennflow.stores.dynamodb import DynamoRunStore

    return DynamoRunStore(node.environment("status")["RUNS_TABLE"]).list_steps(run_id)
