"""How every route documents its responses, so all of them share one error shape (ErrorBody)."""

from __future__ import annotations

from typing import Any

from pennflow.api.models import ErrorBody
from pennflow.api.requests import MAX_BODY_BYTES, MAX_JSON_DEPTH
from pennflow.workflow.definition import MAX_PROCESSORS


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
    413: f"Body larger than {MAX_BODY_BYTES:,} bytes ({MAX_BODY_BYTES // 1024} KiB)",
    415: "Body is not JSON",
    422: "A field is invalid (the error names each one), or the body passes a limit: arrays and objects "
    f"nested more than {MAX_JSON_DEPTH} levels deep, a workflow of more than {MAX_PROCESSORS:,} processors",
    503: "The node could not take the request; retry",
}
