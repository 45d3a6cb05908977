"""The synthesized node built on moto: every table, bucket, queue, secret, log group, the cluster
and the file system with its access points, named as the template resolves them (``Names``), and
each Lambda function run as deployed: its template environment, its own role.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import re
import sys
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import boto3
from moto.stepfunctions.models import StepFunctionBackend

from pennflow import aws
from stacks import constants as C
from tests.iam.recorder import AccessRecorder
from tests.iam.template import ACCOUNT, REGION, NodeTemplate

PENNSIEVE_SECRET = "ComputePennsieveSecret"  # logical id prefix of the node's Pennsieve secret
# What Lambda's runtime (and the test host) adds to a function's environment here.
RUNTIME_ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "POWERTOOLS_TRACE_DISABLED": "true",
}


@dataclass
class LambdaContext:
    function_name: str
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 1024
    aws_request_id: str = "req-iam"

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return 900_000


@dataclass
class Invocation:
    function: str
    payload: Any
    invocation_type: str


@dataclass
class IamNode:
    template: NodeTemplate
    recorder: AccessRecorder
    runs_mount: Path
    extra_environment: dict[str, str] = field(default_factory=dict)  # e.g. the fake Pennsieve's hosts
    invocations: list[Invocation] = field(default_factory=list)  # Lambda invokes the node's code made

    def name(self, logical_prefix: str) -> str:
        return self.template.names.name(self.logical_id(logical_prefix))

    def logical_id(self, logical_prefix: str) -> str:
        """The logical id CDK made of a construct path's id (``<path><8 hex digits of hash>``)."""
        (found,) = [k for k in self.template.resources if re.fullmatch(f"{logical_prefix}[0-9A-F]{{8}}", k)]
        return found

    def deployed_name(self, function: str) -> str:
        """The function's name as deployed, from its module name (``lambdas/<function>.py``)."""
        return C.function_name(self.node_name, function)

    @property
    def node_name(self) -> str:
        (api,) = [k for k in self.template.of_type("AWS::Lambda::Function") if k.startswith("FunctionsApi")]
        return self.template.resources[api]["Properties"]["Environment"]["Variables"]["PENNFLOW_NODE_NAME"]

    def environment(self, function: str) -> dict[str, str]:
        function_id = self.template.function_id(self.deployed_name(function))
        return {
            **self.template.environment(function_id),
            **RUNTIME_ENVIRONMENT,
            "RUNS_MOUNT": str(self.runs_mount),  # where the test mounts the runs access point
            **self.extra_environment,
        }

    def role(self, function: str) -> str:
        return self.template.role_of_function(self.template.function_id(self.deployed_name(function)))

    @contextlib.contextmanager
    def as_function(self, function: str) -> Iterator[None]:
        """Code inside runs as ``function`` deployed: its environment, its role, fresh cold-start state."""
        with _environment(self.environment(function)), self.recorder.as_role(self.role(function)):
            _cold_start()
            try:
                yield
            finally:
                _cold_start()

    def invoke(self, function: str, event: Any) -> Any:
        """The function's handler (``lambdas/<name>.py``) on ``event``, as Lambda would run it."""
        module = importlib.import_module(f"lambdas.{function}")
        with self.as_function(function):
            return module.handler(event, LambdaContext(self.deployed_name(function)))

    def _record_invoke(self, params: Mapping[str, Any]) -> dict[str, Any]:
        payload = params.get("Payload", b"null")
        self.invocations.append(
            Invocation(
                str(params["FunctionName"]).rsplit(":", 1)[-1],
                json.loads(payload),
                params.get("InvocationType", "RequestResponse"),
            )
        )
        return {"StatusCode": 202, "Payload": None}


@contextlib.contextmanager
def executions_of_versions() -> Iterator[None]:
    """moto 5 cannot start an execution of a published version (its ``StateMachineVersion`` has no
    ``start_execution``); AWS runs it on the machine, named under the machine's ARN as here."""
    original = StepFunctionBackend.start_execution

    def start_execution(
        backend: StepFunctionBackend, state_machine_arn: str, name: str, execution_input: str
    ) -> Any:
        machine_arn = ":".join(state_machine_arn.split(":")[:7])  # drop the version qualifier
        return original(backend, machine_arn, name, execution_input)

    with mock.patch.object(StepFunctionBackend, "start_execution", start_execution):
        yield


def _cold_start() -> None:
    """Forget what a Lambda container keeps between invocations (cached settings, clients)."""
    aws.reset_clients()
    for name, module in list(sys.modules.items()):
        if name.startswith(("lambdas.", "pennflow.")):
            for value in list(vars(module).values()):
                if callable(getattr(value, "cache_clear", None)) and getattr(value, "__module__", "") == name:
                    value.cache_clear()


