"""``pennflow resume RUN --remote``: a signed POST /runs/{id}/resume to the node, its answer printed,
its refusal an error with exit 2 (against the signature-checking server of test_remote)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from pennflow.cli import app
from tests.unit import test_remote

node = test_remote.node
signed_env = test_remote.signed_env


def test_remote_resume_posts_a_signed_request_and_prints_the_attempt(node, signed_env) -> None:
    fake, url = node
    fake.answer(
        "POST",
        "/runs/r-7/resume",
        (202, {"runId": "r-7", "status": "STARTED", "attempt": 2, "reused": ["a", "b"]}),
    )

    result = CliRunner().invoke(app, ["resume", "r-7", "--node-url", url])

    assert result.exit_code == 0, result.output
    assert "run r-7 resumed (attempt 2): STARTED" in result.output
    assert "not run again (SUCCEEDED before): a, b" in result.output
    (request,) = fake.requests
    assert request["method"] == "POST" and request["path"] == "/v1/runs/r-7/resume"
    assert request["valid"] and json.loads(request["body"]) == {}


def test_remote_resume_json_is_the_node_s_answer(node, signed_env) -> None:
    fake, url = node
    answer = {"runId": "r-7", "status": "STARTED", "attempt": 3, "reused": []}
    fake.answer("POST", "/runs/r-7/resume", (202, answer))
    result = CliRunner().invoke(app, ["resume", "r-7", "--remote", "--node-url", url, "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout) == answer


def test_a_refusal_is_an_error_with_exit_2(node, signed_env) -> None:
    fake, url = node
    message = "run r-7 no longer holds its slot: start a new run instead"
    fake.answer(
        "POST", "/runs/r-7/resume", (409, {"error": {"code": "conflict", "message": message, "fields": []}})
    )
    result = CliRunner().invoke(app, ["resume", "r-7", "--node-url", url])
    assert result.exit_code == 2
    assert f"error: {message}" in result.output and "Traceback" not in result.output
