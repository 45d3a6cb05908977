"""The node's processor registry on moto: POST/GET /processors, CodeBuild builds, their outcome events,
implicit registration with a workflow, and runs refused until READY, then pinned by digest."""

from __future__ import annotations

import time

import boto3
import pytest

from pennflow.node.processor_builds import (
    BuildOutputs,
    BuildSettings,
    CodeBuildBuilds,
    NodeProcessors,
    finish_build,
    manifest_key,
)
from pennflow.processors.checkout import SourceRef
from pennflow.processors.registry import ProcessorRecord, ProcessorStatus
from tests.integration import api_support
from tests.integration.aws_fixtures import REGION

api = api_support.api
mocked_aws = api_support.mocked_aws

PROJECT = api_support.ENVIRONMENT["PROCESSOR_BUILD_PROJECT"]
BUCKET = api_support.ENVIRONMENT["PROCESSOR_MANIFEST_BUCKET"]
URL, TAG = "https://github.com/example/thumbs", "v1.0.0"
DIGEST = "sha256:" + "ab" * 32
APP_YML = """\
schemaVersion: '1.0'
name: Thumbs
runtime: {computeTypes: [standard]}
resources: {cpu: 2048, memory: 4096}
parameters:
  - {name: SIZE, type: integer, default: 256, description: pixels}
"""


@pytest.fixture
def node(api) -> str:
    """The registry's AWS side is api_support's node (table, bucket, ECR repository, CodeBuild project)."""
    return api_support.ENVIRONMENT["PROCESSOR_REPOSITORY_URI"]


def processors() -> NodeProcessors:
    found = api_support.processors_api.configured_processors()
    assert found is not None
    return found


def build_event(
    record: ProcessorRecord, status: str, *, digest: str | None = DIGEST, logs: bool = False
) -> dict:
    info = {
        "environment": {"environment-variables": [{"name": "PROCESSOR_KEY", "value": record.processor_key}]},
        "exported-environment-variables": [{"name": "IMAGE_DIGEST", "value": digest}] if digest else [],
    }
    if logs:
        info["logs"] = {"group-name": "/aws/codebuild/builds", "stream-name": "one"}
    arn = f"arn:aws:codebuild:{REGION}:123456789012:build/{record.build_id}"
    return {"build-status": status, "build-id": arn, "project-name": PROJECT, "additional-information": info}


def finish(record: ProcessorRecord, status: str, **kwargs) -> ProcessorRecord | None:
    found = processors()
    return finish_build(
        build_event(record, status, **kwargs),
        registry=found.registry,
        outputs=BuildOutputs(found.builds.settings),
    )


def test_post_starts_a_build_and_the_success_event_makes_it_ready(api, node):
    reply = api("POST", "/processors", body={"sourceUrl": URL, "tag": TAG})
    assert reply.status == 202, reply.body
    assert reply.body["status"] == "BUILDING" and reply.body["buildId"].startswith(f"{PROJECT}:")
    (build,) = boto3.client("codebuild", region_name=REGION).batch_get_builds(ids=[reply.body["buildId"]])[
        "builds"
    ]
    assert build["projectName"] == PROJECT

    record = processors().registry.find(SourceRef(URL, TAG))
    boto3.client("s3", region_name=REGION).put_object(Bucket=BUCKET, Key=manifest_key(record), Body=APP_YML)
    ready = finish(record, "SUCCEEDED")
    assert ready is not None and ready.status is ProcessorStatus.READY
    view = api("GET", f"/processors/{record.id}").body
    assert view["image"] == f"{node}@{DIGEST}"
    assert view["manifest"]["parameters"][0] == {
        "name": "SIZE",
        "type": "integer",
        "description": "pixels",
        "default": "256",
        "required": False,
    }
    assert [p["id"] for p in api("GET", "/processors").body["processors"]] == [record.id]
    again = api("POST", "/processors", body={"sourceUrl": URL + ".git", "tag": TAG})
    assert again.status == 200 and again.body["buildId"] == view["buildId"]  # a tag is built once


def test_a_failed_build_keeps_the_log_tail_and_registering_again_rebuilds(api, node):
    logs = boto3.client("logs", region_name=REGION)
    logs.create_log_group(logGroupName="/aws/codebuild/builds")
    logs.create_log_stream(logGroupName="/aws/codebuild/builds", logStreamName="one")
    now = int(time.time() * 1000)
    logs.put_log_events(
        logGroupName="/aws/codebuild/builds",
        logStreamName="one",
        logEvents=[
            {"timestamp": now, "message": "Step 3/5 : RUN make"},
            {"timestamp": now + 1, "message": "make: *** no rule"},
        ],
    )
    first = api("POST", "/processors", body={"sourceUrl": URL, "tag": TAG}).body
    record = processors().registry.find(SourceRef(URL, TAG))
    failed = finish(record, "FAILED", digest=None, logs=True)
    assert failed.status is ProcessorStatus.FAILED and failed.error.endswith("make: *** no rule\n")
    assert "RUN make" in api("GET", f"/processors/{record.id}").body["error"]
    retry = api("POST", "/processors", body={"sourceUrl": URL, "tag": TAG})
    assert retry.status == 202 and retry.body["buildId"] != first["buildId"]
    assert finish(record, "SUCCEEDED") is None  # the old build's event changes nothing now


