"""Track runs from EventBridge: execution, ECS task and lambda processor step events -> run store.

Events that are not ours, or malformed, are ignored with a precise log line (see
``pennflow.node.tracking``); only a failing AWS call raises, for the asynchronous retry to replay it.
"""

from __future__ import annotations

from typing import Any

from lambdas.observability import logger, metrics, tracer
from lambdas.settings import node_for
from pennflow.node.tracking import handle_event


@logger.inject_lambda_context
@metrics.log_metrics
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: Any) -> dict[str, str]:
    outcome = handle_event(event, node_for(context))
    logger.info(outcome, extra={"detail_type": event.get("detail-type") if isinstance(event, dict) else None})
    return {"result": outcome}
