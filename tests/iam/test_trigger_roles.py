"""Uploads to runs through the trigger functions, each with its role as synthesized: the API
creates a rule, the webhook (or EventBridge) accepts dataset events into a debounce window, the
SQS event source mapping hands the due window to the fire function, which starts the run."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import moto.sqs.models
import pytest

from pennflow.triggers import wiring
from pennflow.triggers.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, signature_header
from tests.iam.lifecycle import call_api, deliver, register, run_record, tiny
from tests.iam.moto_node import IamNode
from tests.integration.api_support import event
from tests.integration.test_triggers_aws import Clock

pytest_plugins = ["tests.fakes.pennsieve_fixtures"]
pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")
WEBHOOK_SECRET = "webhook-secret-0123456789abcdef0123"


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[Clock]:
    """One fake clock for the trigger functions and moto's SQS delays (a debounce passes at once)."""
    clock = Clock()
    monkeypatch.setattr(wiring, "clock", clock)
    monkeypatch.setattr(moto.sqs.models, "unix_time_millis", lambda: clock.now * 1000)
    monkeypatch.setattr(moto.sqs.models, "unix_time", clock)
    yield clock


@pytest.fixture
def triggered(iam_node: IamNode, pennsieve, clock: Clock) -> IamNode:
    import boto3

    secret = iam_node.environment("webhook")["WEBHOOK_SECRET_ARN"]
    boto3.client("secretsmanager", region_name="us-east-1").put_secret_value(
        SecretId=secret, SecretString=WEBHOOK_SECRET
    )
    register(iam_node, tiny())
    return iam_node


def post_webhook(node: IamNode, clock: Clock, body: dict[str, Any]) -> dict[str, Any]:
    import json

    raw = json.dumps(body)
    headers = {
        "Content-Type": "application/json",
        TIMESTAMP_HEADER: str(int(clock.now)),
        SIGNATURE_HEADER: signature_header(WEBHOOK_SECRET, int(clock.now), raw.encode()),
    }
    return node.invoke("webhook", event("POST", "/webhooks/dataset-events", raw=raw, headers=headers))


def fire_due(node: IamNode, clock: Clock, seconds: int) -> list[str]:
    """Let the window's delay pass, then play the SQS event source mapping (which polls and deletes
    with the function's own role) and the fire function."""
    import boto3

    clock.now += seconds
    url = node.environment("webhook")["TRIGGER_FIRE_QUEUE_URL"]
    with node.as_function("trigger_fire"):
        sqs = boto3.client("sqs", region_name="us-east-1")
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
    records = [
        {
            "messageId": m["MessageId"],
            "receiptHandle": m["ReceiptHandle"],
            "body": m["Body"],
            "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "0"},
            "messageAttributes": {},
            "md5OfBody": m["MD5OfBody"],
            "eventSource": "aws:sqs",
            "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:fire",
            "awsRegion": "us-east-1",
        }
        for m in messages
    ]
    result = node.invoke("trigger_fire", {"Records": records})
    assert result["batchItemFailures"] == []
    with node.as_function("trigger_fire"):
        for m in messages:
            boto3.client("sqs", region_name="us-east-1").delete_message(
                QueueUrl=url, ReceiptHandle=m["ReceiptHandle"]
            )
    return [m["MessageId"] for m in messages]


def upload(event_id: str, dataset: Any) -> dict[str, Any]:
    """A dataset event naming the dataset's packages as Pennsieve knows them."""
    files = [{"path": p.name, "packageId": p.node_id} for p in dataset.packages]
    return {"eventId": event_id, "eventType": "files.uploaded", "datasetId": dataset.node_id, "files": files}


def created_rule(node: IamNode, dataset_id: str) -> dict[str, Any]:
    reply = call_api(
        node, "POST", "/triggers", body={"datasetId": dataset_id, "workflow": "tiny", "debounceSeconds": 30}
    )
    assert reply.status == 201, reply.body
    return reply.body


def test_a_webhook_upload_starts_a_run_once_its_window_is_due(triggered: IamNode, clock: Clock, pennsieve):
    dataset = pennsieve.add_dataset("eeg")
    dataset.add_package("a.edf", [("a.edf", 1024)])
    created_rule(triggered, dataset.node_id)

    reply = post_webhook(triggered, clock, upload("evt-1", dataset))
    assert reply["statusCode"] == 202, reply
    assert fire_due(triggered, clock, 60)

    (started,) = deliver(triggered, "prepare")
    assert run_record(triggered, started["runId"]).status.value == "STARTED"


def test_an_eventbridge_dataset_event_is_accepted_by_the_trigger_events_function(
    triggered: IamNode, clock: Clock, pennsieve
):
    dataset = pennsieve.add_dataset("eeg")
    dataset.add_package("b.edf", [("b.edf", 1024)])
    created_rule(triggered, dataset.node_id)
    detail = upload("evt-2", dataset)
    envelope = {
        "id": "eb-1",
        "source": "pennflow.datasets",
        "detail-type": "Dataset Files Added",
        "detail": detail,
    }

    result = triggered.invoke("trigger_events", envelope)

    assert result["status"] == "accepted", result
    assert fire_due(triggered, clock, 60)
    (started,) = deliver(triggered, "prepare")
    assert run_record(triggered, started["runId"]).status.value == "STARTED"
