"""POST /workflows takes every Pennsieve shape unchanged, and answers hostile bodies with a 4xx."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pennflow.workflow.definition import load_definition, validate_definition
from tests.integration import api_support
from tests.integration.api_support import Api

api = api_support.api
mocked_aws = api_support.mocked_aws

FIXTURES = Path(__file__).parents[1] / "fixtures" / "pennsieve"
ALL = sorted(FIXTURES.glob("*.json"))
NESTED: list = []
for _ in range(40):
    NESTED = [NESTED]


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.stem)
def test_each_pennsieve_shape_registers(api: Api, path: Path) -> None:
    expected = load_definition(path)
    reply = api("POST", "/workflows", body=json.loads(path.read_text()))

    if any(p.interactive for p in expected.processors):  # a notebook session: no state machine runs it
        assert reply.status == 422, reply.body
        assert reply.body["error"]["code"] == "cannot_compile"
        assert "is interactive (a notebook session)" in reply.body["error"]["message"]
        assert "the node's `interactive` setting" in reply.body["error"]["message"]
        return
    assert reply.status == 201, reply.body
    assert reply.body["name"] == expected.name
    stored = reply.body["definition"]
    assert stored.get("displayName") == expected.display_name
    # What is stored reads back to the same workflow (names and ids already resource-safe).
    assert validate_definition(stored).definition_hash() == expected.definition_hash()


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (
            {"name": "wf", "processors": [{"id": "a", "image": "i", "defaultParam": {}}]},
            "did you mean defaultParams",
        ),
        ({"name": "wf", "processors": [{"id": "a", "image": "i", "defaultParams": {"FOO\n": "x"}}]}, "FOO"),
        (
            {"name": "wf", "processors": [{"id": "a", "image": "i", "defaultParams": {"K": NESTED}}]},
            "too_deep",  # refused at the API edge (MAX_JSON_DEPTH), before the loader
        ),
    ],
)
def test_hostile_bodies_are_4xx(api: Api, body, fragment) -> None:
    reply = api("POST", "/workflows", body=body)
    assert 400 <= reply.status < 500
    assert fragment in json.dumps(reply.body)


def test_a_repeated_key_in_the_body_is_400_not_silently_dropped(api: Api) -> None:
    raw = '{"name": "wf", "name": "other", "processors": [{"id": "a", "image": "i"}]}'
    reply = api("POST", "/workflows", raw=raw)
    assert reply.status == 400
    assert "duplicate key 'name'" in json.dumps(reply.body)


def test_a_run_of_a_layer_target_without_layer_name_must_pass_it(api: Api) -> None:
    name = api.register(json.loads((FIXTURES / "build-python-env.json").read_text())).body["name"]
    api_support.finish_builds()  # its sourceUrl processors, registered with it, are built

    refused = api.start(name)
    assert refused.status == 400
    assert "layerName: none given" in json.dumps(refused.body)
    bad = api.start(name, params={"layerName": "lay\n"})
    assert bad.status == 400 and "not a valid layer name" in json.dumps(bad.body)
    accepted = api.start(name, params={"layerName": "py-env"})
    assert accepted.status == 202, accepted.body
    assert api.store.get_run(accepted.body["runId"]).params["environment-layer"] == {"layerName": "py-env"}


def test_a_run_whose_params_overflow_the_ecs_override_is_400(api: Api) -> None:
    definition = {
        "name": "long",
        "processors": [{"id": "a", "image": "i", "defaultParams": {f"P{i}": "v" for i in range(3)}}],
    }
    api.register(definition)
    reply = api.start("long", params={f"P{i}": "v" * 4096 for i in range(3)})
    assert reply.status == 400
    assert "8192" in json.dumps(reply.body)
