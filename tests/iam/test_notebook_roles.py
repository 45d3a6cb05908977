"""Notebook sessions on a node with the interactive setting, each function with its role as
synthesized: the API accepts a session and hands it to the notebooks function (runs-manager role),
which registers the session's task definition and runs it with ECS Exec; the API reads its task;
a stop and the task's STOPPED event end it and free the slot."""

from __future__ import annotations

import json
import uuid
from typing import Any

import boto3
import pytest
from aws_cdk.assertions import Template

from stacks.entrypoint import create_app
from tests.iam.lifecycle import call_api, deliver
from tests.iam.moto_node import IamNode
from tests.iam.template import ACCOUNT, REGION, NodeTemplate
from tests.integration.api_support import CALLER

pytest_plugins = ["tests.fakes.pennsieve_fixtures"]
pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")


@pytest.fixture(scope="module")
def interactive(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The node with sessions on, for moto's account and region; the tests' caller may use them."""
    settings = {"account": ACCOUNT, "region": REGION, "interactive": True, "notebookPrincipals": [CALLER]}
    app, stack = create_app(
        context={"pennflow": settings}, outdir=str(tmp_path_factory.mktemp("cdk-out-iam-nb")), with_nag=False
    )
    app.synth()
    return json.loads(json.dumps(Template.from_stack(stack).to_json()))


@pytest.fixture
def node_template(interactive: dict[str, Any]) -> NodeTemplate:
    return NodeTemplate(interactive, suffix=uuid.uuid4().hex[:6])


def stopped(task: dict[str, Any], stop_code: str, exit_code: int) -> dict[str, Any]:
    return {
        "source": "aws.ecs",
        "detail-type": "ECS Task State Change",
        "detail": {
            "taskArn": task["taskArn"],
            "clusterArn": task["clusterArn"],
            "group": task.get("group"),
            "startedBy": task["startedBy"],
            "lastStatus": "STOPPED",
            "stopCode": stop_code,
            "stoppedReason": "stopped by request",
            "containers": [{"name": "notebook", "exitCode": exit_code}],
        },
    }


def test_a_session_starts_is_read_and_stops_with_the_roles_as_synthesized(iam_node: IamNode):
    reply = call_api(iam_node, "POST", "/notebooks", body={"cpu": 1024, "memory": 4096})
    assert reply.status == 202, reply.body
    run_id = reply.body["runId"]
    (started,) = deliver(iam_node, "notebooks")
    assert started["outcome"] == "started", started

    view = call_api(iam_node, "GET", f"/notebooks/{run_id}")
    assert view.status == 200 and view.body["status"] == "STARTED" and view.body["taskArn"], view.body

    assert call_api(iam_node, "POST", f"/notebooks/{run_id}/stop").status == 202
    (stopping,) = deliver(iam_node, "notebooks")
    assert "stop requested" in stopping["outcome"], stopping

    cluster = iam_node.environment("notebooks")["CLUSTER_ARN"]
    ecs = boto3.client("ecs", region_name=REGION)
    (task,) = ecs.describe_tasks(cluster=cluster, tasks=[view.body["taskArn"]])["tasks"]
    ended = iam_node.invoke("notebooks", stopped(task, "UserInitiated", 143))
    assert "SUCCEEDED" in ended["outcome"], ended
    assert call_api(iam_node, "GET", f"/notebooks/{run_id}").body["status"] == "SUCCEEDED"

    manager = iam_node.role("notebooks")
    assert iam_node.recorder.actions[manager] >= {
        "ecs:RegisterTaskDefinition",
        "ecs:RunTask",
        "ecs:TagResource",
        "ecs:StopTask",
        "iam:PassRole",
        "ssm:PutParameter",
    }
    assert {"lambda:InvokeFunction", "ecs:DescribeTasks"} <= iam_node.recorder.actions[iam_node.role("api")]


def test_the_notebooks_function_shares_the_runs_managers_role(iam_node: IamNode):
    assert iam_node.role("notebooks") == iam_node.role("prepare")
