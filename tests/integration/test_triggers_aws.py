"""Uploads to runs through the trigger Lambdas on moto: DynamoDB, SQS, Secrets Manager, and the API's
own run start (runs table, workflows table, idempotency table).

One fake clock drives the functions and moto's SQS delays, so a debounce window passes without
sleeping. SQS is played by ``Node.fire_due``: it receives the visible messages and hands them to
the fire function as the event source mapping would, deleting those that succeeded.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import moto.sqs.models
import pytest

from pennflow.triggers import wiring
from pennflow.triggers.models import TriggerRule, TriggerRuleRequest
from pennflow.triggers.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, signature_header
from pennflow.triggers.store import MAX_WINDOW_PATHS, DynamoTriggerStore, table_definitions
from pennflow.workflow.runs import Status
from tests.integration import api_support
from tests.integration.api_support import Api, LambdaContext, tiny
from tests.integration.aws_fixtures import REGION

api = api_support.api
mocked_aws = api_support.mocked_aws

RULES_TABLE = "pennflow-triggers"
STATE_TABLE = "pennflow-trigger-state"
SECRET = "webhook-secret-0123456789abcdef0123"
DATASET = "N:dataset:6f1c0a52-3d3b-4a4e-9a57-0d9d3f7a1c11"
T0 = 1_750_000_000.0


def package(path: str) -> str:
    return f"N:package:{uuid.uuid5(uuid.NAMESPACE_URL, path)}"


def upload(event_id: str, *paths: str, dataset: str = DATASET) -> dict[str, Any]:
    return {
        "eventId": event_id,
        "eventType": "files.uploaded",
        "datasetId": dataset,
        "files": [{"path": p, "packageId": package(p)} for p in paths],
    }


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class Node:
    def __init__(self, api: Api, clock: Clock, queue_url: str, secret_arn: str):
        self.api = api
        self.clock = clock
        self.queue_url = queue_url
        self.secret_arn = secret_arn
        self.sqs = boto3.client("sqs", region_name=REGION)
        self.store = DynamoTriggerStore(RULES_TABLE, STATE_TABLE)

    def rule(self, **fields: Any) -> TriggerRule:
        request = TriggerRuleRequest(dataset_id=fields.pop("dataset_id", DATASET), workflow="tiny", **fields)
        rule = TriggerRule.create(request, now=api_support_now(), created_by="test")
        self.store.create_rule(rule)
        return rule

    def post(self, body: Any, *, secret: str = SECRET, timestamp: float | None = None) -> tuple[int, dict]:
        from lambdas import webhook

        raw = json.dumps(body)
        ts = int(self.clock.now if timestamp is None else timestamp)
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: str(ts),
            SIGNATURE_HEADER: signature_header(secret, ts, raw.encode()),
        }
        event = api_support.event("POST", "/webhooks/dataset-events", raw=raw, headers=headers)
        response = webhook.handler(event, LambdaContext(function_name="pennflow-webhook"))
        return response["statusCode"], json.loads(response["body"])

    def delayed_messages(self) -> int:
        attributes = self.sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["All"])[
            "Attributes"
        ]
        return int(attributes["ApproximateNumberOfMessagesDelayed"])

    def receive(self) -> list[dict[str, Any]]:
        return self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10).get("Messages", [])

    def fire(self, messages: list[dict[str, Any]], *, delete: bool = True) -> dict[str, Any]:
        from lambdas import trigger_fire

        records = [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "0"},
                "messageAttributes": {},
                "md5OfBody": m["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": f"arn:aws:sqs:{REGION}:123456789012:pennflow-trigger-fire",
                "awsRegion": REGION,
            }
            for m in messages
        ]
        result = trigger_fire.handler(
            {"Records": records}, LambdaContext(function_name="pennflow-trigger-fire")
        )
        failed = {f["itemIdentifier"] for f in result["batchItemFailures"]}
        for m in messages:
            if delete and m["MessageId"] not in failed:
                self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=m["ReceiptHandle"])
        return result

    def fire_due(self, *, until: float | None = None, step: float = 5) -> None:
        """Let time pass (to ``until``, or until the queue is empty), firing whatever becomes visible."""
        for _ in range(10_000):
            messages = self.receive()
            if messages:
                self.fire(messages)
            elif until is None and self.delayed_messages() == 0:
                return
            if until is not None and self.clock.now >= until:
                return
            self.clock.now += step
        raise AssertionError("the queue never emptied")

    def runs(self) -> list[Any]:
        return sorted(self.api.store.list_runs().runs, key=lambda r: r.created_at)


def api_support_now():
    from datetime import UTC, datetime

    return datetime.now(UTC)


@pytest.fixture
def node(api: Api) -> Iterator[Node]:
    from lambdas import api as api_module
    from lambdas import trigger_fire

    api.register(tiny())
    for request in table_definitions(RULES_TABLE, STATE_TABLE):
        boto3.client("dynamodb", region_name=REGION).create_table(**request)
    queue_url = boto3.client("sqs", region_name=REGION).create_queue(QueueName="pennflow-trigger-fire")[
        "QueueUrl"
    ]
    secret_arn = boto3.client("secretsmanager", region_name=REGION).create_secret(
        Name="pennflow/webhook", SecretString=SECRET
    )["ARN"]
    clock = Clock()
    with pytest.MonkeyPatch.context() as patch:  # undone before the api fixture forgets its ports
        for name, value in {
            "TRIGGERS_TABLE": RULES_TABLE,
            "TRIGGER_STATE_TABLE": STATE_TABLE,
            "TRIGGER_FIRE_QUEUE_URL": queue_url,
            "WEBHOOK_SECRET_ARN": secret_arn,
        }.items():
            patch.setenv(name, value)
        patch.setattr(wiring, "clock", clock)
        patch.setattr(moto.sqs.models, "unix_time_millis", lambda: clock.now * 1000)
        patch.setattr(moto.sqs.models, "unix_time", clock)
        patch.setattr(api_module, "run_launcher", lambda: api.launcher)
        wiring.reset()
        trigger_fire.run_starter.cache_clear()
        yield Node(api, clock, queue_url, secret_arn)
        wiring.reset()
        trigger_fire.run_starter.cache_clear()


# ------------------------------------------------------------------ bursts and repeats


def test_a_burst_of_twenty_uploads_is_one_window_one_message_and_one_run_with_all_files(node: Node):
    rule = node.rule(debounce_seconds=60)
    for i in range(20):
        status, body = node.post(upload(f"evt-{i}", f"sub-{i:02d}/eeg.edf"))
        assert (status, body["status"]) == (202, "accepted"), body
        node.clock.now += 1

    window = node.store.get_pending(rule.rule_id)
    assert (window.event_count, window.file_count, len(window.package_ids)) == (20, 20, 20)
    assert node.delayed_messages() == 1 and node.receive() == []  # delayed: invisible for now

    node.fire_due()

    runs = node.runs()
    assert len(runs) == 1
    run = node.api.store.get_run(runs[0].run_id)
    assert run.workflow == "tiny" and run.dataset_id == DATASET and run.status is Status.NOT_STARTED
    assert sorted(run.package_ids) == sorted(package(f"sub-{i:02d}/eeg.edf") for i in range(20))
    assert node.api.launcher.run_ids == [run.run_id]
    assert node.store.get_pending(rule.rule_id) is None


def test_the_same_delivery_ten_times_starts_one_run(node: Node):
    node.rule(debounce_seconds=10)
    answers = [node.post(upload("evt-same", "a.edf")) for _ in range(10)]
    assert [a[1]["status"] for a in answers] == ["accepted"] + ["duplicate"] * 9
    assert {a[0] for a in answers[1:]} == {200}
    node.fire_due()
    assert len(node.runs()) == 1


def test_a_second_burst_after_the_window_fired_starts_a_second_run(node: Node):
    node.rule(debounce_seconds=10)
    node.post(upload("a1", "first/a.edf"))
    node.post(upload("a2", "first/b.edf"))
    node.fire_due()
    node.post(upload("b1", "second/a.edf"))
    node.fire_due()
    runs = [node.api.store.get_run(r.run_id) for r in node.runs()]
    assert [sorted(r.package_ids) for r in runs] == [
        sorted([package("first/a.edf"), package("first/b.edf")]),
        [package("second/a.edf")],
    ]


def test_glob_filtering_on_the_aws_path(node: Node):
    node.rule(file_glob="*.edf", debounce_seconds=5)
    status, body = node.post(upload("json", "sub-01/a.json"))
    assert (status, body["status"]) == (200, "ignored")
    assert node.delayed_messages() == 0
    node.post(upload("mixed", "sub-01/a.json", "sub-01/a.edf"))
    node.fire_due()
    assert node.api.store.get_run(node.runs()[0].run_id).package_ids == [package("sub-01/a.edf")]


def test_a_duplicated_sqs_message_starts_no_second_run(node: Node):
    node.rule(debounce_seconds=5)
    node.post(upload("e", "a.edf"))
    node.clock.now += 5
    messages = node.receive()
    assert len(messages) == 1
    node.fire(messages, delete=False)
    node.fire(messages)  # SQS delivers at least once: the same message again
    assert len(node.runs()) == 1


def test_a_failed_start_is_retried_by_sqs_and_still_makes_one_started_run(node: Node):
    node.rule(debounce_seconds=5)
    node.post(upload("e", "a.edf"))
    node.clock.now += 5
    messages = node.receive()
    node.api.launcher.fail_with = RuntimeError("prepare function throttled")
    with pytest.raises(Exception, match="All records failed"):  # Powertools: the whole batch is retried
        node.fire(messages, delete=False)
    node.api.launcher.fail_with = None
    node.fire(messages)
    runs = [node.api.store.get_run(r.run_id) for r in node.runs()]
    assert [r.status for r in runs] == [Status.FAILED, Status.NOT_STARTED]  # the failed hand-off is recorded
    assert node.api.launcher.run_ids == [runs[1].run_id]
    node.fire(messages)
    assert len(node.runs()) == 2


def test_a_malformed_fire_message_is_dropped_not_retried(node: Node):
    node.sqs.send_message(QueueUrl=node.queue_url, MessageBody='{"ruleId": "nope"}')
    result = node.fire(node.receive())
    assert result["batchItemFailures"] == []
    assert node.runs() == []


# ------------------------------------------------------------------ the webhook's refusals


def test_wrong_expired_and_replayed_requests_start_nothing(node: Node):
    node.rule(debounce_seconds=5)
    wrong = node.post(upload("e1", "a.edf"), secret="not-the-secret-0123456789")
    expired = node.post(upload("e2", "a.edf"), timestamp=node.clock.now - 301)
    assert (wrong[0], wrong[1]["error"]["code"]) == (401, "invalid_signature")
    assert (expired[0], expired[1]["error"]["code"]) == (401, "signature_expired")
    assert node.delayed_messages() == 0


def test_a_rotated_secret_is_seen_at_once_and_the_previous_one_still_verifies(node: Node):
    node.rule(debounce_seconds=5)
    assert node.post(upload("e1", "a.edf"))[0] == 202  # caches the first secret
    rotated = "rotated-webhook-secret-0123456789"
    boto3.client("secretsmanager", region_name=REGION).put_secret_value(
        SecretId=node.secret_arn, SecretString=rotated
    )
    node.clock.now += 31  # past the refresh interval, within the TTL: re-read because nothing verified
    assert node.post(upload("e2", "b.edf"), secret=rotated)[0] == 202
    assert node.post(upload("e3", "c.edf"), secret=SECRET)[0] == 202


# ------------------------------------------------------------------ EventBridge


def test_an_eventbridge_event_takes_the_same_path(node: Node):
    from lambdas import trigger_events

    node.rule(debounce_seconds=5)
    detail = upload("eb-1", "x.edf")
    event = {
        "version": "0",
        "id": "7bf73129-1428-4cd3-a780-95db273d1602",
        "source": "pennflow.datasets",
        "detail-type": "Dataset Files Added",
        "account": "123456789012",
        "region": REGION,
        "time": "2025-06-15T12:00:00Z",
        "resources": [],
        "detail": detail,
    }
    context = LambdaContext(function_name="pennflow-trigger-events")
    assert trigger_events.handler(event, context)["status"] == "accepted"
    assert trigger_events.handler(event, context)["status"] == "duplicate"  # EventBridge retried it
    status, body = node.post(detail)  # the same event through the webhook too
    assert body["status"] == "duplicate"
    node.fire_due()
    assert node.api.store.get_run(node.runs()[0].run_id).package_ids == [package("x.edf")]


def test_a_malformed_eventbridge_event_is_logged_and_dropped(node: Node):
    from lambdas import trigger_events

    event = {
        "id": "1",
        "source": "pennflow.datasets",
        "detail-type": "Dataset Files Added",
        "detail": {"files": 3},
    }
    result = trigger_events.handler(event, LambdaContext(function_name="pennflow-trigger-events"))
    assert result["error"] == "malformed dataset files added event"
    assert any(p.startswith("detail.datasetId") for p in result["problems"])


# ------------------------------------------------------------------ the DynamoDB store's conditions


def test_a_window_close_at_a_stale_version_is_refused(node: Node):
    rule = node.rule()
    node.post(upload("e1", "a.edf"))
    read = node.store.get_pending(rule.rule_id)
    from pennflow.triggers.models import FiredWindow, WindowAddition

    joined = node.store.add_to_window(rule.rule_id, WindowAddition.of("e2", []), now=node.clock.now)
    assert joined.version == read.version + 1
    assert not node.store.close_window(read, FiredWindow.closing(read, now=node.clock.now))
    assert node.store.close_window(joined, FiredWindow.closing(joined, now=node.clock.now))
    assert node.store.get_fired(joined.window_id).event_count == 2


def test_a_full_window_stops_listing_files_and_counts_them(node: Node):
    rule = node.rule()
    batches = MAX_WINDOW_PATHS // 100 + 1
    for b in range(batches):
        node.post(upload(f"e{b}", *(f"b{b}/f{i}.edf" for i in range(100))))
    window = node.store.get_pending(rule.rule_id)
    assert window.truncated and len(window.paths) <= MAX_WINDOW_PATHS
    assert window.file_count == batches * 100 and window.event_count == batches


def test_a_delivery_claim_is_refused_until_it_expires(node: Node):
    assert node.store.claim_delivery("e", now=100, expires_at=200)
    assert not node.store.claim_delivery("e", now=199, expires_at=300)
    assert node.store.claim_delivery("e", now=201, expires_at=300)  # TTL deletion is lazy: compare ourselves
    node.store.release_delivery("e")
    assert node.store.claim_delivery("e", now=202, expires_at=300)
