"""The API Lambda under test: API Gateway REST proxy events, a moto-backed node, fake launchers.

Import the fixtures explicitly in each test file (``api = api_support.api``), as with
``aws_fixtures``. Only the launcher and the canceller (which invoke other Lambdas) are fakes;
the run store, the workflows table, the state machines and the idempotency table are moto's,
reached through the same settings and wiring as in the deployed Lambda.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from pennflow import aws
from pennflow.api import layers as layers_api
from pennflow.api import notebooks as notebooks_api
from pennflow.api import processors as processors_api
from pennflow.triggers import api as triggers_api
from pennflow.triggers import wiring as triggers_wiring
from tests.integration import aws_fixtures
from tests.integration.aws_fixtures import REGION, RUNS_TABLE, create_runs_table

ROOT = Path(__file__).resolve().parents[2]
ACCOUNT = "123456789012"
WORKFLOWS_TABLE = "pennflow-workflows"
IDEMPOTENCY_TABLE = "pennflow-idempotency"
CALLER = f"arn:aws:iam::{ACCOUNT}:user/scientist"
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
}
ENVIRONMENT = {
    "PENNFLOW_NODE_NAME": "pennflow",
    "RUNS_TABLE": RUNS_TABLE,
    "WORKFLOWS_TABLE": WORKFLOWS_TABLE,
    "IDEMPOTENCY_TABLE": IDEMPOTENCY_TABLE,
    "STATE_MACHINE_PREFIX": "pennflow-api_",  # as the stack sets it for the API
    "STATE_MACHINE_ROLE_ARN": f"arn:aws:iam::{ACCOUNT}:role/pennflow-state-machine",
    "STATE_MACHINE_LOG_GROUP_ARN": f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:pennflow-state-machines",
    "PREPARE_FUNCTION_NAME": "pennflow-prepare",
    "CANCEL_FUNCTION_NAME": "pennflow-cancel",
    "POWERTOOLS_SERVICE_NAME": "pennflow-api",
    "POWERTOOLS_METRICS_NAMESPACE": "pennflow",
    "POWERTOOLS_TRACE_DISABLED": "true",
    # The processor registry (stacks/processors.py): table, build project, app.yml bucket, ECR repository.
    "PROCESSORS_TABLE": "pennflow-processors",
    "PROCESSOR_BUILD_PROJECT": "pennflow-processor-builds",
    "PROCESSOR_MANIFEST_BUCKET": "pennflow-results",
    "PROCESSOR_REPOSITORY_URI": f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/pennflow-processors",
}


def event(
    method: str,
    path: str,
    *,
    body: Any = None,
    raw: str | None = None,
    headers: Mapping[str, str] | None = None,
    query: Mapping[str, str | list[str]] | None = None,
    base64_body: bool = False,
    caller: str = CALLER,
) -> dict[str, Any]:
    """An API Gateway REST proxy event (resource ``/{proxy+}``) as the API Lambda receives it."""
    text = raw if raw is not None else (None if body is None else json.dumps(body))
    if base64_body and text is not None:
        text = base64.b64encode(text.encode()).decode()
    all_headers = {"Host": "abc123.execute-api.us-east-1.amazonaws.com"}
    if text is not None:
        all_headers["Content-Type"] = "application/json"
    all_headers.update(headers or {})
    multi_query = {k: v if isinstance(v, list) else [v] for k, v in (query or {}).items()}
    return {
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": method,
        "headers": all_headers,
        "multiValueHeaders": {k: [v] for k, v in all_headers.items()},
        "queryStringParameters": {k: v[-1] for k, v in multi_query.items()} or None,
        "multiValueQueryStringParameters": multi_query or None,
        "pathParameters": {"proxy": path.lstrip("/")},
        "stageVariables": None,
        "requestContext": {
            "accountId": ACCOUNT,
            "apiId": "abc123",
            "resourceId": "proxy",
            "resourcePath": "/{proxy+}",
            "httpMethod": method,
            "path": f"/v1{path}",
            "stage": "v1",
            "requestId": "req-0001",
            "identity": {"userArn": caller, "caller": caller.rsplit("/", 1)[-1], "accountId": ACCOUNT},
        },
        "body": text,
        "isBase64Encoded": base64_body,
    }


@dataclass
class LambdaContext:
    function_name: str = "pennflow-api"
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:pennflow-api"
    aws_request_id: str = "lambda-req-1"

    def get_remaining_time_in_millis(self) -> int:
        return 29_000


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str]

    @property
    def error(self) -> dict[str, Any]:
        return self.body["error"]

    def fields(self) -> set[tuple[str, str]]:
        return {(f["in"], f["field"]) for f in self.error.get("fields", [])}


@dataclass
class Handoffs:
    """Fake launcher/canceller: records the run ids handed to the prepare/cancel Lambdas."""

    run_ids: list[str] = field(default_factory=list)
    fail_with: Exception | None = None

    def launch(self, run_id: str) -> None:
        if self.fail_with:
            raise self.fail_with
        self.run_ids.append(run_id)

    cancel = launch


@dataclass
class Api:
    launcher: Handoffs
    canceller: Handoffs

    def __call__(self, method: str, path: str, **kwargs: Any) -> Reply:
        from lambdas import api

        response = api.handler(event(method, path, **kwargs), LambdaContext())
        body = response.get("body")
        if response.get("isBase64Encoded"):
            body = base64.b64decode(body).decode()
        headers = {k.lower(): v[-1] for k, v in (response.get("multiValueHeaders") or {}).items()}
        headers.update({k.lower(): v for k, v in (response.get("headers") or {}).items()})
        return Reply(response["statusCode"], json.loads(body) if body else None, headers)

    @property
    def store(self):
        from lambdas import api

        return api.run_store()

    def register(self, definition: Mapping[str, Any]) -> Reply:
        reply = self("POST", "/workflows", body=definition)
        assert reply.status in (200, 201), reply.body
        return reply

    def start(self, workflow: str = "tiny", **fields: Any) -> Reply:
        return self("POST", "/runs", body={"workflow": workflow, **fields})


def tiny(name: str = "tiny", **changes: Any) -> dict[str, Any]:
    """A small valid definition: source -> work (declares WINDOW, MODE) -> target."""
    work = {
        "id": "work",
        "image": "example/work:1",
        "dependsOn": ["source"],
        "defaultParams": {"WINDOW": "30", "MODE": "fast"},
    }
    work.update(changes)
    return {
        "name": name,
        "processors": [
            {"id": "source", "type": "data-source"},
            work,
            {"id": "target", "type": "data-target", "targetType": "s3", "dependsOn": ["work"]},
        ],
    }


def create_workflows_table() -> None:
    boto3.client("dynamodb", region_name=REGION).create_table(
        TableName=WORKFLOWS_TABLE,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "name", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "name", "KeyType": "HASH"}],
    )


def create_processor_registry() -> None:
    """The processor registry's table, bucket, ECR repository and CodeBuild project, on moto."""
    boto3.client("dynamodb", region_name=REGION).create_table(
        TableName=ENVIRONMENT["PROCESSORS_TABLE"],
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "processor_key", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "processor_key", "KeyType": "HASH"}],
    )
    boto3.client("s3", region_name=REGION).create_bucket(Bucket=ENVIRONMENT["PROCESSOR_MANIFEST_BUCKET"])
    boto3.client("ecr", region_name=REGION).create_repository(
        repositoryName="pennflow-processors",
        imageTagMutability="IMMUTABLE",
        imageScanningConfiguration={"scanOnPush": True},
    )
    role = boto3.client("iam", region_name=REGION).create_role(
        RoleName="pennflow-processor-builds", AssumeRolePolicyDocument="{}"
    )["Role"]["Arn"]
    boto3.client("codebuild", region_name=REGION).create_project(
        name=ENVIRONMENT["PROCESSOR_BUILD_PROJECT"],
        source={"type": "NO_SOURCE", "location": "none", "buildspec": "version: 0.2"},
        artifacts={"type": "NO_ARTIFACTS"},
        environment={
            "type": "LINUX_CONTAINER",
            "image": "aws/codebuild/standard:7.0",
            "computeType": "BUILD_GENERAL1_SMALL",
            "privilegedMode": True,
        },
        serviceRole=role,
    )


