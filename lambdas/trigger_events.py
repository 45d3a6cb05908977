"""Dataset events from EventBridge (``source: pennflow.datasets``, ``detail-type: Dataset Files Added``).

No signature: EventBridge's IAM is the authentication. The detail goes through the webhook's path
(``TriggerIntake.accept``). A malformed event is logged and dropped (a retry cannot fix it); a
failing AWS call raises, so the asynchronous retry replays the event (its claim was released).
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from lambdas.observability import logger, metrics, rejected, tracer
from pennflow.triggers import wiring
from pennflow.triggers.models import EventBridgeDatasetEvent


@logger.inject_lambda_context
@metrics.log_metrics
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    try:
        parsed = EventBridgeDatasetEvent.model_validate(event)
    except ValidationError as exc:
        return rejected("dataset files added", exc)
    result = wiring.intake().accept(parsed.detail).as_dict()
    logger.info("dataset event handled", extra=result)
    return result
