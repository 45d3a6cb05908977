"""Schemathesis fuzzes every route of the API handler, in-process on moto, against the OpenAPI document.

Each operation gets generated requests (valid and invalid) and each answer must be no 5xx, a status
the document lists for that route, and a body that matches the schema it gives for that status.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import boto3
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from lambdas.api import openapi_json
from pennflow.api import layers as layers_api
from pennflow.layers.dynamodb import PK as LAYERS_PK
from pennflow.triggers.store import table_definitions
from tests.integration import api_support
from tests.integration.api_support import REGION, Api, tiny
from tests.integration.api_wsgi import handler_app

shared_api = api_support.shared_api

# Not positive_data_acceptance: a schema-valid body may still be refused with a 4xx naming the field
# (a definition's graph, a cursor this API never issued, maxWaitSeconds below debounceSeconds), which
# JSON Schema cannot express. Every other answer is held to the document.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
# Per operation: about 1,000 requests to the handler in 30-40 s; set it higher for a deeper run.
EXAMPLES = int(os.environ.get("PENNFLOW_FUZZ_EXAMPLES", "30"))


def handler_document() -> dict:
    """The document without its SigV4 requirement: API Gateway checks signatures before the handler runs."""
    document = json.loads(openapi_json())
    document.pop("security")
    document["components"].pop("securitySchemes")
    return document


schema = schemathesis.openapi.from_dict(handler_document())
schema.app = handler_app


@dataclass
class LayerJobs:
    """Records the jobs the layer routes hand off (the real port invokes another Lambda)."""

    started: list[tuple[str, str]] = field(default_factory=list)

    def build(self, record, version) -> None:
        self.started.append(("build", record.name))

    def populate(self, record, version, dataset_id, package_ids) -> None:
        self.started.append(("populate", record.name))

    def remove(self, record) -> None:
        self.started.append(("remove", record.name))


@pytest.fixture(scope="module")
def node(shared_api: Api) -> Iterator[Api]:
    """The whole node's API: workflows and runs (api_support), plus the layers and triggers tables."""
    from lambdas import api as module

    dynamodb = boto3.client("dynamodb", region_name=REGION)
    dynamodb.create_table(
        TableName="pennflow-layers",
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": LAYERS_PK, "AttributeType": "S"}],
        KeySchema=[{"AttributeName": LAYERS_PK, "KeyType": "HASH"}],
    )
    for request in table_definitions("pennflow-triggers", "pennflow-trigger-state"):
        dynamodb.create_table(**request)
    for bucket in ("pennflow-log-archive", "pennflow-results"):  # a run's logs and results
        boto3.client("s3", region_name=REGION).create_bucket(Bucket=bucket)
    boto3.client("logs", region_name=REGION).create_log_group(logGroupName="pennflow-processors")
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv(layers_api.ENV_TABLE, "pennflow-layers")
        monkeypatch.setenv("TRIGGERS_TABLE", "pennflow-triggers")
        monkeypatch.setenv("TRIGGER_STATE_TABLE", "pennflow-trigger-state")
        monkeypatch.setenv("LOG_ARCHIVE_BUCKET", "pennflow-log-archive")
        monkeypatch.setenv("RESULTS_BUCKET", "pennflow-results")
        monkeypatch.setenv("PROCESSOR_LOG_GROUP", "pennflow-processors")
        api_support.forget_ports(module)
        module.app.dependency_overrides[layers_api.layer_jobs] = LayerJobs
        shared_api.register(tiny())
        accepted = shared_api.start()
        assert accepted.status == 202, accepted.body
        yield shared_api
        api_support.forget_ports(module)


# One pytest item per operation, each with its own id: schemathesis' own parametrize gives all its
# items one node id, and pytest-xdist then runs only one of them.
OPERATIONS = [result.ok() for result in schema.get_all_operations()]


@pytest.mark.parametrize("operation", OPERATIONS, ids=[op.label for op in OPERATIONS])
def test_generated_requests_get_documented_answers_and_never_a_5xx(node: Api, operation) -> None:
    @given(case=operation.as_strategy())
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
    def fuzz(case) -> None:
        case.call_and_validate(checks=CHECKS)

    fuzz()


def test_every_operation_of_the_document_is_fuzzed() -> None:
    paths = handler_document()["paths"]
    documented = {
        f"{method.upper()} {path}"
        for path, item in paths.items()
        for method in item
        if method != "parameters"
    }
    assert {op.label for op in OPERATIONS} == documented