@contextlib.contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.update(values)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def build_node(template: NodeTemplate, runs_mount: Path, secrets: Mapping[str, str]) -> IamNode:
    """Create the template's stateful resources on moto (whose ids then resolve the template)."""
    names = template.names
    _create_tables(template)
    s3 = boto3.client("s3", region_name=REGION)
    for logical_id in template.of_type("AWS::S3::Bucket"):
        s3.create_bucket(Bucket=names.name(logical_id))
    for logical_id in template.of_type("AWS::ECS::Cluster"):
        boto3.client("ecs", region_name=REGION).create_cluster(clusterName=names.name(logical_id))
    sqs = boto3.client("sqs", region_name=REGION)
    for logical_id in template.of_type("AWS::SQS::Queue"):
        sqs.create_queue(QueueName=names.name(logical_id))
    logs = boto3.client("logs", region_name=REGION)
    for logical_id in template.of_type("AWS::Logs::LogGroup"):
        with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
            logs.create_log_group(logGroupName=names.name(logical_id))
    secretsmanager = boto3.client("secretsmanager", region_name=REGION)
    for logical_id in template.of_type("AWS::SecretsManager::Secret"):
        value = next((v for prefix, v in secrets.items() if logical_id.startswith(prefix)), uuid.uuid4().hex)
        name = f"{names.name(logical_id)}-{names.suffix}"  # explicit secret names repeat across tests
        names.set(logical_id, Ref=secretsmanager.create_secret(Name=name, SecretString=value)["ARN"])
    _create_network(template)
    _create_file_system(template)
    _register_task_definitions(template)
    recorder = AccessRecorder(template)
    node = IamNode(template, recorder, runs_mount)
    recorder.responders[("lambda", "Invoke")] = node._record_invoke
    return node


def _create_tables(template: NodeTemplate) -> None:
    dynamodb = boto3.client("dynamodb", region_name=REGION)
    for logical_id, resource in template.of_type("AWS::DynamoDB::GlobalTable").items():
        properties = resource["Properties"]
        indexes = [
            {k: index[k] for k in ("IndexName", "KeySchema", "Projection")}
            for index in properties.get("GlobalSecondaryIndexes", [])
        ]
        dynamodb.create_table(
            TableName=template.names.name(logical_id),
            KeySchema=properties["KeySchema"],
            AttributeDefinitions=properties["AttributeDefinitions"],
            BillingMode="PAY_PER_REQUEST",
            **({"GlobalSecondaryIndexes": indexes} if indexes else {}),
        )


def _create_file_system(template: NodeTemplate) -> None:
    names = template.names
    efs = boto3.client("efs", region_name=REGION)
    for logical_id in template.of_type("AWS::EFS::FileSystem"):
        created = efs.create_file_system(CreationToken=names.name(logical_id))["FileSystemId"]
        names.set(logical_id, Ref=created)
    for logical_id, resource in template.of_type("AWS::EFS::AccessPoint").items():
        properties = names.resolve(resource["Properties"])
        created = efs.create_access_point(
            FileSystemId=properties["FileSystemId"],
            RootDirectory={"Path": properties["RootDirectory"]["Path"]},
            Tags=properties.get("AccessPointTags", []),
        )["AccessPointId"]
        names.set(logical_id, Ref=created)


def _register_task_definitions(template: NodeTemplate) -> None:
    """The stack's own task definitions (layer jobs), as revision 1 of their family."""
    ecs = boto3.client("ecs", region_name=REGION)
    for logical_id, resource in template.of_type("AWS::ECS::TaskDefinition").items():
        properties = template.names.resolve(resource["Properties"])
        ecs.register_task_definition(
            family=template.names.name(logical_id),
            containerDefinitions=[
                {
                    "name": c["Name"],
                    "image": str(c.get("Image", "image")),
                    "essential": c.get("Essential", True),
                    "memoryReservation": 256,  # moto sums what each container reserves
                }
                for c in properties["ContainerDefinitions"]
            ],
            taskRoleArn=properties.get("TaskRoleArn", ""),
            executionRoleArn=properties.get("ExecutionRoleArn", ""),
            networkMode="awsvpc",
            requiresCompatibilities=["FARGATE"],
            cpu=str(properties.get("Cpu", "256")),
            memory=str(properties.get("Memory", "512")),
        )


def _create_network(template: NodeTemplate) -> None:
    """One VPC holding the template's subnets and security groups (tasks start in them)."""
    names = template.names
    ec2 = boto3.client("ec2", region_name=REGION)
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})  # moto names the task's ENI
    for logical_id in template.of_type("AWS::EC2::VPC"):
        names.set(logical_id, Ref=vpc)
    for index, logical_id in enumerate(template.of_type("AWS::EC2::Subnet")):
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{index}.0/24")["Subnet"]["SubnetId"]
        names.set(logical_id, Ref=subnet)
    for logical_id in template.of_type("AWS::EC2::SecurityGroup"):
        group = ec2.create_security_group(GroupName=names.name(logical_id), Description="node", VpcId=vpc)
        names.set(logical_id, Ref=group["GroupId"], GroupId=group["GroupId"])
