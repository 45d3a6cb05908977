"""POST /runs/{id}/resume through the API Lambda (moto tables), the resume function's handler on a
moto node, and the synchronous hand-over between them (checked against the Lambda service model)."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber

from pennflow.api.errors import Unavailable
from pennflow.api.resume import ResumeFunction
from pennflow.workflow.runs import Status, ended_attempt, utcnow
from tests.integration import api_support, aws_fixtures
from tests.integration.api_support import Api, tiny
from tests.integration.aws_fixtures import REGION, MotoNode
from tests.integration.test_node_redrive import RETENTION_DAYS, StubbedSfn, failed_run, keeping

api = api_support.api
mocked_aws = api_support.mocked_aws


@dataclass
class FakeResumer:
    answer: dict[str, Any]
    run_ids: list[str] = field(default_factory=list)

    def resume(self, run_id: str) -> dict[str, Any]:
        self.run_ids.append(run_id)
        return self.answer


def with_resumer(answer: dict[str, Any]) -> FakeResumer:
    from lambdas import api as module

    resumer = FakeResumer(answer)
    module.app.dependency_overrides[module.run_resumer] = lambda: resumer
    return resumer


def started(api: Api) -> str:
    api.register(tiny())
    reply = api.start()
    assert reply.status == 202, reply.body
    return reply.body["runId"]


def test_resume_answers_202_with_the_attempt_and_the_reused_processors(api: Api) -> None:
    run_id = started(api)
    resumer = with_resumer({"runId": run_id, "status": "STARTED", "attempt": 2, "reused": ["source"]})

    reply = api("POST", f"/runs/{run_id}/resume", body={})

    assert reply.status == 202, reply.body
    assert reply.body == {"runId": run_id, "status": "STARTED", "attempt": 2, "reused": ["source"]}
    assert resumer.run_ids == [run_id]


def test_a_refused_resume_is_409_with_the_node_s_reason(api: Api) -> None:
    run_id = started(api)
    with_resumer({"runId": run_id, "refused": f"run {run_id} SUCCEEDED: there is nothing to resume"})

    reply = api("POST", f"/runs/{run_id}/resume", body={})

    assert reply.status == 409
    assert reply.error["message"] == f"run {run_id} SUCCEEDED: there is nothing to resume"


def test_an_unknown_run_is_404_and_never_reaches_the_node(api: Api) -> None:
    resumer = with_resumer({"status": "STARTED", "attempt": 2})
    reply = api("POST", "/runs/r-none-00000000/resume", body={})
    assert reply.status == 404 and reply.fields() == {("path", "run_id")}
    assert resumer.run_ids == []


def test_a_resume_with_params_is_422_and_never_reaches_the_node(api: Api) -> None:
    run_id = started(api)
    resumer = with_resumer({"runId": run_id, "status": "STARTED", "attempt": 2})
    reply = api("POST", f"/runs/{run_id}/resume", body={"params": {"convert": {"threshold": "3"}}})
    assert reply.status == 422 and reply.error["code"] == "resume_takes_no_body"
    assert "rerun" in reply.error["message"] and reply.fields() == {("body", "body")}
    assert resumer.run_ids == [], "nothing was resumed with the params dropped"


def test_get_run_shows_a_resumed_run_s_attempt_and_its_earlier_attempts(api: Api) -> None:
    run_id = started(api)
    store = api.store
    store.update_run(run_id, Status.STARTED, execution_arn="arn:aws:states:us-east-1:1:execution:m:r")
    store.update_step(run_id, "source", Status.STARTED, started_at=utcnow())
    store.update_step(run_id, "source", Status.SUCCEEDED, finished_at=utcnow())
    store.update_step(run_id, "work", Status.STARTED, started_at=utcnow())
    store.record_task(run_id, "work", "arn:aws:ecs:us-east-1:1:task/c/one")
    store.update_step(run_id, "work", Status.FAILED, exit_code=3, reason="exited 3", finished_at=utcnow())
    until = utcnow() + timedelta(days=RETENTION_DAYS)
    store.update_run(run_id, Status.FAILED, failed_processor="work", exit_code=3, reason="work exited 3")
    store.update_run(run_id, resume_until=until)
    kept = api("GET", f"/runs/{run_id}").body
    assert (kept["attempt"], kept["history"]) == (1, [])
    assert kept["resumeUntil"] is not None

    run = store.get_run(run_id)
    history = [ended_attempt(run, store.list_steps(run_id))]
    assert store.reopen_run(run_id, attempt=1, history=history, now=utcnow())
    reply = api("GET", f"/runs/{run_id}")

    assert reply.status == 200, reply.body
    body = reply.body
    assert (body["status"], body["attempt"], body["resumeUntil"]) == ("STARTED", 2, None)
    [earlier] = body["history"]
    assert (earlier["attempt"], earlier["status"], earlier["failedProcessor"]) == (1, "FAILED", "work")
    assert earlier["reason"] == "work exited 3"
    ended = {step["processorId"]: step for step in earlier["steps"]}
    assert (ended["work"]["status"], ended["work"]["attempts"], ended["work"]["exitCode"]) == ("FAILED", 1, 3)
    steps = {step["processorId"]: step for step in body["steps"]}
    assert steps["source"]["reused"] is True and steps["source"]["status"] == "SUCCEEDED"
    assert (steps["work"]["status"], steps["work"]["attempts"], steps["work"]["reused"]) == (
        "NOT_STARTED",
        0,
        False,
    )


def test_a_node_without_the_resume_function_is_503(api: Api) -> None:
    run_id = started(api)
    reply = api("POST", f"/runs/{run_id}/resume", body={})  # RESUME_FUNCTION_NAME is not set
    assert reply.status == 503
    assert "no resume function" in reply.error["message"]


# ------------------------------------------------------------------ the hand-over to the node


def stubbed_lambda(payload: dict[str, Any], function_error: str | None = None):
    client = boto3.client("lambda", region_name=REGION)
    stubber = Stubber(client)
    body = json.dumps(payload).encode()
    response: dict[str, Any] = {"StatusCode": 200, "Payload": StreamingBody(io.BytesIO(body), len(body))}
    if function_error:
        response["FunctionError"] = function_error
    stubber.add_response(
        "invoke",
        response,
        {
            "FunctionName": "pennflow-resume",
            "InvocationType": "RequestResponse",
            "Payload": b'{"runId": "r-1"}',
        },
    )
    return client, stubber


def test_the_resume_function_is_invoked_synchronously_with_the_run_id(mocked_aws) -> None:
    client, stubber = stubbed_lambda({"runId": "r-1", "status": "STARTED", "attempt": 2, "reused": []})
    with stubber:
        assert ResumeFunction("pennflow-resume", client).resume("r-1")["attempt"] == 2


def test_a_resume_function_that_failed_is_unavailable(mocked_aws) -> None:
    client, stubber = stubbed_lambda({"errorMessage": "boom"}, function_error="Unhandled")
    with stubber, pytest.raises(Unavailable, match="resume function failed"):
        ResumeFunction("pennflow-resume", client).resume("r-1")


# ------------------------------------------------------------------ the resume function's handler


@pytest.fixture
def moto_node(mocked_aws, tmp_path, monkeypatch) -> MotoNode:
    from lambdas import resume as handler_module

    node = keeping(aws_fixtures.build_moto_node(tmp_path / "runs"))
    monkeypatch.setattr(handler_module, "node_for", lambda context: node.node)
    return node


def test_the_handler_resumes_a_kept_run_and_refuses_it_the_second_time(moto_node) -> None:
    from lambdas.resume import handler

    run_id = failed_run(moto_node)
    arn = moto_node.store.get_run(run_id).execution_arn
    sfn = StubbedSfn(moto_node)
    sfn.describe(arn)
    sfn.redrive(arn, f"{run_id}-attempt-2")
    with sfn.stubber:
        first = handler({"runId": run_id}, api_support.LambdaContext())
        second = handler({"runId": run_id}, api_support.LambdaContext())

    assert first == {"runId": run_id, "status": "STARTED", "attempt": 2, "reused": ["recordings", "convert"]}
    assert "is STARTED: only a FAILED or CANCELED run can be resumed" in second["refused"]
    assert handler({"runId": "r-nope"}, api_support.LambdaContext())["notFound"]
    assert handler({}, api_support.LambdaContext())["error"] == "malformed resume event"


def test_the_scheduled_event_frees_expired_kept_slots(moto_node, monkeypatch) -> None:
    from datetime import timedelta

    from lambdas import resume as handler_module
    from pennflow.node import redrive
    from pennflow.workflow.runs import utcnow

    run_id = failed_run(moto_node)
    later = utcnow() + timedelta(days=RETENTION_DAYS + 1)
    monkeypatch.setattr(
        handler_module, "release_expired", lambda node: redrive.release_expired(node, now=later)
    )

    answer = handler_module.handler({"action": "releaseExpired"}, api_support.LambdaContext())

    assert answer == {"released": [run_id]}
    assert moto_node.store.get_run(run_id).status is Status.FAILED
    assert moto_node.node.slots.held_by(run_id) is None
