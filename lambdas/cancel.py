"""Cancel a run: invoked asynchronously by the API with ``{"runId": ...}``."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lambdas.observability import logger, metrics, rejected, tracer
from lambdas.settings import node_for
from pennflow.node.cancel import cancel_run
from pennflow.node.lifecycle import RunNotFound


class CancelEvent(BaseModel):
    model_config = ConfigDict(extra="ignore")

    run_id: str = Field(alias="runId", min_length=1)


@logger.inject_lambda_context
@metrics.log_metrics
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    try:
        request = CancelEvent.model_validate(event)
    except ValidationError as exc:
        return rejected("cancel", exc)
    logger.append_keys(run_id=request.run_id)
    try:
        status = cancel_run(request.run_id, node_for(context))
    except RunNotFound as exc:
        logger.error(str(exc))
        return {"runId": request.run_id, "error": str(exc)}
    logger.info("cancel handled", extra={"status": status.value})
    return {"runId": request.run_id, "status": status.value}