def finish_builds(digest: str = "sha256:" + "cd" * 32) -> None:
    """Every BUILDING processor READY, as the build-state event of a successful build makes it."""
    from pennflow.processors.registry import ProcessorStatus

    registry = processors_api.configured_processors().registry
    for record in registry.list():
        if record.status is ProcessorStatus.BUILDING:
            uri = ENVIRONMENT["PROCESSOR_REPOSITORY_URI"]
            registry.finish(
                record.processor_key,
                record.build_id,
                status=ProcessorStatus.READY,
                image_digest=digest,
                image_uri=uri,
            )


def create_idempotency_table() -> None:
    boto3.client("dynamodb", region_name=REGION).create_table(
        TableName=IDEMPOTENCY_TABLE,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
    )


mocked_aws = aws_fixtures.mocked_aws


@pytest.fixture
def api(mocked_aws: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Api]:
    """A fresh node per test."""
    yield from _node(monkeypatch)


@pytest.fixture(scope="module")
def shared_api() -> Iterator[Api]:
    """One node for a whole module, for tests that only read it (malformed requests)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        for name, value in FAKE_CREDENTIALS.items():
            monkeypatch.setenv(name, value)
        aws.reset_clients()
        with mock_aws():
            yield from _node(monkeypatch)
        aws.reset_clients()


def _node(monkeypatch: pytest.MonkeyPatch) -> Iterator[Api]:
    from lambdas import api as module

    for name, value in ENVIRONMENT.items():
        monkeypatch.setenv(name, value)
    create_runs_table()
    create_workflows_table()
    create_idempotency_table()
    create_processor_registry()
    forget_ports(module)
    client = Api(launcher=Handoffs(), canceller=Handoffs())
    module.app.dependency_overrides[module.run_launcher] = lambda: client.launcher
    module.app.dependency_overrides[module.run_canceller] = lambda: client.canceller
    yield client
    module.app.dependency_overrides.clear()
    forget_ports(module)


def forget_ports(module: Any) -> None:
    for factory in (
        module.settings,
        module.run_store,
        module.workflow_registry,
        module.run_launcher,
        module.run_canceller,
        module.run_resumer,
        module.idempotency,
        module.run_planning,
        module.run_log_source,
        module.result_bucket,
        triggers_api.trigger_store,
        triggers_api.workflow_lookup,
        layers_api.layer_registry,
        layers_api.layer_jobs,
        layers_api.layer_prices,
        notebooks_api.session_settings,
        notebooks_api.session_handoff,
        notebooks_api.session_store,
        notebooks_api.session_tasks,
        processors_api.configured_processors,
    ):
        factory.cache_clear()
    triggers_wiring.reset()
