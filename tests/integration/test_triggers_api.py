"""The trigger rule routes (POST/GET/DELETE /triggers) on moto, behind a resolver set up as the
node's API is: the same JSON parser, preflight checks and error handlers (those of ``lambdas.api``).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.event_handler import APIGatewayRestResolver
from aws_lambda_powertools.event_handler.exceptions import ServiceError
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pennflow.api.errors import ApiError
from pennflow.api.requests import json_body, preflight
from pennflow.triggers import api as triggers_api
from pennflow.triggers import wiring
from pennflow.triggers.models import PendingWindow
from pennflow.triggers.store import table_definitions
from tests.integration import api_support
from tests.integration.api_support import Api, LambdaContext, Reply, tiny
from tests.integration.aws_fixtures import REGION

api = api_support.api
mocked_aws = api_support.mocked_aws

DATASET = "N:dataset:6f1c0a52-3d3b-4a4e-9a57-0d9d3f7a1c11"
OTHER = "N:dataset:0b5e3d6e-9d7c-4f4b-8f0e-5f6a7b8c9d0e"


def node_resolver() -> APIGatewayRestResolver:
    """A resolver like ``lambdas.api.app``, with the triggers router included as the node includes it."""
    from lambdas import api as node_api

    resolver = APIGatewayRestResolver(enable_validation=True, json_body_deserializer=json_body)
    resolver.include_router(triggers_api.router, prefix="/triggers")
    for exc_class, handler in (
        (ApiError, node_api.api_error),
        (RequestValidationError, node_api.invalid_request),
        (RequestUnsupportedContentType, node_api.unsupported_content_type),
        (ServiceError, node_api.service_error),
        (Exception, node_api.unexpected),
    ):
        resolver.exception_handler(exc_class)(handler)
    return resolver


class Triggers:
    def __init__(self, api: Api):
        self.api = api
        self.resolver = node_resolver()

    def __call__(self, method: str, path: str, **kwargs: Any) -> Reply:
        event = api_support.event(method, path, **kwargs)
        refused = preflight(event)
        if refused is not None:
            return Reply(refused.status, refused.body(), {})
        response = self.resolver.resolve(event, LambdaContext())
        body = response.get("body")
        if response.get("isBase64Encoded"):
            body = base64.b64decode(body).decode()
        return Reply(response["statusCode"], json.loads(body) if body else None, {})

    def create(self, **fields: Any) -> Reply:
        return self("POST", "/triggers", body={"datasetId": DATASET, "workflow": "tiny", **fields})


@pytest.fixture
def triggers(api: Api, monkeypatch: pytest.MonkeyPatch) -> Iterator[Triggers]:
    api.register(tiny())
    for request in table_definitions("pennflow-triggers", "pennflow-trigger-state"):
        boto3.client("dynamodb", region_name=REGION).create_table(**request)
    monkeypatch.setenv("TRIGGERS_TABLE", "pennflow-triggers")
    monkeypatch.setenv("TRIGGER_STATE_TABLE", "pennflow-trigger-state")
    wiring.reset()
    triggers_api.trigger_store.cache_clear()
    triggers_api.workflow_lookup.cache_clear()
    yield Triggers(api)
    wiring.reset()
    triggers_api.trigger_store.cache_clear()
    triggers_api.workflow_lookup.cache_clear()


def test_create_get_list_and_delete_a_rule(triggers: Triggers):
    created = triggers.create(fileGlob="*.edf", debounceSeconds=120, params={"WINDOW": "10"}, layers=["sci"])
    assert created.status == 201, created.body
    rule_id = created.body["ruleId"]
    assert created.body["createdBy"] == api_support.CALLER
    assert (created.body["fileGlob"], created.body["debounceSeconds"], created.body["enabled"]) == (
        "*.edf",
        120,
        True,
    )
    assert created.body["pending"] is None

    got = triggers("GET", f"/triggers/{rule_id}")
    assert got.status == 200 and got.body == created.body

    triggers.create(datasetId=OTHER)
    everything = triggers("GET", "/triggers")
    assert everything.status == 200 and len(everything.body["triggers"]) == 2
    mine = triggers("GET", "/triggers", query={"datasetId": DATASET})
    assert [t["ruleId"] for t in mine.body["triggers"]] == [rule_id]

    deleted = triggers("DELETE", f"/triggers/{rule_id}")
    assert deleted.status == 200 and deleted.body == {"ruleId": rule_id, "deleted": True}
    assert triggers("GET", f"/triggers/{rule_id}").status == 404
    again = triggers("DELETE", f"/triggers/{rule_id}")
    assert again.status == 404 and again.fields() == {("path", "rule_id")}


def test_a_rule_shows_its_open_window(triggers: Triggers):
    rule_id = triggers.create().body["ruleId"]
    window = PendingWindow(
        rule_id=rule_id,
        window_id="a" * 32,
        dataset_id=DATASET,
        opened_at=1_750_000_000,
        last_event_at=1_750_000_030,
        debounce_seconds=60,
        max_wait_seconds=3600,
        first_event_id="e1",
        event_count=3,
        file_count=7,
    )
    assert wiring.store().open_window(window)
    pending = triggers("GET", f"/triggers/{rule_id}").body["pending"]
    assert pending == {
        "windowId": "a" * 32,
        "openedAt": "2025-06-15T15:06:40Z",
        "firesAt": "2025-06-15T15:08:10Z",
        "events": 3,
        "files": 7,
    }


def test_listing_pages_with_a_cursor_and_refuses_a_forged_one(triggers: Triggers):
    for _ in range(3):
        triggers.create()
    first = triggers("GET", "/triggers", query={"limit": "2"})
    assert len(first.body["triggers"]) == 2 and first.body["cursor"]
    rest = triggers("GET", "/triggers", query={"limit": "2", "cursor": first.body["cursor"]})
    seen = {t["ruleId"] for t in first.body["triggers"] + rest.body["triggers"]}
    assert len(seen) == 3
    forged = triggers("GET", "/triggers", query={"cursor": "bm90IGEgY3Vyc29y"})
    assert forged.status == 400 and forged.fields() == {("query", "cursor")}


def test_an_unregistered_workflow_or_undeclared_param_is_refused_naming_the_field(triggers: Triggers):
    missing = triggers.create(workflow="nope")
    assert missing.status == 404 and missing.fields() == {("body", "workflow")}
    param = triggers.create(params={"WINDOWS": "10"})
    assert param.status == 400 and param.error["code"] == "unknown_param"
    assert param.fields() == {("body", "params.WINDOWS")}
    assert triggers("GET", "/triggers").body["triggers"] == []


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"datasetId": "N:dataset:1"}, "datasetId"),
        ({"debounceSeconds": 901}, "debounceSeconds"),
        ({"debounceSeconds": 0}, "debounceSeconds"),
        ({"debounceSeconds": 600, "maxWaitSeconds": 60}, "maxWaitSeconds"),
        ({"enabled": "true"}, "enabled"),
        ({"fileGlob": ""}, "fileGlob"),
        ({"workflowName": "tiny"}, "workflowName"),
    ],
)
def test_malformed_bodies_are_422_naming_the_field(triggers: Triggers, fields, field):
    reply = triggers.create(**fields)
    assert reply.status == 422, reply.body
    assert ("body", field) in reply.fields()


@pytest.mark.parametrize(
    ("kwargs", "status"),
    [
        ({"raw": "{not json"}, 400),
        ({"raw": "[]"}, 422),
        ({"raw": "null"}, 422),
        ({"raw": "{}", "headers": {"Content-Type": "text/plain"}}, 415),
        ({"raw": '{"a":' * 10 + "1" + "}" * 10}, 422),
        ({"raw": json.dumps({"params": "x" * 300_000})}, 413),
    ],
)
def test_bodies_that_are_not_rule_objects_are_4xx_json(triggers: Triggers, kwargs, status):
    reply = triggers("POST", "/triggers", **kwargs)
    assert reply.status == status, reply.body
    assert reply.error["code"] and reply.error["message"]


def test_bad_ids_and_queries_are_422_naming_them(triggers: Triggers):
    assert triggers("GET", "/triggers/not-a-rule-id").fields() == {("path", "rule_id")}
    assert triggers("GET", "/triggers", query={"datasetId": "x"}).fields() == {("query", "datasetId")}
    assert triggers("GET", "/triggers", query={"limit": "0"}).fields() == {("query", "limit")}


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=16),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=16,
)
rule_like = st.fixed_dictionaries(
    {},
    optional={
        "datasetId": st.sampled_from([DATASET, "N:dataset:x", "", 7]),
        "workflow": st.sampled_from(["tiny", "nope", "", None]),
        "fileGlob": json_values,
        "debounceSeconds": json_values,
        "maxWaitSeconds": json_values,
        "params": json_values,
        "layers": json_values,
        "enabled": json_values,
        "scope": st.sampled_from(["uploads", "dataset", "x"]),
    },
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.one_of(json_values, rule_like, st.text(max_size=40)))
def test_junk_bodies_never_give_a_5xx(triggers: Triggers, body):
    raw = body if isinstance(body, str) else json.dumps(body)
    reply = triggers("POST", "/triggers", raw=raw)
    assert reply.status < 500, reply.body
    if reply.status >= 400:
        assert reply.error["code"] and reply.error["message"]


def test_the_routes_are_documented_in_the_openapi_document():
    document = json.loads(node_resolver().get_openapi_json_schema(title="t", version="1"))
    assert {"/triggers", "/triggers/{rule_id}"} <= set(document["paths"])
    create = document["paths"]["/triggers"]["post"]
    assert {"201", "404", "422"} <= set(create["responses"])
    assert "TriggerRuleRequest" in json.dumps(create["requestBody"])
