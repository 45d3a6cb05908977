"""Notebook sessions on the node (pennflow.node.notebooks): invoked asynchronously by the API with
``{"action": "start"|"stop", "runId": ...}``, and by EventBridge when a session's task stops."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lambdas.observability import logger, metrics, rejected, tracer
from lambdas.settings import node_for, session_settings
from pennflow.node import notebooks


class SessionEvent(BaseModel):
    model_config = ConfigDict(extra="ignore")

    action: Literal["start", "stop"]
    run_id: str = Field(alias="runId", min_length=1)


@logger.inject_lambda_context
@metrics.log_metrics
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    if isinstance(event, dict) and event.get("detail-type") == "ECS Task State Change":
        outcome = notebooks.session_stopped(event.get("detail") or {}, node_for(context))
        logger.info(outcome)
        return {"outcome": outcome}
    try:
        request = SessionEvent.model_validate(event)
    except ValidationError as exc:
        return rejected("notebooks", exc)
    logger.append_keys(run_id=request.run_id)
    node = node_for(context)
    if request.action == "start":
        started = notebooks.start_session(request.run_id, node, session_settings())
        logger.info("session start handled", extra={"outcome": started.outcome, "detail": started.detail})
        return {"runId": request.run_id, "outcome": started.outcome, "detail": started.detail}
    outcome = notebooks.stop_session(request.run_id, node)
    logger.info(outcome)
    return {"runId": request.run_id, "outcome": outcome}
