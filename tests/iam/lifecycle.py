"""Driving the node's functions the way AWS does: the API's REST events, the asynchronous
invocations it makes, and the events Step Functions and ECS send, each function with its own role."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import boto3

from tests.iam.moto_node import IamNode
from tests.iam.template import REGION
from tests.integration.api_support import event, tiny


@dataclass
class Reply:
    status: int
    body: Any


def call_api(node: IamNode, method: str, path: str, **kwargs: Any) -> Reply:
    response = node.invoke("api", event(method, path, **kwargs))
    body = response.get("body")
    if response.get("isBase64Encoded"):
        body = base64.b64decode(body).decode()
    return Reply(response["statusCode"], json.loads(body) if body else None)


def register(node: IamNode, definition: dict[str, Any]) -> Reply:
    reply = call_api(node, "POST", "/workflows", body=definition)
    assert reply.status in (200, 201), reply.body
    return reply


def start_run(node: IamNode, workflow: str, **fields: Any) -> str:
    """POST /runs, then the prepare invocation the API handed off, as Lambda delivers it."""
    reply = call_api(node, "POST", "/runs", body={"workflow": workflow, **fields})
    assert reply.status == 202, reply.body
    run_id = reply.body["runId"]
    deliver(node, "prepare")
    return run_id


def deliver(node: IamNode, function: str) -> list[Any]:
    """Run the asynchronous invocations of ``function`` made so far (each with its own role)."""
    name = node.deployed_name(function)
    pending = [i for i in node.invocations if i.function == name]
    node.invocations[:] = [i for i in node.invocations if i.function != name]
    return [node.invoke(function, i.payload) for i in pending]


def scattered(name: str = "scattered") -> dict[str, Any]:
    definition = tiny(name)
    definition["processors"][1]["scatter"] = {"over": "files", "batchSize": 2}
    return definition


def execution_event(execution_arn: str, status: str, **ended: str) -> dict[str, Any]:
    """What EventBridge hands the status function when a run's execution changes status (``ended``:
    the ``error`` and ``cause`` of a failed one)."""
    detail = {"executionArn": execution_arn, "name": execution_arn.rsplit(":", 1)[1], "status": status}
    return {
        "version": "0",
        "detail-type": "Step Functions Execution Status Change",
        "source": "aws.states",
        "time": "2025-03-01T12:05:01Z",
        "detail": {**detail, **ended},
    }


def task_event(
    task: Mapping[str, Any], run_id: str, processor_id: str, status: str, exit_code: int | None = None
) -> dict[str, Any]:
    """What EventBridge hands the status function when one of the run's ECS tasks changes status."""
    container: dict[str, Any] = {"name": "processor", "lastStatus": status}
    if exit_code is not None:
        container["exitCode"] = exit_code
    env = [{"name": "RUN_ID", "value": run_id}, {"name": "PROCESSOR_ID", "value": processor_id}]
    detail: dict[str, Any] = {
        "clusterArn": task["clusterArn"],
        "taskArn": task["taskArn"],
        "taskDefinitionArn": task["taskDefinitionArn"],
        "lastStatus": status,
        "desiredStatus": "STOPPED" if status == "STOPPED" else "RUNNING",
        "overrides": {"containerOverrides": [{"name": "processor", "environment": env}]},
        "containers": [container],
        "startedAt": "2025-03-01T12:00:00Z",
    }
    if status == "STOPPED":
        detail.update(
            stoppedAt="2025-03-01T12:05:00Z",
            stopCode="EssentialContainerExited",
            stoppedReason="Essential container in task exited",
        )
    return {
        "version": "0",
        "detail-type": "ECS Task State Change",
        "source": "aws.ecs",
        "time": "2025-03-01T12:05:01Z",
        "detail": detail,
    }


def run_processor_task(node: IamNode, run_id: str, processor_id: str) -> dict[str, Any]:
    """Start the processor's ECS task as the state machine would (moto keeps it RUNNING until stopped)."""
    ecs = boto3.client("ecs", region_name=REGION)
    task_definition = slot_of(node, run_id).run_task_definitions[processor_id]
    ec2 = boto3.client("ec2", region_name=REGION)
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName=f"tasks-{vpc}", Description="tasks", VpcId=vpc)["GroupId"]
    return ecs.run_task(
        cluster=node.environment("prepare")["CLUSTER_ARN"],
        taskDefinition=task_definition,
        launchType="FARGATE",
        overrides={
            "containerOverrides": [
                {
                    "name": "processor",
                    "environment": [
                        {"name": "RUN_ID", "value": run_id},
                        {"name": "PROCESSOR_ID", "value": processor_id},
                    ],
                }
            ]
        },
        networkConfiguration={"awsvpcConfiguration": {"subnets": [subnet], "securityGroups": [group]}},
    )["tasks"][0]


def run_record(node: IamNode, run_id: str) -> Any:
    from pennflow.stores.dynamodb import DynamoRunStore

    return DynamoRunStore(node.environment("prepare")["RUNS_TABLE"]).get_run(run_id)


def slot_pool(node: IamNode) -> Any:
    from pennflow.node.slots import SlotPool

    env = node.environment("prepare")
    return SlotPool(
        env["SLOTS_TABLE"], file_system_id=env["FILE_SYSTEM_ID"], slot_count=int(env["RUN_SLOTS"])
    )


def slot_of(node: IamNode, run_id: str) -> Any:
    return slot_pool(node).held_by(run_id)


def download_batches(node: IamNode, pennsieve_client: Any, dataset_id: str, run_id: str, source: str) -> Any:
    """The data source's Distributed Map: one download invocation per batch of the run's manifest,
    then the verify invocation; the run holds a slot as after prepare."""
    from pennflow.data.datasource import read_run_manifest, write_run_manifest
    from pennflow.pennsieve import BATCHES, build_manifest

    slot_pool(node).lease(run_id)
    bucket = node.environment("download")["RESULTS_BUCKET"]
    entries = build_manifest(pennsieve_client, dataset_id).entries
    location = write_run_manifest(run_id, entries, bucket=bucket)
    event = {"runId": run_id, "processorId": source, "outputDir": f"/mnt/run/{source}/output"}
    for batch in BATCHES.dump_python(read_run_manifest(location), mode="json"):
        node.invoke("download", {**event, "action": "download", "batch": batch})
    return node.invoke("download", {**event, "action": "verify", "manifest": location.model_dump()})
