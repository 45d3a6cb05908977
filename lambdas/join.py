"""Join a node waiting on another path: the state machine's ``<id> waits`` and ``<id> done`` states call it.

``{"action": "wait", "runId", "node", "deps", "token"[, "done", "waiters"]}`` stores a waiting
state's task token, ``{"action": "done", "runId", "node", "waiters"}`` marks a node done; either
releases the waiters whose dependencies are all done (``SendTaskSuccess``), see
:mod:`pennflow.node.joins`. Invoked synchronously by Step Functions: a malformed event raises a
precise error, which fails the state (retried a few times, then the run fails visibly).
"""

from __future__ import annotations

import os
from functools import cache
from typing import Any

from pydantic import ValidationError

from lambdas.observability import logger, metrics, problems_of, tracer
from pennflow.node.joins import JoinError, JoinRequest, JoinStore, handle

TABLE_VARIABLE = "JOINS_TABLE"


@cache
def store() -> JoinStore:
    table = os.environ.get(TABLE_VARIABLE, "").strip()
    if not table:
        raise JoinError(f"{TABLE_VARIABLE}: required (the join table's name)")
    return JoinStore(table)


@logger.inject_lambda_context
@metrics.log_metrics
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    try:
        request = JoinRequest.model_validate(event)
    except ValidationError as exc:
        raise JoinError(f"malformed join event: {'; '.join(problems_of(exc))}") from None
    logger.append_keys(run_id=request.run_id, node=request.node)
    answer = handle(request, store())
    logger.info("join", extra={"action": request.action, **answer.as_dict()})
    return answer.as_dict()
