"""API errors: one JSON shape for every 4xx/5xx, naming the field at fault.

``{"error": {"code", "message", "fields": [{"field", "in", "message"}], "faults"?, "requestId"?}}``
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pennflow.api.models import DefinitionFault, ErrorBody, ErrorDetail, FieldError
from pennflow.workflow.definition import Fault
from pennflow.workflow.limits import MAX_PROCESSORS

LOCATIONS = ("body", "query", "path", "header")


class ApiError(Exception):
    status = 400
    code = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        fields: Sequence[FieldError] = (),
        faults: Sequence[DefinitionFault] | None = None,
        code: str | None = None,
        status: int | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.fields = list(fields)
        self.faults = None if faults is None else list(faults)
        if code:
            self.code = code
        if status:
            self.status = status

    def body(self, request_id: str | None = None) -> dict[str, Any]:
        detail = ErrorDetail(
            code=self.code,
            message=self.message,
            fields=self.fields,
            faults=self.faults,
            request_id=request_id,
        )
        body = ErrorBody(error=detail).model_dump(mode="json", by_alias=True)
        body["error"] = {k: v for k, v in body["error"].items() if v is not None}  # only what applies
        return body


class BadRequest(ApiError):
    status, code = 400, "bad_request"


class NotFound(ApiError):
    status, code = 404, "not_found"


class Conflict(ApiError):
    status, code = 409, "conflict"


class PayloadTooLarge(ApiError):
    status, code = 413, "payload_too_large"


class UnsupportedMediaType(ApiError):
    status, code = 415, "unsupported_media_type"


class InvalidRequest(ApiError):
    status, code = 422, "invalid_request"


class Unavailable(ApiError):
    status, code = 503, "unavailable"


def field_error(field: str, message: str, location: str = "body") -> FieldError:
    return FieldError(field=field, location=location, message=message)


def invalid_definition(faults: Iterable[Fault]) -> InvalidRequest:
    listed = [DefinitionFault(processor=f.processor, field=f.field, message=f.message) for f in faults]
    fields = [
        field_error(f"processors.{f.processor}.{f.field}" if f.processor else f.field, f.message)
        for f in listed
    ]
    return InvalidRequest(
        f"invalid workflow definition: {len(listed)} fault(s)",
        fields=fields,
        faults=listed,
        code="invalid_definition",
    )


def too_complex() -> InvalidRequest:
    """What a request that makes the route's logic recurse past Python's limit gets: its size is at fault."""
    return InvalidRequest(
        "the request is nested or chained too deeply to process (a workflow may have at most "
        f"{MAX_PROCESSORS:,} processors): make it smaller",
        fields=[field_error("body", "too deeply nested or chained")],
        code="too_complex",
    )


def from_validation_errors(
    errors: Sequence[Mapping[str, Any]], known_fields: Mapping[str, Iterable[str]] | None = None
) -> ApiError:
    """Powertools/pydantic request validation errors -> one 4xx naming every field at fault.

    ``known_fields`` maps a location to the names it accepts, to suggest the field a misspelt
    one was meant to be.
    """
    fields = [_field_error(err, known_fields or {}) for err in errors]
    if any(err.get("type") == "json_invalid" for err in errors):
        return BadRequest("the request body is not valid JSON", fields=fields, code="invalid_json")
    names = ", ".join(dict.fromkeys(f"{f.location} {f.field}" for f in fields))
    return InvalidRequest(f"invalid request: {names}", fields=fields)


def _field_error(err: Mapping[str, Any], known_fields: Mapping[str, Iterable[str]]) -> FieldError:
    loc = tuple(err.get("loc") or ())
    location = loc[0] if loc and loc[0] in LOCATIONS else "body"
    parts = [str(part) for part in loc[1:]] if loc and loc[0] in LOCATIONS else [str(p) for p in loc]
    kind = err.get("type", "")
    if kind == "json_invalid":
        detail = (err.get("ctx") or {}).get("error", "malformed")
        position = parts[0] if parts else "?"
        return field_error("body", f"invalid JSON at character {position}: {detail}")
    if location == "body" and parts and parts[0] == "body":
        parts = parts[1:]  # Powertools nests an embedded body under its parameter name
    is_key = bool(parts) and parts[-1] == "[key]"  # pydantic's mark for a bad mapping key
    parts = parts[:-1] if is_key else parts
    message = _message(err, parts, known_fields.get(location, ()))
    if location == "header":
        parts = ["-".join(word.capitalize() for word in ".".join(parts).split("-"))]  # idempotency-key
    return field_error(
        ".".join(parts) or location, f"invalid name: {message}" if is_key else message, location
    )


def _message(err: Mapping[str, Any], parts: list[str], known: Iterable[str]) -> str:
    kind = err.get("type", "")
    if kind == "missing":
        return "required"
    if kind == "extra_forbidden":
        hint = difflib.get_close_matches(parts[-1] if parts else "", list(known), n=1)
        return "unknown field" + (f"; did you mean {hint[0]!r}?" if hint else "")
    if kind == "string_pattern_mismatch":
        pattern = (err.get("ctx") or {}).get("pattern", "")
        return f"does not match the expected format {pattern}"
    return str(err.get("msg", "invalid value"))
