"""How every route documents its responses, so all of them share one error shape (ErrorBody).

Routes list what their own logic answers; ``with_edge_responses`` adds to every operation what the
handler answers around any route: the preflight's refusals of a body and the internal error.
"""

from __future__ import annotations

from typing import Any

from pennflow.api.models import ErrorBody
from pennflow.api.requests import MAX_BODY_BYTES, MAX_JSON_DEPTH, METHODS_WITH_BODY
from pennflow.workflow.limits import MAX_PROCESSORS


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
    500: "The node failed, not the request: quote the error's requestId when reporting it",
    503: "The node could not take the request; retry",
}
# pennflow.api.requests.preflight refuses these for any request with a body, before routing.
PREFLIGHT_STATUSES = (400, 413, 415)
ERROR_BODY_REF = "#/components/schemas/ErrorBody"
# What the resolver would document for a 500; the node's 500 is an ErrorBody (lambdas/api.py).
UNUSED_SCHEMAS = ("ResponseValidationError",)


def with_edge_responses(document: dict[str, Any]) -> dict[str, Any]:
    """The document with every status the handler can answer listed on each operation it applies to."""
    for operations in document["paths"].values():
        for method, operation in operations.items():
            responses = operation["responses"]
            edge = PREFLIGHT_STATUSES if method.upper() in METHODS_WITH_BODY else ()
            for code in (*edge, 500):
                if code == 500 or str(code) not in responses:
                    responses[str(code)] = _error_response(code)
    schemas = document.get("components", {}).get("schemas", {})
    for name in UNUSED_SCHEMAS:
        schemas.pop(name, None)
    return document


def _error_response(code: int) -> dict[str, Any]:
    return {
        "description": DESCRIPTIONS[code],
        "content": {"application/json": {"schema": {"$ref": ERROR_BODY_REF}}},
    }