def test_an_event_of_a_success_without_digest_fails_and_a_bad_manifest_fails(api, node):
    api("POST", "/processors", body={"sourceUrl": URL, "tag": TAG})
    record = processors().registry.find(SourceRef(URL, TAG))
    assert finish(record, "IN_PROGRESS") is None
    boto3.client("s3", region_name=REGION).put_object(
        Bucket=BUCKET, Key=manifest_key(record), Body="parameters: [{name: X, type: decimal}]\n"
    )
    failed = finish(record, "SUCCEEDED")
    assert (
        failed.status is ProcessorStatus.FAILED
        and "parameters[0].type: 'decimal' is not one of" in failed.error
    )


def test_bad_registration_bodies_are_422_naming_the_field(api, node):
    reply = api("POST", "/processors", body={"sourceUrl": "file:///etc", "tag": "v1", "tokenSecretArn": "x"})
    assert reply.status == 422
    fields = {error["field"] for error in reply.body["error"]["fields"]}
    assert {"sourceUrl", "tokenSecretArn"} <= fields


def test_a_private_repository_token_goes_to_codebuild_by_secret_arn_only():
    class Recorder:
        calls: list[dict] = []

        def start_build(self, **kwargs):
            self.calls.append(kwargs)
            return {"build": {"id": f"{PROJECT}:1"}}

    secret = f"arn:aws:secretsmanager:{REGION}:123456789012:secret:github-token-AbCdEf"
    recorder = Recorder()
    builds = CodeBuildBuilds(BuildSettings(PROJECT, BUCKET, "repo"), client=recorder)
    builds.start(ProcessorRecord.new(SourceRef(URL, TAG), secret))
    variables = {v["name"]: v for v in recorder.calls[0]["environmentVariablesOverride"]}
    assert variables["GIT_TOKEN"] == {"name": "GIT_TOKEN", "value": secret, "type": "SECRETS_MANAGER"}
    assert {v["type"] for name, v in variables.items() if name != "GIT_TOKEN"} == {"PLAINTEXT"}


def sourced_workflow() -> dict:
    return api_support.tiny(
        "thumbs", image=None, sourceUrl=URL, tag=TAG, defaultParams={"WINDOW": "30", "MODE": "fast"}
    )


def test_a_workflow_registers_its_processors_and_runs_wait_for_ready(api, node):
    definition = sourced_workflow()
    del definition["processors"][1]["image"]
    api.register(definition)
    record = processors().registry.find(SourceRef(URL, TAG))
    assert record is not None and record.status is ProcessorStatus.BUILDING

    refused = api.start("thumbs")
    assert refused.status == 409 and refused.body["error"]["code"] == "processor_not_ready"
    assert (
        "processor 'work'" in refused.body["error"]["message"]
        and "still building" in refused.body["error"]["message"]
    )

    boto3.client("s3", region_name=REGION).put_object(Bucket=BUCKET, Key=manifest_key(record), Body=APP_YML)
    finish(record, "SUCCEEDED")
    bad = api.start("thumbs", params={"SIZE": "huge"})
    assert bad.status == 400 and bad.body["error"]["code"] == "invalid_param"
    assert bad.body["error"]["fields"][0]["field"] == "params.work.SIZE"

    started = api.start("thumbs")
    assert started.status == 202, started.body
    run = api.store.get_run(started.body["runId"])
    assert run.images == {"work": f"{node}@{DIGEST}"}  # pinned by digest in the record
    assert run.params["work"]["SIZE"] == "256"  # the manifest's default applies
    plan = api.start("thumbs", dryRun=True).body
    work = next(p for p in plan["processors"] if p["id"] == "work")
    assert work["image"]["digest"] == DIGEST  # and in the content key


def test_the_node_starts_a_pinned_run_with_the_digest_and_the_manifests_resources(mocked_aws, tmp_path):
    """prepare registers task definitions with the image by digest and app.yml's cpu/memory."""
    import json

    from pennflow.node.lifecycle import prepare_run
    from pennflow.node.processor_builds import DynamoProcessorRegistry
    from pennflow.processors.manifest import parse_manifest
    from tests.integration import aws_fixtures

    moto_node = aws_fixtures.build_moto_node(tmp_path / "runs")
    dynamodb = boto3.client("dynamodb", region_name=REGION)
    dynamodb.create_table(
        TableName="pennflow-processors",
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "processor_key", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "processor_key", "KeyType": "HASH"}],
    )
    registry = DynamoProcessorRegistry("pennflow-processors")
    uri = "123456789012.dkr.ecr.us-east-1.amazonaws.com/pennflow_processors"
    record = ProcessorRecord.new(SourceRef(URL, TAG)).model_copy(
        update={
            "status": ProcessorStatus.READY,
            "build_id": "b:1",
            "image_uri": uri,
            "image_digest": DIGEST,
            "manifest": parse_manifest(APP_YML).document(),
        }
    )
    registry.put(record)
    moto_node.node.processors = registry
    workflow = aws_fixtures.workflow_from(f"""
name: thumbs
processors:
  - id: work
    sourceUrl: {URL}
    tag: {TAG}
""")
    moto_node.register(workflow)
    run = moto_node.create_run(workflow, images={"work": f"{uri}@{DIGEST}"})
    result = prepare_run(run.run_id, moto_node.node)
    assert result.outcome == "started", result.detail
    execution = boto3.client("stepfunctions", region_name=REGION).describe_execution(
        executionArn=result.execution_arn
    )
    (arn,) = json.loads(execution["input"])["run"]["taskDefinitions"].values()
    task = boto3.client("ecs", region_name=REGION).describe_task_definition(taskDefinition=arn)[
        "taskDefinition"
    ]
    main = next(c for c in task["containerDefinitions"] if c["image"].startswith(uri))
    assert main["image"] == f"{uri}@{DIGEST}"
    assert (task["cpu"], task["memory"]) == ("2048", "4096")  # app.yml's resources
