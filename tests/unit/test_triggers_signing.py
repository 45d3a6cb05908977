"""Webhook signatures: HMAC-SHA256 over "<timestamp>.<body>", header parsing, tolerance, secret cache."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field

import pytest

from pennflow.triggers.signing import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    BadSignature,
    Expired,
    MalformedHeader,
    SecretsManagerSecrets,
    SecretUnavailable,
    StaticSecrets,
    parse_headers,
    sign,
    signature_header,
    verify,
)

SECRET = "s3cret-s3cret-s3cret-0123456789"
NOW = 1_750_000_000
BODY = b'{"eventId":"e1"}'


def headers(secret: str = SECRET, timestamp: int = NOW, body: bytes = BODY) -> dict[str, str]:
    return {TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: signature_header(secret, timestamp, body)}


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body():
    expected = hmac.new(SECRET.encode(), f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert sign(SECRET, NOW, BODY) == expected
    assert signature_header(SECRET, NOW, BODY) == f"v1={expected}"


def test_a_correct_signature_within_the_tolerance_verifies():
    signed = verify(StaticSecrets((SECRET,)), headers(timestamp=NOW - 299), BODY, now=NOW)
    assert signed.timestamp == NOW - 299


def test_header_names_are_case_insensitive_and_extra_schemes_are_ignored():
    h = headers()
    lowered = {
        TIMESTAMP_HEADER.lower(): h[TIMESTAMP_HEADER],
        SIGNATURE_HEADER.lower(): f"v0=abc, {h[SIGNATURE_HEADER]}",
    }
    assert verify(StaticSecrets((SECRET,)), lowered, BODY, now=NOW).signatures == (sign(SECRET, NOW, BODY),)


@pytest.mark.parametrize(
    "change",
    [
        {"body": BODY + b" "},  # body changed after signing
        {"secret": "another-secret-of-enough-length"},
        {"timestamp_header": str(NOW + 1)},  # timestamp changed after signing
    ],
)
def test_a_wrong_signature_is_refused(change):
    h = headers(secret=change.get("secret", SECRET))
    if "timestamp_header" in change:
        h[TIMESTAMP_HEADER] = change["timestamp_header"]
    with pytest.raises(BadSignature):
        verify(StaticSecrets((SECRET,)), h, change.get("body", BODY), now=NOW)


@pytest.mark.parametrize("age", [301, -301, 86400])
def test_a_signature_outside_the_tolerance_is_expired(age):
    with pytest.raises(Expired, match="expired"):
        verify(StaticSecrets((SECRET,)), headers(timestamp=NOW - age), BODY, now=NOW)


def test_any_of_several_secrets_or_signatures_verifies_for_rotation():
    old, new = "old-secret-0123456789abcdef", "new-secret-0123456789abcdef"
    both = f"v1={sign(new, NOW, BODY)},v1={sign(old, NOW, BODY)}"
    h = {TIMESTAMP_HEADER: str(NOW), SIGNATURE_HEADER: both}
    assert verify(StaticSecrets((old,)), h, BODY, now=NOW)
    assert verify(StaticSecrets((new, old)), headers(secret=old), BODY, now=NOW)


@pytest.mark.parametrize(
    ("given", "header", "message"),
    [
        ({SIGNATURE_HEADER: "v1=" + "a" * 64}, TIMESTAMP_HEADER, "required"),
        ({TIMESTAMP_HEADER: "", SIGNATURE_HEADER: "v1=" + "a" * 64}, TIMESTAMP_HEADER, "required"),
        ({TIMESTAMP_HEADER: "17e8", SIGNATURE_HEADER: "v1=" + "a" * 64}, TIMESTAMP_HEADER, "digits"),
        ({TIMESTAMP_HEADER: "-5", SIGNATURE_HEADER: "v1=" + "a" * 64}, TIMESTAMP_HEADER, "digits"),
        ({TIMESTAMP_HEADER: "1" * 13, SIGNATURE_HEADER: "v1=" + "a" * 64}, TIMESTAMP_HEADER, "digits"),
        ({TIMESTAMP_HEADER: str(NOW)}, SIGNATURE_HEADER, "required"),
        ({TIMESTAMP_HEADER: str(NOW), SIGNATURE_HEADER: "a" * 64}, SIGNATURE_HEADER, "v1=<hex>"),
        ({TIMESTAMP_HEADER: str(NOW), SIGNATURE_HEADER: "v1=xyz"}, SIGNATURE_HEADER, "64 hex"),
        ({TIMESTAMP_HEADER: str(NOW), SIGNATURE_HEADER: "v1=" + "a" * 63}, SIGNATURE_HEADER, "64 hex"),
        ({TIMESTAMP_HEADER: str(NOW), SIGNATURE_HEADER: "v2=" + "a" * 64}, SIGNATURE_HEADER, "no v1"),
    ],
)
def test_malformed_headers_name_the_header(given, header, message):
    with pytest.raises(MalformedHeader, match=message) as caught:
        parse_headers(given)
    assert caught.value.header == header and caught.value.status == 400


# ------------------------------------------------------------------ the secret from Secrets Manager


class NotFound(Exception):
    response = {"Error": {"Code": "ResourceNotFoundException"}}


@dataclass
class FakeSecretsManager:
    current: str = SECRET
    previous: str | None = None
    calls: list[str] = field(default_factory=list)

    def get_secret_value(self, SecretId: str, VersionStage: str):  # noqa: N803 - boto3's names
        self.calls.append(VersionStage)
        value = self.current if VersionStage == "AWSCURRENT" else self.previous
        if value is None:
            raise NotFound()
        return {"SecretString": value}


@dataclass
class Clock:
    now: float = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_secret_is_cached_for_its_ttl_then_read_again():
    client, clock = FakeSecretsManager(), Clock()
    source = SecretsManagerSecrets("arn:secret", ttl_seconds=300, client=client, clock=clock)
    assert source.secrets() == (SECRET,)
    clock.now = 299
    source.secrets()
    assert client.calls == ["AWSCURRENT", "AWSPREVIOUS"]
    client.current = "rotated-secret-0123456789"
    clock.now = 300
    assert source.secrets() == ("rotated-secret-0123456789",)
    assert len(client.calls) == 4


def test_a_failed_verification_rereads_a_rotated_secret_at_most_every_refresh_interval():
    client, clock = FakeSecretsManager(), Clock()
    source = SecretsManagerSecrets(
        "arn:secret", ttl_seconds=300, refresh_interval_seconds=30, client=client, clock=clock
    )
    source.secrets()
    rotated = "rotated-secret-0123456789"
    client.current, client.previous = rotated, SECRET
    clock.now = 10
    with pytest.raises(BadSignature):  # too soon to re-read: still the old secret only
        verify(source, headers(secret=rotated), BODY, now=NOW)
    clock.now = 31
    assert verify(source, headers(secret=rotated), BODY, now=NOW)
    assert verify(source, headers(secret=SECRET), BODY, now=NOW)  # the previous one still works
    assert source.secrets() == (rotated, SECRET)


@pytest.mark.parametrize("value", ["short", ""])
def test_an_unusable_secret_is_the_nodes_fault_not_the_senders(value):
    source = SecretsManagerSecrets("arn:secret", client=FakeSecretsManager(current=value))
    with pytest.raises(SecretUnavailable, match="at least 16"):
        source.secrets()
