"""The node's processor functions on moto Lambda: one per (image digest, slot, size), created once and
reused, mounting the slot's access point, no secret in the configuration, pruned when unused."""

from __future__ import annotations

import json

import boto3
import pytest
from moto import mock_aws

from pennflow.node.lambda_functions import DIGEST_TAG, FunctionSettings, ProcessorFunctions
from pennflow.node.slots import Slot
from pennflow.workflow.definition import validate_definition

REGION = "us-east-1"
REPO = "123456789012.dkr.ecr.us-east-1.amazonaws.com/lab_processors"
IMAGE = f"{REPO}@sha256:{'a' * 64}"
NEWER = f"{REPO}@sha256:{'b' * 64}"
SLOTS = [Slot("slot-00", "fsap-0000000000000000a", "/runs/slots/slot-00"), Slot("slot-01", "fsap-1", "/r")]


def workflow(image=IMAGE, **convert):
    processors = [
        {"id": "convert", "image": image, "computeType": "lambda", **convert},
        {"id": "standard", "image": "other:1", "dependsOn": ["convert"]},
    ]
    return validate_definition({"name": "w", "processors": processors})


@pytest.fixture
def functions():
    with mock_aws():
        iam = boto3.client("iam", region_name=REGION)
        trust = {
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": "lambda.amazonaws.com"},
                    "Action": "sts:AssumeRole",
                }
            ]
        }
        for slot in SLOTS:
            iam.create_role(
                RoleName=f"lab_{REGION}_{slot.slot_id}-function", AssumeRolePolicyDocument=json.dumps(trust)
            )
        account = boto3.client("sts", region_name=REGION).get_caller_identity()["Account"]
        ec2 = boto3.client("ec2", region_name=REGION)
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
        group = ec2.create_security_group(GroupName="tasks", Description="tasks", VpcId=vpc)["GroupId"]
        settings = FunctionSettings(
            name_prefix="lab_fn-",
            role_template=f"arn:aws:iam::{account}:role/lab_{REGION}_{{slot}}-function",
            subnets=[subnet],
            security_groups=[group],
            region=REGION,
            log_group="lab_processors",
            slot_parameter_prefix="/lab/slots/",
            session_tokens=True,
            pennsieve_environment={"PENNSIEVE_API_HOST": "https://api.pennsieve.io"},
            node_name="lab",
        )
        yield ProcessorFunctions(settings, boto3.client("lambda", region_name=REGION))


def test_a_function_per_digest_and_slot_is_created_once_and_reused(functions):
    first = functions.ensure(workflow(), SLOTS[0])
    assert list(first) == ["convert"]  # the standard processor is a task definition, not a function
    again = functions.ensure(workflow(), SLOTS[0])
    other_slot = functions.ensure(workflow(), SLOTS[1])
    assert again == first and other_slot["convert"] != first["convert"]
    assert len(list(functions.functions())) == 2
    config = functions.lambda_.get_function(FunctionName=first["convert"])["Configuration"]
    assert config["FunctionName"].startswith("lab_fn-slot-00-") and len(config["FunctionName"]) <= 64
    assert config["PackageType"] == "Image" and config["MemorySize"] == 2048
    assert config["Role"].endswith(":role/lab_us-east-1_slot-00-function")
    assert config["VpcConfig"]["SubnetIds"] == list(functions.settings.subnets)
    # moto keeps no FileSystemConfigs: the request that created the function says what it mounts
    ((name, request),) = functions.requests(workflow(), SLOTS[0]).values()
    assert name == config["FunctionName"]
    (mount,) = request["FileSystemConfigs"]
    assert mount == {
        "Arn": f"arn:aws:elasticfilesystem:us-east-1:{config['Role'].split(':')[4]}:access-point/fsap-0000000000000000a",
        "LocalMountPath": "/mnt/run",
    }
    assert request["LoggingConfig"]["LogGroup"] == "lab_processors" and request["Timeout"] == 900
    env = config["Environment"]["Variables"]
    assert env["PENNFLOW_RUN_ID_PARAMETER"] == "/lab/slots/slot-00/run-id"
    assert env["PENNFLOW_TOKEN_PARAMETER"] == "/lab/slots/slot-00/session-token"
    assert env["PENNFLOW_RUN_ID_NAMES"] == "INTEGRATION_ID,EXECUTION_RUN_ID"
    assert "SESSION_TOKEN" not in env  # the token's parameter name only, never a token
    tags = functions.lambda_.list_tags(Resource=first["convert"])["Tags"]
    assert tags[DIGEST_TAG] == "sha256:" + "a" * 64 and tags["pennflow:slot"] == "slot-00"


def test_a_new_digest_or_memory_is_a_new_function(functions):
    base = functions.ensure(workflow(), SLOTS[0])["convert"]
    newer = functions.ensure(workflow(NEWER), SLOTS[0])["convert"]
    bigger = functions.ensure(workflow(memory=4096), SLOTS[0])["convert"]
    assert len({base, newer, bigger}) == 3
    config = functions.lambda_.get_function(FunctionName=bigger)["Configuration"]
    assert config["MemorySize"] == 4096


def test_no_token_parameter_for_a_processor_that_asks_for_none(functions):
    arn = functions.ensure(workflow(pennsieveToken=False), SLOTS[0])["convert"]
    env = functions.lambda_.get_function(FunctionName=arn)["Configuration"]["Environment"]["Variables"]
    assert "PENNFLOW_TOKEN_PARAMETER" not in env and "PENNFLOW_RUN_ID_PARAMETER" in env


def test_an_image_not_pinned_by_digest_or_run_layers_are_refused(functions):
    with pytest.raises(ValueError, match="computeType lambda runs an image the node built"):
        functions.ensure(workflow("convert:latest"), SLOTS[0])
    with pytest.raises(ValueError, match="the run's layers .plots. cannot be mounted"):
        functions.ensure(workflow(), SLOTS[0], run_layers=["plots"])
    assert list(functions.functions()) == []


def test_prune_deletes_the_functions_of_digests_no_longer_in_use(functions):
    kept = functions.ensure(workflow(), SLOTS[0])["convert"]
    gone = functions.ensure(workflow(NEWER), SLOTS[1])["convert"]
    assert functions.prune([IMAGE]) == [gone.rsplit(":", 1)[-1]]
    assert [f["FunctionArn"] for f in functions.functions()] == [kept]
