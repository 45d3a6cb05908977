"""Processors from source with the roles as synthesized: POST /processors starts the node's build (the
API may start that project), and the build's state change makes it READY (the outcome function reads
the build's app.yml and writes the record), then a run of a workflow naming it is pinned by digest."""

from __future__ import annotations

import boto3
import pytest

from tests.iam.lifecycle import call_api
from tests.iam.moto_node import IamNode
from tests.iam.template import ACCOUNT, REGION

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")

URL, TAG = "https://github.com/example/thumbs", "v1"
DIGEST = "sha256:" + "ef" * 32


def create_build_project(iam_node: IamNode) -> str:
    """The template's CodeBuild project, on moto (moto starts builds only of a project it knows)."""
    name = iam_node.name("ProcessorsBuilds")
    role = boto3.client("iam", region_name=REGION).create_role(
        RoleName=f"{name}-role", AssumeRolePolicyDocument="{}"
    )
    boto3.client("codebuild", region_name=REGION).create_project(
        name=name,
        source={"type": "NO_SOURCE", "location": "none", "buildspec": "version: 0.2"},
        artifacts={"type": "NO_ARTIFACTS"},
        environment={
            "type": "LINUX_CONTAINER",
            "image": "aws/codebuild/standard:7.0",
            "computeType": "BUILD_GENERAL1_MEDIUM",
            "privilegedMode": True,
        },
        serviceRole=role["Role"]["Arn"],
    )
    return name


def test_a_processor_is_built_recorded_ready_and_pinned_each_step_with_its_role(iam_node: IamNode):
    project = create_build_project(iam_node)
    reply = call_api(iam_node, "POST", "/processors", body={"sourceUrl": URL, "tag": TAG})
    assert reply.status == 202, reply.body
    view = reply.body

    environment = iam_node.environment("processor_builds")
    boto3.client("s3", region_name=REGION).put_object(  # what the build's role writes
        Bucket=environment["PROCESSOR_MANIFEST_BUCKET"],
        Key=f"processors/{view['id']}/app.yml",
        Body=b"parameters: [{name: SIZE, type: integer, default: 64}]\n",
    )
    event = {
        "source": "aws.codebuild",
        "detail-type": "CodeBuild Build State Change",
        "detail": {
            "build-status": "SUCCEEDED",
            "project-name": project,
            "build-id": f"arn:aws:codebuild:{REGION}:{ACCOUNT}:build/{view['buildId']}",
            "additional-information": {
                "environment": {
                    "environment-variables": [{"name": "PROCESSOR_KEY", "value": f"{URL}#{TAG}"}]
                },
                "exported-environment-variables": [{"name": "IMAGE_DIGEST", "value": DIGEST}],
            },
        },
    }
    outcome = iam_node.invoke("processor_builds", event)
    assert outcome == {"outcome": "READY", "processor": view["id"], "digest": DIGEST}

    shown = call_api(iam_node, "GET", f"/processors/{view['id']}").body
    assert shown["image"] == f"{environment['PROCESSOR_REPOSITORY_URI']}@{DIGEST}"
    definition = {"name": "thumbs", "processors": [{"id": "work", "sourceUrl": URL, "tag": TAG}]}
    assert call_api(iam_node, "POST", "/workflows", body=definition).status in (200, 201)
    bad = call_api(iam_node, "POST", "/runs", body={"workflow": "thumbs", "params": {"SIZE": "big"}})
    assert bad.status == 400 and "'big' is not an integer" in bad.body["error"]["message"]

    recorder = iam_node.recorder
    assert recorder.actions[iam_node.role("api")] >= {"codebuild:StartBuild", "dynamodb:PutItem"}
    assert recorder.actions[iam_node.role("processor_builds")] >= {
        "dynamodb:GetItem",
        "dynamodb:UpdateItem",
        "s3:GetObject",
    }
