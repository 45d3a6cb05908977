"""moto fixtures for the compute node's runtime code (import them explicitly in each test file).

The tables are created with the key schema the CDK storage construct declares, so a mismatch
between the store and the stack shows up here first.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from pennflow import aws
from pennflow.aws.items import serialize
from pennflow.node.lifecycle import LayersMissing, Node, NodeConfig
from pennflow.node.slots import SLOT_TAG, SlotFolders, SlotPool, slot_id
from pennflow.node.taskdefs import TaskDefinitions, TaskSettings
from pennflow.stores import dynamodb as ddb
from pennflow.workflow.asl import compile_to_json
from pennflow.workflow.contract import run_parameters
from pennflow.workflow.definition import Workflow, parse_definition
from pennflow.workflow.runs import RunRecord, StepRecord, new_run_id

REGION = "us-east-1"
RUNS_TABLE = "pennflow-runs"
SLOTS_TABLE = "pennflow-slots"


@pytest.fixture
def mocked_aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(name, value)
    aws.reset_clients()
    with mock_aws():
        yield
    aws.reset_clients()


def create_runs_table(name: str = RUNS_TABLE) -> Any:
    client = boto3.client("dynamodb", region_name=REGION)
    string = "S"
    client.create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[
            {"AttributeName": attribute, "AttributeType": string}
            for attribute in (
                ddb.PK,
                ddb.SK,
                ddb.WORKFLOW_ATTR,
                ddb.STATUS_ATTR,
                ddb.CREATED_ATTR,
                ddb.CONTENT_KEY_ATTR,
            )
        ],
        KeySchema=[
            {"AttributeName": ddb.PK, "KeyType": "HASH"},
            {"AttributeName": ddb.SK, "KeyType": "RANGE"},
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": index,
                "KeySchema": [
                    {"AttributeName": attribute, "KeyType": "HASH"},
                    {"AttributeName": ddb.CREATED_ATTR, "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
            for index, attribute in ((ddb.BY_WORKFLOW, ddb.WORKFLOW_ATTR), (ddb.BY_STATUS, ddb.STATUS_ATTR))
        ]
        + [
            {
                "IndexName": ddb.BY_CONTENT_KEY,
                "KeySchema": [
                    {"AttributeName": ddb.CONTENT_KEY_ATTR, "KeyType": "HASH"},
                    {"AttributeName": ddb.CREATED_ATTR, "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "INCLUDE", "NonKeyAttributes": [ddb.STATUS_ATTR]},
            }
        ],
    )
    return client


def create_slots_table(name: str = SLOTS_TABLE) -> Any:
    client = boto3.client("dynamodb", region_name=REGION)
    client.create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "slot_id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "slot_id", "KeyType": "HASH"}],
    )
    return client


@pytest.fixture
def run_store(mocked_aws: None) -> ddb.DynamoRunStore:
    create_runs_table()
    return ddb.DynamoRunStore(RUNS_TABLE)


# ------------------------------------------------------------------ a compute node on moto

ACCOUNT = "123456789012"
LOG_BUCKET = "pennflow-logs"
RESULTS_BUCKET = "pennflow-results"
PROCESSOR_LOG_GROUP = "/pennflow/processors"
BUILTIN_IMAGE = "ghcr.io/pennflow/builtin:0.1.0"
FINALIZE_FUNCTION = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:pennflow-finalize"
LIST_BATCHES_FUNCTION = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:pennflow-list-batches"
DOWNLOAD_FUNCTION = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:pennflow-download"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/pennflow-"
SLOT_ROLE_TEMPLATE = f"arn:aws:iam::{ACCOUNT}:role/pennflow_{REGION}_{{slot}}-{{kind}}"
PENNSIEVE_SECRET = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:pennflow/pennsieve-AbCdEf"


@dataclass
class WorkflowVersion:
    """What the workflow registry gives the lifecycle for one registered definition."""

    state_machine_arn: str
    definition: Workflow

    @property
    def execution_target(self) -> str:
        return self.state_machine_arn

    def workflow(self) -> Workflow:
        return self.definition


class Workflows:
    """The registry port: definitions by (name, hash), each with a moto state machine."""

    def __init__(self) -> None:
        self.versions: dict[tuple[str, str], WorkflowVersion] = {}

    def get_version(self, name: str, definition_hash: str) -> WorkflowVersion | None:
        return self.versions.get((name, definition_hash))


class Layers:
    """Layer pins: a fixed name -> access point map, recording who pinned what."""

    def __init__(self, access_points: dict[str, str] | None = None):
        self.access_points = dict(access_points or {})
        self.pinned: dict[str, set[str]] = {}

    def pin(self, names, run_id):
        missing = [n for n in names if n not in self.access_points]
        if missing:
            raise LayersMissing(f"layer(s) {', '.join(missing)} not found")
        if names:
            self.pinned[run_id] = set(names)
        return {n: self.access_points[n] for n in names}

    def unpin(self, names, run_id):
        self.pinned.pop(run_id, None)


class Manifests:
    """Writes an empty download plan for runs with a data source, as the Pennsieve writer would."""

    def write(self, run, workflow):
        key = f"runs/{run.run_id}/manifest.json"
        boto3.client("s3", region_name=REGION).put_object(Bucket=RESULTS_BUCKET, Key=key, Body=b"[]")
        return {"bucket": RESULTS_BUCKET, "key": key}


@dataclass
class MotoNode:
    node: Node
    workflows: Workflows
    layers: Layers
    file_system_id: str
    slot_access_points: dict[str, str]  # slot id -> access point id
    runs_mount: Path
    registrations: list[str] = field(default_factory=list)  # families, one per RegisterTaskDefinition

    @property
    def store(self) -> ddb.DynamoRunStore:
        return self.node.store

    def register(self, workflow: Workflow) -> WorkflowVersion:
        sfn = boto3.client("stepfunctions", region_name=REGION)
        name = f"pennflow-{workflow.name}"
        try:
            arn = sfn.create_state_machine(
                name=name, definition=compile_to_json(workflow), roleArn=ROLE + "state-machine"
            )["stateMachineArn"]
        except sfn.exceptions.StateMachineAlreadyExists:
            arn = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{name}"
        version = WorkflowVersion(arn, workflow)
        self.workflows.versions[(workflow.name, workflow.definition_hash())] = version
        return version

    def create_run(self, workflow: Workflow, run_id: str | None = None, **fields: Any) -> RunRecord:
        run = RunRecord(
            run_id=run_id or new_run_id(),
            workflow=workflow.name,
            definition_hash=workflow.definition_hash(),
            params=run_parameters(workflow),
            origin="api",
            **fields,
        )
        steps = [StepRecord(run_id=run.run_id, processor_id=p.id) for p in workflow.processors]
        self.node.store.create_run(run, steps)
        return run

    def create_runs(self, workflow: Workflow, count: int) -> list[RunRecord]:
        """Many runs at once, written with BatchWriteItem as the items ``create_run`` writes.

        moto copies every table for each transaction, so 100 transactional creates cost O(n^2);
        the store's transactional create itself is tested in test_dynamodb_store.py.
        """
        runs = [
            RunRecord(
                run_id=new_run_id(),
                workflow=workflow.name,
                definition_hash=workflow.definition_hash(),
                params=run_parameters(workflow),
                origin="api",
            )
            for _ in range(count)
        ]
        items = []
        for run in runs:
            items.append(ddb._run_item(run))
            items += [
                ddb._step_item(StepRecord(run_id=run.run_id, processor_id=p.id), index)
                for index, p in enumerate(workflow.processors)
            ]
        client = boto3.client("dynamodb", region_name=REGION)
        for start in range(0, len(items), 25):
            chunk = [{"PutRequest": {"Item": serialize(item)}} for item in items[start : start + 25]]
            client.batch_write_item(RequestItems={RUNS_TABLE: chunk})
        return runs

    def run_task(self, task_definition_arn: str) -> str:
        """Start an ECS task as the state machine would (moto keeps it RUNNING until it is stopped)."""
        ec2 = boto3.client("ec2", region_name=REGION)
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})  # moto names the task's ENI
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
        group = ec2.create_security_group(GroupName=f"tasks-{vpc}", Description="tasks", VpcId=vpc)["GroupId"]
        return boto3.client("ecs", region_name=REGION).run_task(
            cluster=self.node.config.cluster_arn,
            taskDefinition=task_definition_arn,
            launchType="FARGATE",
            networkConfiguration={"awsvpcConfiguration": {"subnets": [subnet], "securityGroups": [group]}},
        )["tasks"][0]["taskArn"]

    def slot_dir(self, slot_id: str) -> Path:
        return self.runs_mount / "slots" / slot_id


def build_moto_node(runs_mount: Path, *, slots: int = 3, layers: dict[str, str] | None = None) -> MotoNode:
    """Tables, EFS with slot access points, an ECS cluster, log group and buckets, all on moto."""
    create_runs_table()
    create_slots_table()
    efs = boto3.client("efs", region_name=REGION)
    file_system_id = efs.create_file_system(CreationToken="pennflow")["FileSystemId"]
    access_points = {}
    for index in range(slots):
        sid = slot_id(index)
        access_points[sid] = efs.create_access_point(
            FileSystemId=file_system_id,
            RootDirectory={"Path": f"/runs/slots/{sid}"},
            Tags=[{"Key": SLOT_TAG, "Value": sid}],
        )["AccessPointId"]
    ecs = boto3.client("ecs", region_name=REGION)
    cluster_arn = ecs.create_cluster(clusterName="pennflow")["cluster"]["clusterArn"]
    boto3.client("logs", region_name=REGION).create_log_group(logGroupName=PROCESSOR_LOG_GROUP)
    s3 = boto3.client("s3", region_name=REGION)
    for bucket in (LOG_BUCKET, RESULTS_BUCKET):
        s3.create_bucket(Bucket=bucket)

    registrations: list[str] = []
    ecs.meta.events.register(
        "before-parameter-build.ecs.RegisterTaskDefinition",
        lambda params, **_: registrations.append(params["family"]),
    )
    pool = SlotPool(SLOTS_TABLE, file_system_id=file_system_id, slot_count=slots)
    task_settings = TaskSettings(
        file_system_id=file_system_id,
        execution_role_arn=ROLE + "execution",
        slot_role_template=SLOT_ROLE_TEMPLATE,
        builtin_image=BUILTIN_IMAGE,
        log_group=PROCESSOR_LOG_GROUP,
        region=REGION,
        layers_access_point_id="fsap-layers",
        builtin_environment={"PENNSIEVE_SECRET_ARN": PENNSIEVE_SECRET, "RESULTS_BUCKET": RESULTS_BUCKET},
        node_name="pennflow",
    )
    config = NodeConfig(
        cluster_arn=cluster_arn,
        subnets=("subnet-0a",),
        security_groups=("sg-0a",),
        finalize_function=FINALIZE_FUNCTION,
        list_batches_function=LIST_BATCHES_FUNCTION,
        download_function=DOWNLOAD_FUNCTION,
        log_group=PROCESSOR_LOG_GROUP,
        log_bucket=LOG_BUCKET,
        results_bucket=RESULTS_BUCKET,
        retention_days=30,
    )
    workflows = Workflows()
    layer_pins = Layers(layers)
    node = Node(
        config=config,
        store=ddb.DynamoRunStore(RUNS_TABLE),
        slots=pool,
        folders=SlotFolders(runs_mount),
        task_definitions=TaskDefinitions(task_settings, pool, ecs_client=ecs),
        workflows=workflows,
        layers=layer_pins,
        manifests=Manifests(),
    )
    return MotoNode(node, workflows, layer_pins, file_system_id, access_points, runs_mount, registrations)


@pytest.fixture
def moto_node(mocked_aws: None, tmp_path: Path) -> MotoNode:
    return build_moto_node(tmp_path / "runs")


def workflow_from(text: str) -> Workflow:
    return parse_definition(textwrap.dedent(text), "yaml")


# A fan-out/fan-in workflow with both built-ins: source -> convert -> (bandpower | quality) -> report -> target.
EEG = """
    name: eeg-quality
    processors:
      - {id: recordings, type: data-source}
      - {id: convert, image: "ghcr.io/x/convert:1", dependsOn: [recordings], cpu: 512, memory: 1024,
         retry: {maxAttempts: 2, intervalSeconds: 30, backoffRate: 2}}
      - {id: bandpower, image: "ghcr.io/x/bandpower:1", dependsOn: [convert], defaultParams: {WINDOW: "2"}}
      - {id: quality, image: "ghcr.io/x/quality:1", dependsOn: [convert]}
      - {id: report, image: "ghcr.io/x/report:1", dependsOn: [bandpower, quality], cpu: 256, memory: 512}
      - {id: results, type: data-target, targetType: s3, dependsOn: [report]}
"""
