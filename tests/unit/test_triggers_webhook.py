"""The webhook over HTTP (API Gateway proxy events) on the in-memory adapters.

Every refusal is one JSON error naming the field or header; nothing a sender sends yields a 5xx.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pennflow.triggers.debounce import Debouncer
from pennflow.triggers.intake import TriggerIntake
from pennflow.triggers.memory import MemoryFireQueue, MemoryTriggerStore
from pennflow.triggers.models import TriggerRule, TriggerRuleRequest
from pennflow.triggers.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, StaticSecrets, signature_header
from pennflow.triggers.webhook import MAX_BODY_BYTES, WebhookReply, handle_proxy_event

SECRET = "webhook-secret-0123456789abcdef"
NOW = 1_750_000_000.0
DATASET = "N:dataset:6f1c0a52-3d3b-4a4e-9a57-0d9d3f7a1c11"


def dataset_event(event_id: str = "evt-1", **changes: Any) -> dict[str, Any]:
    return {
        "eventId": event_id,
        "eventType": "files.uploaded",
        "datasetId": DATASET,
        "files": [{"path": "sub-01/eeg.edf", "packageId": "N:package:0b5e3d6e-9d7c-4f4b-8f0e-5f6a7b8c9d0e"}],
        **changes,
    }


class Webhook:
    def __init__(self) -> None:
        self.store = MemoryTriggerStore()
        self.queue = MemoryFireQueue(clock=lambda: NOW)
        self.intake = TriggerIntake(
            self.store, Debouncer(self.store, self.queue, clock=lambda: NOW), clock=lambda: NOW
        )
        rule = TriggerRule.create(
            TriggerRuleRequest(dataset_id=DATASET, workflow="eeg-quality"), now=_dt(), created_by=None
        )
        self.store.create_rule(rule)

    def post(
        self,
        body: Any = None,
        *,
        raw: bytes | None = None,
        timestamp: float = NOW,
        secret: str = SECRET,
        headers: dict[str, str] | None = None,
        base64_body: bool = False,
        now: float = NOW,
    ) -> WebhookReply:
        data = raw if raw is not None else json.dumps(body).encode()
        signed = {
            TIMESTAMP_HEADER: str(int(timestamp)),
            SIGNATURE_HEADER: signature_header(secret, int(timestamp), data),
        }
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:  # API Gateway passes bytes that are not text base64-encoded
            base64_body = True
        if base64_body:
            text = base64.b64encode(data).decode()
        event = {
            "httpMethod": "POST",
            "path": "/webhooks/dataset-events",
            "headers": {"Content-Type": "application/json", **(signed if headers is None else headers)},
            "body": text,
            "isBase64Encoded": base64_body,
            "requestContext": {"requestId": "req-1"},
        }
        return handle_proxy_event(event, secrets=StaticSecrets((SECRET,)), intake=self.intake, now=now)


def _dt():
    from datetime import UTC, datetime

    return datetime.fromtimestamp(NOW, UTC)


@pytest.fixture
def webhook() -> Webhook:
    return Webhook()


def fields(reply: WebhookReply) -> set[tuple[str, str]]:
    return {(f["in"], f["field"]) for f in reply.body["error"]["fields"]}


def test_a_signed_upload_is_accepted_and_opens_a_window(webhook: Webhook):
    reply = webhook.post(dataset_event())
    assert reply.status == 202
    assert reply.body["status"] == "accepted" and reply.body["eventId"] == "evt-1"
    assert reply.body["matched"][0]["openedWindow"] is True
    assert len(webhook.queue.sent) == 1
    response = reply.proxy_response()
    assert response["statusCode"] == 202 and json.loads(response["body"]) == reply.body


def test_a_base64_body_is_verified_on_its_decoded_bytes(webhook: Webhook):
    assert webhook.post(dataset_event(), base64_body=True).status == 202


def test_a_replayed_delivery_answers_200_duplicate_and_starts_nothing(webhook: Webhook):
    first = webhook.post(dataset_event())
    replay = webhook.post(dataset_event())  # the very same request: same signature
    resigned = webhook.post(dataset_event(), timestamp=NOW + 10, now=NOW + 10)  # a re-signed retry
    assert first.status == 202
    assert (replay.status, replay.body["status"]) == (200, "duplicate")
    assert (resigned.status, resigned.body["status"]) == (200, "duplicate")
    assert len(webhook.queue.sent) == 1 and next(iter(webhook.store.pending.values())).event_count == 1


def test_a_wrong_signature_is_401_and_starts_nothing(webhook: Webhook):
    reply = webhook.post(dataset_event(), secret="someone-elses-secret-0123")
    assert reply.status == 401 and reply.body["error"]["code"] == "invalid_signature"
    assert fields(reply) == {("header", SIGNATURE_HEADER)}
    assert reply.body["error"]["requestId"] == "req-1"
    assert webhook.store.deliveries == {} and webhook.queue.sent == []


def test_an_old_request_is_401_expired(webhook: Webhook):
    reply = webhook.post(dataset_event(), timestamp=NOW - 301)
    assert reply.status == 401 and reply.body["error"]["code"] == "signature_expired"
    assert "expired" in reply.body["error"]["message"]
    assert fields(reply) == {("header", TIMESTAMP_HEADER)}
    assert webhook.store.deliveries == {}


@pytest.mark.parametrize(
    ("headers", "header"),
    [
        ({}, TIMESTAMP_HEADER),
        ({TIMESTAMP_HEADER: "yesterday", SIGNATURE_HEADER: "v1=" + "0" * 64}, TIMESTAMP_HEADER),
        ({TIMESTAMP_HEADER: str(int(NOW))}, SIGNATURE_HEADER),
        ({TIMESTAMP_HEADER: str(int(NOW)), SIGNATURE_HEADER: "sha256=abc"}, SIGNATURE_HEADER),
    ],
)
def test_missing_or_malformed_headers_are_400_naming_the_header(webhook: Webhook, headers, header):
    reply = webhook.post(dataset_event(), headers=headers)
    assert reply.status == 400 and reply.body["error"]["code"] == "malformed_signature_header"
    assert fields(reply) == {("header", header)}


def test_a_body_that_is_not_json_is_400(webhook: Webhook):
    reply = webhook.post(raw=b'{"eventId": ')
    assert reply.status == 400 and reply.body["error"]["code"] == "invalid_json"
    assert fields(reply) == {("body", "body")}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (dataset_event(datasetId="N:dataset:not-a-uuid"), "datasetId"),
        ({k: v for k, v in dataset_event().items() if k != "eventId"}, "eventId"),
        (dataset_event(eventId="has spaces"), "eventId"),
        (dataset_event(files=[{"packageId": "N:package:abc"}]), "files.0.path"),
        (dataset_event(files=[{"path": "a\nb.edf"}]), "files.0.path"),
        (dataset_event(files="a.edf"), "files"),
        (dataset_event(files=[{"path": "a.edf"}] * 1001), "files"),
        ([dataset_event()], "body"),
    ],
)
def test_a_body_that_is_not_a_dataset_event_is_400_naming_the_field(webhook: Webhook, body, field):
    reply = webhook.post(body)
    assert reply.status == 400 and reply.body["error"]["code"] == "invalid_event"
    assert ("body", field) in fields(reply)
    assert webhook.store.deliveries == {}


def test_a_body_over_the_limit_is_413_before_anything_else(webhook: Webhook):
    reply = webhook.post(raw=b" " * (MAX_BODY_BYTES + 1), headers={})
    assert reply.status == 413 and fields(reply) == {("body", "body")}


def test_a_body_that_is_not_base64_is_400(webhook: Webhook):
    event = {"headers": {}, "body": "%%%not base64", "isBase64Encoded": True}
    reply = handle_proxy_event(event, secrets=StaticSecrets((SECRET,)), intake=webhook.intake, now=NOW)
    assert reply.status == 400 and "base64" in reply.body["error"]["message"]


def test_other_event_types_and_unmatched_files_answer_200_ignored(webhook: Webhook):
    other = webhook.post(dataset_event("e2", eventType="dataset.published"))
    unmatched = webhook.post(dataset_event("e3", datasetId="N:dataset:0b5e3d6e-9d7c-4f4b-8f0e-5f6a7b8c9d0e"))
    assert (other.status, other.body["status"]) == (200, "ignored")
    assert (unmatched.status, unmatched.body["status"]) == (200, "ignored")
    assert webhook.queue.sent == []


def test_a_store_failure_is_503_and_the_retry_is_not_a_duplicate(webhook: Webhook):
    webhook.queue.fail_with = ConnectionError("sqs unreachable")
    failed = webhook.post(dataset_event())
    assert failed.status == 503 and failed.body["error"]["code"] == "unavailable"
    webhook.queue.fail_with = None
    assert webhook.post(dataset_event()).status == 202


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=20,
)
event_like = st.fixed_dictionaries(
    {},
    optional={
        "eventId": st.one_of(st.text(max_size=30), json_values),
        "eventType": st.sampled_from(["files.uploaded", "files.deleted", "", 3]),
        "datasetId": st.sampled_from([DATASET, "N:dataset:x", None, 5]),
        "files": st.one_of(
            json_values,
            st.lists(
                st.fixed_dictionaries({}, optional={"path": json_values, "packageId": json_values}),
                max_size=3,
            ),
        ),
    },
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.one_of(json_values, event_like, st.binary(max_size=200)))
def test_junk_bodies_signed_or_not_never_give_a_5xx(webhook: Webhook, body):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    signed = webhook.post(raw=raw)
    assert signed.status in (200, 202, 400), signed.body
    if signed.status == 400:
        assert signed.body["error"]["fields"]
    unsigned = webhook.post(
        raw=raw, headers={TIMESTAMP_HEADER: str(int(NOW)), SIGNATURE_HEADER: "v1=" + "0" * 64}
    )
    assert unsigned.status == 401
