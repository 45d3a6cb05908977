"""Idempotency-Key on POST /runs (Powertools idempotency on a moto DynamoDB table)."""

from __future__ import annotations

import pytest

from tests.integration import api_support
from tests.integration.api_support import Api, tiny

api = api_support.api
mocked_aws = api_support.mocked_aws


@pytest.fixture
def node(api: Api) -> Api:
    api.register(tiny())
    return api


def start(node: Api, key: str | None, caller: str = api_support.CALLER, **fields):
    headers = {"Idempotency-Key": key} if key else {}
    return node("POST", "/runs", body={"workflow": "tiny", **fields}, headers=headers, caller=caller)


def test_the_same_key_and_body_return_the_same_run(node: Api) -> None:
    first = start(node, "key-1", params={"WINDOW": "5"})
    again = start(node, "key-1", params={"WINDOW": "5"})

    assert first.status == again.status == 202
    assert again.body == first.body
    assert len(node.store.list_runs().runs) == 1
    assert node.launcher.run_ids == [first.body["runId"]]


def test_the_same_key_with_another_body_is_refused(node: Api) -> None:
    first = start(node, "key-2", params={"WINDOW": "5"})
    other = start(node, "key-2", params={"WINDOW": "6"})

    assert first.status == 202
    assert other.status == 422
    assert other.error["code"] == "idempotency_key_reused"
    assert ("header", "Idempotency-Key") in other.fields()
    assert len(node.store.list_runs().runs) == 1


def test_different_keys_or_no_key_start_separate_runs(node: Api) -> None:
    ids = {start(node, key).body["runId"] for key in ("a", "b", None, None)}
    assert len(ids) == 4 and len(node.store.list_runs().runs) == 4


def test_keys_are_scoped_by_caller(node: Api) -> None:
    mine = start(node, "shared", caller="arn:aws:iam::123456789012:user/alice")
    theirs = start(node, "shared", caller="arn:aws:iam::123456789012:user/bob", params={"MODE": "slow"})

    assert mine.status == theirs.status == 202
    assert mine.body["runId"] != theirs.body["runId"]


def test_a_refused_request_does_not_use_up_its_key(node: Api) -> None:
    refused = start(node, "key-3", params={"NOPE": "1"})
    node.register(tiny("later"))
    missing = node("POST", "/runs", body={"workflow": "later"}, headers={"Idempotency-Key": "key-4"})
    retried = start(node, "key-3", params={"NOPE": "1"})

    assert (
        refused.status == retried.status == 400
    )  # the error is not replayed from the store: it is recomputed
    assert missing.status == 202


def test_a_failed_hand_over_can_be_retried_with_the_same_key(node: Api) -> None:
    node.launcher.fail_with = RuntimeError("throttled")
    assert start(node, "key-5").status == 503
    node.launcher.fail_with = None
    retried = start(node, "key-5")

    assert retried.status == 202
    assert node.launcher.run_ids == [retried.body["runId"]]


def test_dry_runs_ignore_the_key(node: Api) -> None:
    plan = start(node, "key-6", dryRun=True)
    run = start(node, "key-6")
    assert plan.status == 200 and run.status == 202
