"""Layers through the API and the layer-jobs function, each with its role as synthesized: a build
starts its ECS task on the stack's build definition, its STOPPED event settles the version, and the
layer is then removed."""

from __future__ import annotations

from typing import Any

import boto3
import pytest

from tests.iam.lifecycle import call_api, deliver
from tests.iam.moto_node import IamNode
from tests.iam.template import REGION

pytest_plugins = ["tests.fakes.pennsieve_fixtures"]
pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")


def stopped(task: dict[str, Any], exit_code: int) -> dict[str, Any]:
    """EventBridge's ECS task state change for a layer job's task."""
    return {
        "source": "aws.ecs",
        "detail-type": "ECS Task State Change",
        "detail": {
            "taskArn": task["taskArn"],
            "taskDefinitionArn": task["taskDefinitionArn"],
            "lastStatus": "STOPPED",
            "startedBy": task["startedBy"],
            "stoppedReason": "Essential container in task exited",
            "containers": [{"name": c["name"], "exitCode": exit_code} for c in task["containers"]],
        },
    }


def test_a_failed_layer_build_is_settled_and_the_layer_removed(iam_node: IamNode):
    reply = call_api(
        iam_node, "POST", "/layers", body={"name": "sci", "type": "python-env", "requirements": "numpy\n"}
    )
    assert reply.status in (201, 202), reply.body
    (started,) = deliver(iam_node, "layer_jobs")
    assert started["outcome"] == "started", started

    cluster = iam_node.environment("layer_jobs")["CLUSTER_ARN"]
    ecs = boto3.client("ecs", region_name=REGION)
    (task,) = ecs.describe_tasks(cluster=cluster, tasks=ecs.list_tasks(cluster=cluster)["taskArns"])["tasks"]
    ecs.stop_task(cluster=cluster, task=task["taskArn"])
    settled = iam_node.invoke("layer_jobs", stopped(task, exit_code=1))
    assert settled["outcome"] == "failed", settled

    assert call_api(iam_node, "DELETE", "/layers/sci").status in (200, 202, 204)
    removed = deliver(iam_node, "layer_jobs")
    assert removed and all(r.get("outcome") != "rejected" for r in removed), removed
    role = iam_node.role("layer_jobs")
    # The failed task wrote no manifest: only s3:ListBucket makes that NoSuchKey, so the job fails
    # with its log tail instead of a 403 that Lambda would retry.
    assert iam_node.recorder.actions[role] >= {
        "ecs:RunTask",
        "iam:PassRole",
        "s3:ListBucket",
        "logs:GetLogEvents",
    }
