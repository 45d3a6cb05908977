"""Checks on the raw request that come before routing, so no malformed body can reach a 5xx.

``preflight`` refuses bodies that are too large, not JSON, or not decodable; ``json_body`` is the
resolver's JSON parser, turning the parser's own failures (nesting too deep, a number too long
to convert) into the invalid-JSON error instead of an exception.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

from pennflow.api.errors import (
    ApiError,
    BadRequest,
    InvalidRequest,
    PayloadTooLarge,
    UnsupportedMediaType,
    field_error,
)

# Far above any workflow definition, far below Lambda's 6 MB payload and DynamoDB's 400 KB item.
MAX_BODY_BYTES = 256 * 1024
METHODS_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})


def preflight(event: Mapping[str, Any]) -> ApiError | None:
    """The error to answer with before routing, or None when the request may proceed."""
    if not isinstance(event, Mapping) or str(event.get("httpMethod", "")).upper() not in METHODS_WITH_BODY:
        return None
    body = event.get("body")
    if not body:
        return None
    media_type = _header(event, "content-type").split(";")[0].strip().lower()
    if media_type and media_type != "application/json":
        return UnsupportedMediaType(
            f"send the body as application/json, not {media_type}",
            fields=[field_error("Content-Type", "must be application/json", "header")],
        )
    if not isinstance(body, str):
        return BadRequest("the body must be text", fields=[field_error("body", "not text")])
    encoded = bool(event.get("isBase64Encoded"))
    size = len(body) * 3 // 4 if encoded else len(body.encode("utf-8", "surrogatepass"))
    if size > MAX_BODY_BYTES:
        return PayloadTooLarge(
            f"the body is {size} bytes; at most {MAX_BODY_BYTES} are accepted",
            fields=[field_error("body", f"larger than {MAX_BODY_BYTES} bytes")],
        )
    if encoded:
        try:
            base64.b64decode(body.encode(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return BadRequest(
                "the body is not base64-encoded UTF-8 text", fields=[field_error("body", "not decodable")]
            )
    return None


def json_body(text: str) -> dict[str, Any]:
    """Every body this API takes is a JSON object; anything else is refused here.

    (Left to the resolver, a JSON array would be read as its first element, the way a repeated
    form field is, and the rest silently dropped.)
    """
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError:
        raise
    except (RecursionError, ValueError) as exc:
        message = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise json.JSONDecodeError(message, text, 0) from None
    if not isinstance(value, dict):
        kind = "an array" if isinstance(value, list) else f"a JSON {type(value).__name__}"
        raise InvalidRequest(
            f"the body must be a JSON object, not {kind}",
            fields=[field_error("body", "must be a JSON object")],
        )
    return value


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A repeated key would silently keep only its last value: refuse it (400) instead."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _header(event: Mapping[str, Any], name: str) -> str:
    for key, value in (event.get("headers") or {}).items():
        if isinstance(key, str) and key.lower() == name and isinstance(value, str):
            return value
    return ""
