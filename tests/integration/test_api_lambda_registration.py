"""computeType lambda through the API: a processor given by `image:` is refused at registration (the
node runs only images it built from a sourceUrl, with the Lambda bootstrap), before anything deploys."""

from __future__ import annotations

import boto3

from tests.integration import api_support
from tests.integration.api_support import Api, tiny
from tests.integration.aws_fixtures import REGION

api = api_support.api
mocked_aws = api_support.mocked_aws


def test_a_lambda_processor_given_by_image_is_refused_naming_what_to_give(api: Api) -> None:
    reply = api("POST", "/workflows", body=tiny("lambda-image", computeType="lambda", memory=1024))

    assert reply.status == 422, reply.body
    assert reply.error["code"] == "lambda_needs_source"
    assert "give a sourceUrl and tag, or use computeType standard" in reply.error["message"]
    assert ("body", "processors.work.computeType") in reply.fields()
    machines = boto3.client("stepfunctions", region_name=REGION).list_state_machines()["stateMachines"]
    assert not [m for m in machines if m["name"].endswith("lambda-image")]


def test_the_same_workflow_with_computetype_standard_registers(api: Api) -> None:
    reply = api("POST", "/workflows", body=tiny("lambda-image"))
    assert reply.status == 201, reply.body
