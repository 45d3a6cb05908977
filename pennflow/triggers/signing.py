"""The webhook's signatures: HMAC-SHA256 over ``f"{timestamp}.{raw_body}"`` with a shared secret.

Headers::

    X-Pennflow-Timestamp: 1735689600            (unix seconds, when the sender signed)
    X-Pennflow-Signature: v1=<64 hex digits>    (several comma-separated entries are accepted)

The timestamp is inside the signed text, so a captured request cannot be replayed with a fresh
one; requests signed more than the tolerance (300 s) away from now are refused as expired.
Signatures are compared in constant time (``hmac.compare_digest``).

The secret lives in Secrets Manager (a plain string). ``SecretsManagerSecrets`` caches it per
container for a TTL and also accepts the ``AWSPREVIOUS`` version, so rotating the secret never
refuses a sender still signing with the old one; when no cached secret verifies a signature it
fetches again (at most every ``refresh_interval`` seconds), so a rotation is seen at once.
Powertools' parameter cache is not used: its key ignores the version stage and its clock cannot
be injected.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pennflow import aws

TIMESTAMP_HEADER = "X-Pennflow-Timestamp"
SIGNATURE_HEADER = "X-Pennflow-Signature"
SCHEME = "v1"
DEFAULT_TOLERANCE_SECONDS = 300
MIN_SECRET_LENGTH = 16
TIMESTAMP_RE = re.compile(r"^[0-9]{1,12}$")
SIGNATURE_RE = re.compile(r"^[0-9a-fA-F]{64}$")
MAX_SIGNATURES = 5


class SignatureError(Exception):
    status = 401
    code = "invalid_signature"
    header = SIGNATURE_HEADER


class MalformedHeader(SignatureError):
    status = 400
    code = "malformed_signature_header"

    def __init__(self, header: str, message: str):
        super().__init__(f"{header}: {message}")
        self.header = header
        self.detail = message


class BadSignature(SignatureError):
    pass


class Expired(SignatureError):
    code = "signature_expired"
    header = TIMESTAMP_HEADER


class SecretUnavailable(RuntimeError):
    """The secret could not be read, or is unusable: the node's fault, not the sender's."""


@dataclass(frozen=True)
class SignedHeaders:
    timestamp: int
    signatures: tuple[str, ...]


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The hex digest for a timestamp and raw body (what a sender computes)."""
    message = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signature_header(secret: str, timestamp: int, body: bytes) -> str:
    return f"{SCHEME}={sign(secret, timestamp, body)}"


def parse_headers(headers: Mapping[str, str]) -> SignedHeaders:
    """The timestamp and v1 signatures of a request (header names are case-insensitive)."""
    lowered = {str(k).lower(): v for k, v in headers.items()}
    raw_timestamp = lowered.get(TIMESTAMP_HEADER.lower())
    raw_signature = lowered.get(SIGNATURE_HEADER.lower())
    if not isinstance(raw_timestamp, str) or not raw_timestamp.strip():
        raise MalformedHeader(TIMESTAMP_HEADER, "required")
    if not TIMESTAMP_RE.match(raw_timestamp.strip()):
        raise MalformedHeader(TIMESTAMP_HEADER, "must be unix seconds (digits only)")
    if not isinstance(raw_signature, str) or not raw_signature.strip():
        raise MalformedHeader(SIGNATURE_HEADER, "required")
    signatures = []
    for entry in raw_signature.split(",")[: MAX_SIGNATURES * 2]:
        scheme, sep, value = entry.strip().partition("=")
        if not sep:
            raise MalformedHeader(SIGNATURE_HEADER, f"expected {SCHEME}=<hex>, got {entry.strip()[:20]!r}")
        if scheme != SCHEME:
            continue  # a later scheme a newer sender adds beside v1
        if not SIGNATURE_RE.match(value):
            raise MalformedHeader(SIGNATURE_HEADER, f"{SCHEME} must be 64 hex digits (HMAC-SHA256)")
        signatures.append(value.lower())
    if not signatures:
        raise MalformedHeader(SIGNATURE_HEADER, f"no {SCHEME}=<hex> signature")
    return SignedHeaders(int(raw_timestamp.strip()), tuple(signatures[:MAX_SIGNATURES]))


def matches(secrets: Sequence[str], signed: SignedHeaders, body: bytes) -> bool:
    """Whether any signature is right for any secret; every pair is compared in constant time."""
    found = False
    for secret in secrets:
        expected = sign(secret, signed.timestamp, body)
        for candidate in signed.signatures:
            found |= hmac.compare_digest(expected, candidate)
    return found


def verify(
    secrets: SecretSource,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float,
    tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
) -> SignedHeaders:
    """Check a request's signature, then its age. Raises a SignatureError (or SecretUnavailable)."""
    signed = parse_headers(headers)
    if not matches(secrets.secrets(), signed, body) and not matches(
        secrets.secrets(refresh=True), signed, body
    ):
        raise BadSignature(f"{SIGNATURE_HEADER} does not match the body and timestamp")
    age = now - signed.timestamp
    if abs(age) > tolerance_seconds:
        when = f"{int(age)} s ago" if age > 0 else f"{int(-age)} s in the future"
        raise Expired(f"expired: signed {when}; at most {tolerance_seconds} s either way are accepted")
    return signed


# ------------------------------------------------------------------ secrets


class SecretSource(Protocol):
    def secrets(self, *, refresh: bool = False) -> Sequence[str]:
        """The secrets a signature may be made with, current first. ``refresh`` asks for a re-read."""


@dataclass(frozen=True)
class StaticSecrets:
    values: tuple[str, ...]

    def secrets(self, *, refresh: bool = False) -> Sequence[str]:
        return self.values


class SecretsManagerSecrets:
    def __init__(
        self,
        secret_id: str,
        *,
        ttl_seconds: float = 300,
        refresh_interval_seconds: float = 30,
        client: Any = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.secret_id = secret_id
        self.ttl_seconds = ttl_seconds
        self.refresh_interval_seconds = refresh_interval_seconds
        self._client = client
        self._clock = clock
        self._cached: tuple[str, ...] = ()
        self._fetched_at: float | None = None
        self._lock = threading.Lock()

    def secrets(self, *, refresh: bool = False) -> Sequence[str]:
        with self._lock:
            now = self._clock()
            age = None if self._fetched_at is None else now - self._fetched_at
            stale = age is None or age >= self.ttl_seconds
            may_refresh = refresh and (age is None or age >= self.refresh_interval_seconds)
            if stale or may_refresh:
                self._cached = self._fetch()
                self._fetched_at = now
            return self._cached

    def _fetch(self) -> tuple[str, ...]:
        client = self._client or aws.client("secretsmanager")
        values = []
        for stage in ("AWSCURRENT", "AWSPREVIOUS"):
            try:
                value = client.get_secret_value(SecretId=self.secret_id, VersionStage=stage).get(
                    "SecretString"
                )
            except Exception as exc:
                if stage == "AWSPREVIOUS" and aws.error_code(exc) == "ResourceNotFoundException":
                    continue  # never rotated
                raise SecretUnavailable(
                    f"could not read the webhook secret ({aws.error_code(exc) or exc})"
                ) from exc
            if stage == "AWSCURRENT" and (not isinstance(value, str) or len(value) < MIN_SECRET_LENGTH):
                raise SecretUnavailable(
                    f"the webhook secret must be a string of at least {MIN_SECRET_LENGTH} characters"
                )
            if isinstance(value, str) and len(value) >= MIN_SECRET_LENGTH and value not in values:
                values.append(value)
        return tuple(values)
