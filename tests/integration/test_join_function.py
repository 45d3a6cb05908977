"""The join function's logic on a moto DynamoDB table: both orders, repeats, ended tokens, bad events."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from lambdas import join as join_handler
from pennflow.node.joins import JoinError, JoinRequest, JoinStore, handle

TABLE = "joins"


@dataclass
class Context:
    function_name: str = "pennflow-join"
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:pennflow-join"
    aws_request_id: str = "req-1"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


class Releases:
    """Stands in for Step Functions' SendTaskSuccess: records tokens; ``ended`` ones answer TaskTimedOut."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.ended: set[str] = set()

    def send_task_success(self, taskToken: str, output: str) -> dict[str, Any]:  # noqa: N803 - boto3's name
        if taskToken in self.ended:
            raise ClientError({"Error": {"Code": "TaskTimedOut", "Message": "gone"}}, "SendTaskSuccess")
        self.sent.append(taskToken)
        return {}


@pytest.fixture
def store():
    with mock_aws():
        dynamodb = boto3.client("dynamodb", region_name="us-east-1")
        dynamodb.create_table(
            TableName=TABLE,
            KeySchema=[
                {"AttributeName": "runId", "KeyType": "HASH"},
                {"AttributeName": "item", "KeyType": "RANGE"},
            ],
            AttributeDefinitions=[
                {"AttributeName": "runId", "AttributeType": "S"},
                {"AttributeName": "item", "AttributeType": "S"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )
        yield JoinStore(TABLE, dynamodb=dynamodb, sfn=Releases(), clock=lambda: 1_000)


def wait(node: str, deps: list[str], token: str, **extra: Any) -> JoinRequest:
    return JoinRequest.model_validate(
        {"action": "wait", "runId": "r-1", "node": node, "deps": deps, "token": token, **extra}
    )


def done(node: str, waiters: list[str]) -> JoinRequest:
    return JoinRequest.model_validate({"action": "done", "runId": "r-1", "node": node, "waiters": waiters})


def test_a_waiter_registered_first_is_released_by_its_last_dependency(store):
    assert handle(wait("c", ["a", "b"], "T-c"), store).released == ()
    assert handle(done("a", ["c"]), store).released == ()  # b is not done yet
    answer = handle(done("b", ["c"]), store)
    assert answer.released == ("c",) and answer.marked
    assert store.sfn.sent == ["T-c"]


def test_a_waiter_whose_dependencies_are_done_already_is_released_at_once(store):
    handle(done("a", ["c"]), store)
    handle(done("b", ["c"]), store)
    assert handle(wait("c", ["a", "b"], "T-c"), store).released == ("c",)
    assert store.sfn.sent == ["T-c"]


def test_a_repeated_signal_finds_its_mark_and_a_repeated_wait_keeps_its_token(store):
    handle(wait("c", ["b"], "T-c"), store)
    assert handle(done("b", ["c"]), store).marked
    assert not handle(done("b", ["c"]), store).marked  # the mark was there: a repeat
    handle(wait("c", ["b"], "T-c"), store)  # the same call again (a Lambda retry)
    assert store.waiter("r-1", "c") == ("T-c", ("b",))
    assert set(store.sfn.sent) == {"T-c"}  # a token sent twice finds its task ended on AWS: harmless


def test_a_retried_wait_stores_its_new_token(store):
    handle(wait("c", ["b"], "T-1"), store)
    handle(wait("c", ["b"], "T-2"), store)
    assert store.waiter("r-1", "c") == ("T-2", ("b",))
    handle(done("b", ["c"]), store)
    assert store.sfn.sent == ["T-2"]


def test_a_late_signal_for_an_ended_task_is_harmless(store):
    handle(wait("c", ["b"], "T-c"), store)
    store.sfn.ended.add("T-c")  # the run failed or was stopped meanwhile
    assert handle(done("b", ["c"]), store).released == ()


def test_a_wait_may_carry_the_signal_of_the_node_before_it(store):
    handle(wait("x", ["p"], "T-x"), store)
    answer = handle(wait("c", ["q"], "T-c", done="p", waiters=["x"]), store)
    assert answer.released == ("x",) and answer.marked
    assert store.sfn.sent == ["T-x"]


def test_runs_do_not_see_each_others_marks(store):
    handle(done("b", ["c"]), store)
    other = JoinRequest.model_validate(
        {"action": "wait", "runId": "r-2", "node": "c", "deps": ["b"], "token": "T"}
    )
    assert handle(other, store).released == ()


@pytest.mark.parametrize(
    ("event", "problem"),
    [
        ({"action": "wait", "runId": "r", "node": "c", "deps": ["b"]}, "its task 'token'"),
        ({"action": "done", "runId": "r", "node": "c", "token": "T"}, "not 'deps', 'done' or a 'token'"),
        ({"action": "join", "runId": "r", "node": "c"}, "action"),
        ({"action": "done", "node": "c"}, "runId"),
    ],
)
def test_a_malformed_event_fails_with_a_precise_error_not_a_traceback(event, problem):
    with pytest.raises(JoinError, match="malformed join event") as failed:
        join_handler.handler(event, Context())
    assert problem in str(failed.value)
