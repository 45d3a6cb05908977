"""Oversized and deep requests are refused at the edge (413/422 naming the limit), never a 5xx."""

from __future__ import annotations

import json
import random

import pytest

from pennflow.api.requests import MAX_BODY_BYTES, MAX_JSON_DEPTH
from pennflow.workflow import asl
from pennflow.workflow.limits import MAX_PROCESSORS
from tests.integration import api_support
from tests.integration.api_support import Api, Reply, tiny

shared_api = api_support.shared_api


@pytest.fixture(scope="module")
def node(shared_api: Api) -> Api:
    shared_api.register(tiny())
    return shared_api


@pytest.fixture
def no_compiling(monkeypatch: pytest.MonkeyPatch) -> None:
    """A refusal at the edge comes before the compiler: reaching it fails the test."""

    def compile_to_json(*args, **kwargs):
        raise AssertionError("the definition reached the compiler")

    monkeypatch.setattr(asl, "compile_to_json", compile_to_json)


def chain(length: int, id_prefix: str = "p") -> dict:
    processors = [{"id": "source", "type": "data-source"}]
    for i in range(length):
        processors.append({"id": f"{id_prefix}{i}", "image": "w:1", "dependsOn": [processors[-1]["id"]]})
    return {"name": "big", "processors": processors}


def random_dag(size: int, seed: int = 1) -> dict:
    """Each processor depends on up to 3 of the 20 before it (the shape that made the compiler recurse)."""
    rng = random.Random(seed)
    ids = ["s"]
    processors = [{"id": "s", "type": "data-source"}]
    for i in range(size):
        window = ids[-20:]
        deps = rng.sample(window, min(len(window), rng.randint(1, 3)))
        processors.append({"id": f"p{i}", "image": "w:1", "dependsOn": deps})
        ids.append(f"p{i}")
    return {"name": "big", "processors": processors}


def assert_refused(reply: Reply, status: int, code: str, *named: str) -> None:
    assert reply.status == status, reply.body
    assert reply.error["code"] == code, reply.body
    text = json.dumps(reply.error)
    for limit in named:
        assert limit in text, (limit, reply.error)


@pytest.mark.parametrize("definition", [random_dag(4000), chain(1500)], ids=["4000-node DAG", "1500 chain"])
def test_too_many_processors_are_refused_naming_the_limit(node: Api, no_compiling: None, definition) -> None:
    assert len(json.dumps(definition)) <= MAX_BODY_BYTES  # the processor limit, not the size, refuses them
    reply = node("POST", "/workflows", body=definition)
    assert_refused(reply, 422, "invalid_definition", f"at most {MAX_PROCESSORS:,}")
    assert ("body", "processors") in reply.fields()
    assert f"{len(definition['processors']):,} processors" in reply.error["fields"][0]["message"]


def test_a_workflow_at_the_limit_is_registered(node: Api) -> None:
    reply = node("POST", "/workflows", body=chain(MAX_PROCESSORS - 1))
    assert reply.status == 201, reply.body
    assert len(reply.body["definition"]["processors"]) == MAX_PROCESSORS


def test_a_definition_over_the_body_limit_is_413_naming_it(node: Api, no_compiling: None) -> None:
    definition = chain(4000, id_prefix="processor-")
    assert len(json.dumps(definition)) > MAX_BODY_BYTES
    reply = node("POST", "/workflows", body=definition)
    assert_refused(reply, 413, "payload_too_large", f"{MAX_BODY_BYTES:,} bytes", "256 KiB")


def nested(depth: int) -> dict:
    value: dict = {}
    for _ in range(depth - 1):
        value = {"x": value}
    return value


@pytest.mark.parametrize("path", ["/workflows", "/runs", "/triggers", "/layers"])
@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 900, 5000])
def test_bodies_nested_past_the_limit_are_422_naming_it(node: Api, path: str, depth: int) -> None:
    raw = '{"x":' * (depth - 1) + "{}" + "}" * (depth - 1)  # built as text: json.dumps recurses too
    reply = node("POST", path, raw=raw)
    assert_refused(reply, 422, "too_deep", f"more than {MAX_JSON_DEPTH} levels")
    assert ("body", "body") in reply.fields()


def test_a_body_too_deep_for_the_parser_is_refused_the_same_way(node: Api) -> None:
    reply = node("POST", "/runs", raw="[" * 100_000)  # unclosed too: the depth is what stops the parser
    assert_refused(reply, 422, "too_deep", f"more than {MAX_JSON_DEPTH} levels")


def test_a_body_at_the_nesting_limit_is_read(node: Api) -> None:
    # body (1) > processors (2) > a processor (3) > its position, an open object the format ignores
    definition = {**tiny("deep", position=nested(MAX_JSON_DEPTH - 3)), "summary": None}
    reply = node("POST", "/workflows", body=definition)
    assert reply.status == 201, reply.body


def test_recursion_in_route_logic_is_a_4xx_not_a_500(node: Api) -> None:
    from lambdas import api as module

    class BottomlessRegistry:
        def register(self, workflow):
            raise RecursionError("maximum recursion depth exceeded")

    module.app.dependency_overrides[module.workflow_registry] = BottomlessRegistry
    try:
        reply = node("POST", "/workflows", body=tiny("bottomless"))
    finally:
        del module.app.dependency_overrides[module.workflow_registry]
    assert_refused(reply, 422, "too_complex", f"at most {MAX_PROCESSORS:,} processors")
    assert "recursion" not in json.dumps(reply.body).lower()  # no internals in the answer


def test_the_readme_states_the_limits_the_code_enforces() -> None:
    text = " ".join((api_support.ROOT / "README.md").read_text().split())
    assert f"workflows of at most {MAX_PROCESSORS:,} processors" in text
    assert f"at most {MAX_BODY_BYTES // 1024} KiB nested at most {MAX_JSON_DEPTH} levels" in text
