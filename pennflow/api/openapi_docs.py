"""How every route documents its responses, so all of them share one error shape (ErrorBody)."""

from __future__ import annotations

from typing import Any

from pennflow.api.models import ErrorBody


def ok(model: type, description: str = "OK", status: int = 200) -> dict[int, dict[str, Any]]:
    return {status: {"description": description, "content": {"application/json": {"model": model}}}}


def errors(*codes: int) -> dict[int, dict[str, Any]]:
    return {
        code: {"description": DESCRIPTIONS[code], "content": {"application/json": {"model": ErrorBody}}}
        for code in codes
    }


DESCRIPTIONS = {
    400: "Malformed request (bad JSON, unknown param)",
    404: "Not found",
    409: "Conflict with the current state",
    413: "Body too large",
    415: "Body is not JSON",
    422: "A field is invalid (the error names each one)",
    503: "The node could not take the request; retry",
}
