"""Malformed requests get a 4xx JSON error naming the field, never a 5xx (hypothesis for junk)."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pennflow.api.requests import MAX_BODY_BYTES
from tests.integration import api_support
from tests.integration.api_support import Api, Reply, tiny

shared_api = api_support.shared_api


@pytest.fixture(scope="module")
def node(shared_api: Api) -> Api:
    shared_api.register(tiny())
    return shared_api


def assert_error(reply: Reply, status: int, *fields: tuple[str, str]) -> None:
    assert reply.status == status, reply.body
    assert set(reply.body) == {"error"}
    assert reply.error["code"] and reply.error["message"]
    assert reply.error["requestId"] == "req-0001"
    assert set(fields) <= reply.fields(), reply.fields()


@pytest.mark.parametrize(
    ("body", "field", "status"),
    [
        ({}, "workflow", 422),
        ({"workflow": 7}, "workflow", 422),
        ({"workflow": "Tiny Workflow"}, "workflow", 422),
        ({"workflow": "tiny", "datasetID": "N:dataset:1"}, "datasetID", 422),
        ({"workflow": "tiny", "datasetId": "drop table"}, "datasetId", 422),
        ({"workflow": "tiny", "params": ["WINDOW=1"]}, "params", 422),
        ({"workflow": "tiny", "params": {"WINDOW": 10}}, "params.WINDOW", 422),
        ({"workflow": "tiny", "params": {"WINDOW": "x" * 5000}}, "params.WINDOW", 422),
        ({"workflow": "tiny", "params": {"bad key!": "1"}}, "params.bad key!", 422),
        ({"workflow": "tiny", "packageIds": "N:package:1"}, "packageIds", 422),
        ({"workflow": "tiny", "packageIds": ["N:package:1"] * 1001}, "packageIds", 422),
        ({"workflow": "tiny", "layers": ["Not A Layer"]}, "layers.0", 422),
        ({"workflow": "tiny", "force": "yes"}, "force", 422),
        ({"workflow": "tiny", "dryRun": 1}, "dryRun", 422),
        ([{"workflow": "tiny"}], "body", 422),
        ("tiny", "body", 422),
        (None, "body", 422),
    ],
)
def test_post_runs_names_the_field_at_fault(node: Api, body, field: str, status: int) -> None:
    reply = node("POST", "/runs", body=body)
    assert_error(reply, status, ("body", field))


def test_a_misspelt_field_gets_a_suggestion(node: Api) -> None:
    reply = node.start(datasetID="N:dataset:1")
    (field,) = reply.error["fields"]
    assert field["message"] == "unknown field; did you mean 'datasetId'?"


@pytest.mark.parametrize(
    ("raw", "position"),
    [('{"workflow": "tiny",', "20"), ("{'workflow': 'tiny'}", "1"), ("9" * 5000, "0")],
)
def test_bad_json_is_400_invalid_json(node: Api, raw: str, position: str) -> None:
    reply = node("POST", "/runs", raw=raw)
    assert_error(reply, 400, ("body", "body"))
    assert reply.error["code"] == "invalid_json"
    assert f"at character {position}" in reply.error["fields"][0]["message"]


def test_wrong_content_types_are_415(node: Api) -> None:
    for content_type in (
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ):
        reply = node("POST", "/runs", raw="workflow=tiny", headers={"Content-Type": content_type})
        assert_error(reply, 415, ("header", "Content-Type"))
    accepted = node(
        "POST",
        "/runs",
        body={"workflow": "tiny"},
        headers={"content-type": "application/json; charset=utf-8"},
    )
    assert accepted.status == 202


def test_oversize_bodies_are_413(node: Api) -> None:
    big = {"workflow": "tiny", "params": {"WINDOW": "x" * (MAX_BODY_BYTES + 1)}}
    assert_error(node("POST", "/runs", body=big), 413, ("body", "body"))
    assert_error(node("POST", "/workflows", body={"name": "x", "summary": "y" * MAX_BODY_BYTES}), 413)
    assert_error(node("POST", "/runs", body=big, base64_body=True), 413)


def test_base64_bodies_are_decoded_or_refused(node: Api) -> None:
    assert node("POST", "/runs", body={"workflow": "tiny"}, base64_body=True).status == 202
    broken = api_support.event("POST", "/runs", raw="@@@@")
    broken["isBase64Encoded"] = True
    from lambdas.api import handler

    response = handler(broken, api_support.LambdaContext())
    assert response["statusCode"] == 400 and "base64" in json.loads(response["body"])["error"]["message"]
    latin1 = api_support.event("POST", "/runs", raw=base64.b64encode(b'{"workflow": "\xff"}').decode())
    latin1["isBase64Encoded"] = True
    assert handler(latin1, api_support.LambdaContext())["statusCode"] == 400


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"status": "DONE"}, "status"),
        ({"workflow": "UPPER"}, "workflow"),
        ({"cursor": "c" * 3000}, "cursor"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"cursor": base64.urlsafe_b64encode(b'{"v": 1, "scope": "everything"}').decode()}, "cursor"),
    ],
)
def test_list_query_parameters_out_of_range(node: Api, query: dict, field: str) -> None:
    reply = node("GET", "/runs", query=query)
    assert reply.status in (400, 422), reply.body
    assert_error(reply, reply.status, ("query", field))


def test_idempotency_keys_are_checked(node: Api) -> None:
    for key in ("", "k" * 256, "has space"):
        reply = node("POST", "/runs", body={"workflow": "tiny"}, headers={"Idempotency-Key": key})
        assert_error(reply, 422, ("header", "Idempotency-Key"))


def test_unknown_routes_and_methods_are_404_json(node: Api) -> None:
    assert_error(node("GET", "/nowhere"), 404)
    assert_error(node("DELETE", "/runs"), 404)
    assert node("GET", "/nowhere").error["code"] == "no_route"


def test_an_unexpected_failure_is_500_with_the_request_id_only(node: Api) -> None:
    from lambdas import api as module

    def broken_store():
        raise RuntimeError("secret internals: /srv/code.py line 3")

    module.app.dependency_overrides[module.run_store] = broken_store
    try:
        reply = node("GET", "/runs")
    finally:
        del module.app.dependency_overrides[module.run_store]

    assert reply.status == 500
    assert reply.body == {
        "error": {
            "code": "internal",
            "message": "internal error; quote the request id when reporting it",
            "fields": [],
            "requestId": "req-0001",
        }
    }


# ------------------------------------------------------------------ junk bodies

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
run_fields = st.sampled_from(
    ["workflow", "datasetId", "packageIds", "params", "layers", "force", "dryRun", "extra"]
)
run_bodies = st.dictionaries(run_fields, json_values | st.just("tiny"), max_size=6)
definition_bodies = st.fixed_dictionaries(
    {"name": st.sampled_from(["junk", "Junk!", 3])},
    optional={
        "processors": st.lists(
            st.dictionaries(
                st.sampled_from(
                    ["id", "type", "image", "dependsOn", "cpu", "memory", "defaultParams", "scatter", "retry"]
                ),
                json_values,
                max_size=6,
            ),
            max_size=4,
        )
        | json_values
    },
)
raw_bodies = st.text(max_size=200) | st.binary(max_size=100).map(lambda b: b.decode("latin-1"))
JUNK = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@JUNK
@given(body=run_bodies)
def test_junk_run_bodies_never_reach_a_5xx(node: Api, body: dict) -> None:
    reply = node("POST", "/runs", body=body)
    assert reply.status < 500, reply.body
    if reply.status >= 400:
        assert reply.error["message"]
        assert reply.error["fields"], reply.body


@JUNK
@given(body=definition_bodies)
def test_junk_definitions_never_reach_a_5xx(node: Api, body: dict) -> None:
    reply = node("POST", "/workflows", body=body)
    assert reply.status < 500, reply.body
    if reply.status >= 400:
        assert reply.error["fields"], reply.body


@JUNK
@given(raw=raw_bodies, path=st.sampled_from(["/runs", "/workflows"]))
def test_junk_text_never_reaches_a_5xx(node: Api, raw: str, path: str) -> None:
    reply = node("POST", path, raw=raw)
    assert reply.status < 500, reply.body
    if reply.status >= 400:
        assert reply.error["message"]


@JUNK
@given(
    query=st.dictionaries(
        st.sampled_from(["workflow", "status", "limit", "cursor", "other"]), st.text(max_size=40), max_size=4
    ),
    run_id=st.text(min_size=1, max_size=90).filter(lambda s: "/" not in s and "?" not in s and "#" not in s),
)
def test_junk_paths_and_queries_never_reach_a_5xx(node: Api, query: dict, run_id: str) -> None:
    assert node("GET", "/runs", query=query).status < 500
    for method, suffix in (("GET", ""), ("POST", "/cancel"), ("POST", "/rerun")):
        reply = node(method, f"/runs/{run_id}{suffix}")
        assert reply.status < 500, (method, run_id, reply.body)
