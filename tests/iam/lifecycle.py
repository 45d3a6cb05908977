"""Driving the node's functions the way AWS does: the API's REST events, the asynchronous
invocations it makes, and the events Step Functions and ECS send, each function with its own role."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from tests.iam.moto_node import IamNode
from tests.integration.api_support import event, tiny


@dataclass
class Reply:
    status: int
    body: Any


def call_api(node: IamNode, method: str, path: str, **kwargs: Any) -> Reply:
    response = node.invoke("pennflow-api", event(method, path, **kwargs))
    body = response.get("body")
    if response.get("isBase64Encoded"):
        body = base64.b64decode(body).decode()
    return Reply(response["statusCode"], json.loads(body) if body else None)


def register(node: IamNode, definition: dict[str, Any]) -> Reply:
    reply = call_api(node, "POST", "/workflows", body=definition)
    assert reply.status in (200, 201), reply.body
    return reply


def start_run(node: IamNode, workflow: str, **fields: Any) -> str:
    """POST /runs, then the prepare invocation the API handed off, as Lambda delivers it."""
    reply = call_api(node, "POST", "/runs", body={"workflow": workflow, **fields})
    assert reply.status == 202, reply.body
    run_id = reply.body["runId"]
    deliver(node, "pennflow-prepare")
    return run_id


def deliver(node: IamNode, function: str) -> list[Any]:
    """Run the asynchronous invocations of ``function`` made so far (each with its own role)."""
    pending = [i for i in node.invocations if i.function == function]
    node.invocations[:] = [i for i in node.invocations if i.function != function]
    return [node.invoke(function, i.payload) for i in pending]


def scattered(name: str = "scattered") -> dict[str, Any]:
    definition = tiny(name)
    definition["processors"][1]["scatter"] = {"over": "files", "batchSize": 2}
    return definition


__all__ = ["Reply", "call_api", "deliver", "register", "scattered", "start_run", "tiny"]
