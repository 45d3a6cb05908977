"""The signed webhook over HTTP: API Gateway proxy event in, proxy response out.

The route is public (no IAM): the HMAC signature is the authentication, so nothing in the body is
looked at before the signature is verified. Checks, in order, each with one JSON error naming
what is wrong (the API's error shape):

- body larger than 256 KiB: 413; body not decodable: 400;
- missing or malformed ``X-Pennflow-Timestamp`` / ``X-Pennflow-Signature``: 400 naming the header;
- wrong signature: 401 ``invalid_signature``; signed outside the tolerance: 401 ``signature_expired``;
- body not JSON, or not a dataset event: 400 naming each field at fault;
- secret or store unavailable: 503 (the sender retries; a delivery that failed is not taken
  for a duplicate on its retry).

A repeated delivery (same event id, hence also same signature) answers **200 with
``"status": "duplicate"`` and changes nothing**, rather than 409: a sender retries on any non-2xx
answer, so a 409 to a sender whose first attempt succeeded but lost its answer would make it retry
(and alarm) for nothing, while the replay itself is harmless either way. Accepted events answer 202
(runs start when their windows close), ignored ones 200.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from pennflow.api.errors import (
    ApiError,
    BadRequest,
    PayloadTooLarge,
    Unavailable,
    field_error,
    from_validation_errors,
)
from pennflow.triggers.intake import IntakeStatus, TriggerIntake
from pennflow.triggers.models import DatasetEvent
from pennflow.triggers.signing import (
    DEFAULT_TOLERANCE_SECONDS,
    MalformedHeader,
    SecretSource,
    SecretUnavailable,
    SignatureError,
    verify,
)

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 256 * 1024
STATUS_BY_OUTCOME = {IntakeStatus.ACCEPTED: 202, IntakeStatus.DUPLICATE: 200, IntakeStatus.IGNORED: 200}


class Unauthorized(ApiError):
    status, code = 401, "unauthorized"


@dataclass(frozen=True)
class WebhookReply:
    status: int
    body: dict[str, Any]

    def proxy_response(self) -> dict[str, Any]:
        return {
            "statusCode": self.status,
            "headers": {"Content-Type": "application/json"},
            "body": json.dumps(self.body),
            "isBase64Encoded": False,
        }


def handle_proxy_event(
    event: Mapping[str, Any],
    *,
    secrets: SecretSource,
    intake: TriggerIntake,
    now: float,
    tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
) -> WebhookReply:
    """Answer one API Gateway REST proxy event."""
    request_id = _request_id(event)
    try:
        headers, body = read_request(event)
        return receive(
            headers, body, secrets=secrets, intake=intake, now=now, tolerance_seconds=tolerance_seconds
        )
    except ApiError as exc:
        return WebhookReply(exc.status, exc.body(request_id))


def read_request(event: Mapping[str, Any]) -> tuple[dict[str, str], bytes]:
    """The headers and raw body bytes of a proxy event (the signature covers the raw bytes)."""
    headers = {str(k): v for k, v in (event.get("headers") or {}).items() if isinstance(v, str)}
    text = event.get("body") or ""
    if not isinstance(text, str):
        raise BadRequest("the body must be text", fields=[field_error("body", "not text")])
    if len(text) > MAX_BODY_BYTES * 4 // 3 + 4:  # cheap early refusal before decoding
        raise _too_large(len(text))
    if event.get("isBase64Encoded"):
        try:
            body = base64.b64decode(text.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError, ValueError):
            raise BadRequest(
                "the body is not valid base64", fields=[field_error("body", "not decodable")]
            ) from None
    else:
        body = text.encode("utf-8", "surrogatepass")
    if len(body) > MAX_BODY_BYTES:
        raise _too_large(len(body))
    return headers, body


def receive(
    headers: Mapping[str, str],
    body: bytes,
    *,
    secrets: SecretSource,
    intake: TriggerIntake,
    now: float,
    tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
) -> WebhookReply:
    if len(body) > MAX_BODY_BYTES:
        raise _too_large(len(body))
    try:
        verify(secrets, headers, body, now=now, tolerance_seconds=tolerance_seconds)
    except MalformedHeader as exc:
        raise BadRequest(
            str(exc), fields=[field_error(exc.header, exc.detail, "header")], code=exc.code
        ) from None
    except SignatureError as exc:
        raise Unauthorized(
            str(exc), fields=[field_error(exc.header, str(exc), "header")], code=exc.code
        ) from None
    except SecretUnavailable as exc:
        log.error("webhook secret unavailable: %s", exc)
        raise Unavailable("the node cannot check signatures right now; retry later") from None
    event = parse_event(body)
    try:
        result = intake.accept(event)
    except Exception as exc:
        log.exception("could not handle event %s", event.event_id)
        raise Unavailable("the node could not take the event; retry later") from exc
    return WebhookReply(STATUS_BY_OUTCOME[result.status], result.as_dict())


def parse_event(body: bytes) -> DatasetEvent:
    try:
        data = json.loads(body.decode("utf-8"))
    except RecursionError:
        raise _not_json("nested too deeply") from None
    except ValueError as exc:  # undecodable text, bad JSON, a number too long to convert
        raise _not_json(str(exc)) from None
    try:
        return DatasetEvent.model_validate(data)
    except ValidationError as exc:
        fields = from_validation_errors(exc.errors(include_url=False, include_input=False)).fields
        names = ", ".join(dict.fromkeys(f.field for f in fields))
        raise BadRequest(f"not a dataset event: {names}", fields=fields, code="invalid_event") from None


def _not_json(detail: str) -> BadRequest:
    return BadRequest(
        "the body is not valid JSON", fields=[field_error("body", f"not JSON: {detail}")], code="invalid_json"
    )


def _too_large(size: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the body is {size} bytes; at most {MAX_BODY_BYTES} are accepted",
        fields=[field_error("body", f"larger than {MAX_BODY_BYTES} bytes")],
    )


def _request_id(event: Mapping[str, Any]) -> str | None:
    context = event.get("requestContext")
    return context.get("requestId") if isinstance(context, Mapping) else None
