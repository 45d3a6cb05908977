"""Checks on the raw request that come before routing, so no malformed body can reach a 5xx.

``preflight`` refuses bodies that are too large (413), not JSON, or not decodable; ``json_body`` is
the resolver's JSON parser: it refuses bodies nested deeper than ``MAX_JSON_DEPTH`` (422, whether
or not the parser itself gave up on them) and turns the parser's other failures (a number too long
to convert, a repeated key) into the invalid-JSON error instead of an exception.
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
    invalid_definition,
)
from pennflow.workflow.definition import Fault
from pennflow.workflow.limits import MAX_JSON_DEPTH, MAX_PROCESSORS
from pennflow.workflow.loading import nesting_exceeds, no_duplicate_keys

# Far above any workflow definition (1,000 processors take about 70 KB), far below API Gateway's 10 MB,
# Lambda's 6 MB payload and DynamoDB's 400 KB item.
MAX_BODY_BYTES = 256 * 1024
# MAX_JSON_DEPTH (pennflow.workflow.limits, the definition loader's limit too): a definition nests 4
# levels (processors, a processor, its params, a value); the parsers and validators behind the routes
# recurse, so a deeper body is refused before any of them sees it.
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
            f"the body is {size:,} bytes; at most {MAX_BODY_BYTES:,} bytes ({MAX_BODY_BYTES // 1024} KiB) "
            "are accepted",
            fields=[field_error("body", f"larger than {MAX_BODY_BYTES:,} bytes")],
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
        value = json.loads(text, object_pairs_hook=no_duplicate_keys)
    except json.JSONDecodeError:
        raise
    except RecursionError:
        raise too_deep() from None
    except ValueError as exc:  # a repeated key (it would keep only its last value), a huge number
        raise json.JSONDecodeError(str(exc), text, 0) from None
    if nesting_exceeds(value, MAX_JSON_DEPTH):
        raise too_deep()
    if not isinstance(value, dict):
        kind = "an array" if isinstance(value, list) else f"a JSON {type(value).__name__}"
        raise InvalidRequest(
            f"the body must be a JSON object, not {kind}",
            fields=[field_error("body", "must be a JSON object")],
        )
    return value


def refuse_oversized_definition(body: Mapping[str, Any]) -> None:
    """A definition with more processors than a workflow may have is refused before it is validated
    (validating and compiling thousands of processors takes seconds for a certain refusal)."""
    processors = body.get("processors")
    if isinstance(processors, list) and len(processors) > MAX_PROCESSORS:
        message = f"{len(processors):,} processors; a workflow may have at most {MAX_PROCESSORS:,}"
        raise invalid_definition([Fault(None, "processors", message)])


def too_deep() -> InvalidRequest:
    return InvalidRequest(
        f"the body nests arrays and objects more than {MAX_JSON_DEPTH} levels deep; at most {MAX_JSON_DEPTH} "
        "are accepted",
        fields=[field_error("body", f"nested deeper than {MAX_JSON_DEPTH} levels")],
        code="too_deep",
    )


def _header(event: Mapping[str, Any], name: str) -> str:
    for key, value in (event.get("headers") or {}).items():
        if isinstance(key, str) and key.lower() == name and isinstance(value, str):
            return value
    return ""
