"""The OpenAPI document: generated from the routes, committed in docs/, and true to the responses."""

from __future__ import annotations

import json

import jsonschema
import pytest

from lambdas.api import openapi_json
from scripts import export_openapi
from tests.integration import api_support
from tests.integration.api_support import ROOT, Api, Reply, tiny

api = api_support.api
mocked_aws = api_support.mocked_aws

COMMITTED = ROOT / "docs" / "openapi.json"


@pytest.fixture(scope="module")
def document() -> dict:
    return json.loads(openapi_json())


def test_the_committed_document_matches_the_code() -> None:
    assert COMMITTED.read_text() == export_openapi.document(), "run: python scripts/export_openapi.py"
    assert export_openapi.main(["--check"]) == 0


def test_every_route_is_documented_with_its_error_shape(document: dict) -> None:
    operations = {(method.upper(), path) for path, ops in document["paths"].items() for method in ops}
    assert operations == {
        ("POST", "/workflows"),
        ("GET", "/workflows"),
        ("GET", "/workflows/{name}"),
        ("POST", "/runs"),
        ("GET", "/runs"),
        ("GET", "/runs/{run_id}"),
        ("POST", "/runs/{run_id}/cancel"),
        ("POST", "/runs/{run_id}/rerun"),
        ("GET", "/layers"),
        ("POST", "/layers"),
        ("GET", "/layers/{name}"),
        ("POST", "/layers/{name}/build"),
        ("POST", "/layers/{name}/populate"),
        ("DELETE", "/layers/{name}"),
        ("POST", "/triggers"),
        ("GET", "/triggers"),
        ("GET", "/triggers/{rule_id}"),
        ("DELETE", "/triggers/{rule_id}"),
    }
    for path, ops in document["paths"].items():
        for method, operation in ops.items():
            for status, response in operation["responses"].items():
                if 400 <= int(status) < 500:
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (method, path, status)
    assert document["security"] == [{"sigv4": []}]


def conforms(document: dict, reply: Reply, method: str, path: str) -> None:
    """The reply's body validates against the schema the document gives for its status."""
    schema = document["paths"][path][method]["responses"][str(reply.status)]["content"]["application/json"][
        "schema"
    ]
    jsonschema.validate(reply.body, {**schema, "components": document["components"]})


def test_real_responses_conform_to_the_document(api: Api, document: dict) -> None:
    conforms(document, api("POST", "/workflows", body=tiny()), "post", "/workflows")
    conforms(document, api("POST", "/workflows", body={"name": "x", "processors": []}), "post", "/workflows")
    conforms(document, api("GET", "/workflows"), "get", "/workflows")
    conforms(document, api("GET", "/workflows/tiny"), "get", "/workflows/{name}")
    accepted = api.start(params={"WINDOW": "1"})
    conforms(document, accepted, "post", "/runs")
    conforms(document, api.start(dryRun=True), "post", "/runs")
    conforms(document, api.start(params={"NOPE": "1"}), "post", "/runs")
    conforms(document, api("GET", "/runs", query={"limit": "1"}), "get", "/runs")
    run_id = accepted.body["runId"]
    conforms(document, api("GET", f"/runs/{run_id}"), "get", "/runs/{run_id}")
    conforms(document, api("POST", f"/runs/{run_id}/rerun"), "post", "/runs/{run_id}/rerun")
    conforms(document, api("POST", f"/runs/{run_id}/cancel"), "post", "/runs/{run_id}/cancel")
    conforms(document, api("GET", "/runs/r-none-00000000"), "get", "/runs/{run_id}")
