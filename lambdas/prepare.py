"""Prepare a run: queue it, and start it (or older queued runs) while run slots are free.

Invoked asynchronously by the API with ``{"runId": ...}``; a malformed event or an unknown run is
logged and answered, not raised, so the asynchronous retries never replay a hopeless event. A run
whose task definitions do not fit in this invocation's time is handed on, holding its slot, to a
new invocation with the same event (outcome ``preparing``; see ``pennflow.node.resume``).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lambdas.observability import logger, metrics, rejected, tracer
from lambdas.settings import node_for
from pennflow.node.lifecycle import RunNotFound, prepare_run


class PrepareEvent(BaseModel):
    model_config = ConfigDict(extra="ignore")

    run_id: str = Field(alias="runId", min_length=1)


@logger.inject_lambda_context
@metrics.log_metrics
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    try:
        request = PrepareEvent.model_validate(event)
    except ValidationError as exc:
        return rejected("prepare", exc)
    logger.append_keys(run_id=request.run_id)
    try:
        result = prepare_run(request.run_id, node_for(context))
    except RunNotFound as exc:
        logger.error(str(exc))
        return {"runId": request.run_id, "error": str(exc)}
    logger.info(
        "prepared", extra={"outcome": result.outcome, "detail": result.detail, "slot": result.slot_id}
    )
    return {
        "runId": result.run_id,
        "outcome": result.outcome,
        "detail": result.detail,
        "slot": result.slot_id,
    }
