"""The OpenAPI document: generated from the routes, committed in docs/, and true to the responses."""

from __future__ import annotations

import json

import boto3
import jsonschema
import pytest

from lambdas.api import openapi_json
from pennflow.api import notebooks as notebooks_api
from pennflow.api.requests import MAX_BODY_BYTES, METHODS_WITH_BODY
from scripts import export_openapi
from tests.integration import api_support
from tests.integration.api_support import REGION, ROOT, Api, Reply, tiny

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
        ("POST", "/runs/{run_id}/resume"),
        ("GET", "/runs/{run_id}/logs"),
        ("GET", "/runs/{run_id}/results"),
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
        ("POST", "/processors"),
        ("GET", "/processors"),
        ("GET", "/processors/{processor_id}"),
        ("POST", "/notebooks"),
        ("GET", "/notebooks/layers"),
        ("GET", "/notebooks/{run_id}"),
        ("POST", "/notebooks/{run_id}/stop"),
    }
    for path, ops in document["paths"].items():
        for method, operation in ops.items():
            for status, response in operation["responses"].items():
                if int(status) >= 400:  # every error, 5xx too, is an ErrorBody
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


# ------------------------------------------------------------------ what every route may answer

PATH_SAMPLES = {
    "name": "tiny",
    "run_id": "r-none-00000000",
    "rule_id": "trg-" + "0" * 32,
    "processor_id": "thumbs-v1-00000000",
}


def operations(document: dict) -> list[tuple[str, str, str]]:
    """(method, documented path, a concrete path) for every operation."""
    found = []
    for path, ops in document["paths"].items():
        concrete = path
        for name, sample in PATH_SAMPLES.items():
            concrete = concrete.replace("{" + name + "}", sample)
        found += [(method, path, concrete) for method in ops]
    return found


def test_the_preflight_refusals_are_documented_on_every_route_with_a_body(api: Api, document: dict) -> None:
    api.register(tiny())
    oversize = "x" * (MAX_BODY_BYTES + 1)
    for method, path, concrete in operations(document):
        if method.upper() not in METHODS_WITH_BODY:
            continue
        for kwargs, status in (
            ({"raw": "workflow=tiny", "headers": {"Content-Type": "text/plain"}}, 415),
            ({"raw": json.dumps({"pad": oversize})}, 413),
        ):
            reply = api(method.upper(), concrete, **kwargs)
            assert reply.status == status, (method, path, reply.body)
            conforms(document, reply, method, path)


def test_an_internal_failure_is_documented_on_every_route(
    api: Api, document: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the node's tables gone, every route fails inside: a 500 ErrorBody, as documented."""
    monkeypatch.setenv("LAYERS_TABLE", "pennflow-layers-gone")
    monkeypatch.setenv("TRIGGERS_TABLE", "pennflow-triggers-gone")
    monkeypatch.setenv("TRIGGER_STATE_TABLE", "pennflow-trigger-state-gone")
    monkeypatch.setenv("LOG_ARCHIVE_BUCKET", "pennflow-logs-gone")
    monkeypatch.setenv("PROCESSOR_LOG_GROUP", "pennflow-processors-gone")
    monkeypatch.setenv("RESULTS_BUCKET", "pennflow-results-gone")
    for name, value in {
        "PROCESSORS_TABLE": "pennflow-processors-gone",
        "PROCESSOR_BUILD_PROJECT": "pennflow-builds-gone",
        "PROCESSOR_MANIFEST_BUCKET": "pennflow-results-gone",
        "PROCESSOR_REPOSITORY_URI": "123456789012.dkr.ecr.us-east-1.amazonaws.com/gone",
    }.items():
        monkeypatch.setenv(name, value)
    api_support.processors_api.configured_processors.cache_clear()
    # A node with sessions on, and the caller one of their users: the routes reach the tables too.
    monkeypatch.setenv("NOTEBOOKS_FUNCTION_NAME", "pennflow-notebooks")
    monkeypatch.setenv("NOTEBOOK_PRINCIPALS", api_support.CALLER)
    notebooks_api.session_settings.cache_clear()
    notebooks_api.session_store.cache_clear()
    dynamodb = boto3.client("dynamodb", region_name=REGION)
    for table in dynamodb.list_tables()["TableNames"]:
        dynamodb.delete_table(TableName=table)
    bodies = {
        ("post", "/workflows"): tiny(),
        ("post", "/runs"): {"workflow": "tiny"},
        ("post", "/layers"): {"name": "sci", "type": "data"},
        ("post", "/layers/{name}/populate"): {"datasetId": "N:dataset:1"},
        ("post", "/notebooks"): {},
        ("post", "/processors"): {"sourceUrl": "https://github.com/example/thumbs", "tag": "v1"},
        ("post", "/triggers"): {
            "datasetId": f"N:dataset:{'0' * 8}-{'0' * 4}-{'0' * 4}-{'0' * 4}-{'0' * 12}",
            "workflow": "tiny",
        },
    }
    for method, path, concrete in operations(document):
        body = bodies.get((method, path))
        reply = api(method.upper(), concrete, body=body)
        assert reply.status == 500, (method, path, reply.body)
        assert reply.error["code"] == "internal"
        conforms(document, reply, method, path)
