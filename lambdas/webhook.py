"""The signed dataset-event webhook: a public API Gateway route (no IAM), the HMAC is the authentication.

API Gateway REST proxy event in -> ``pennflow.triggers.webhook.handle_proxy_event`` -> proxy response.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from lambdas.observability import logger, metrics, tracer
from pennflow.triggers import wiring
from pennflow.triggers.webhook import handle_proxy_event


@logger.inject_lambda_context(correlation_id_path="requestContext.requestId")
@metrics.log_metrics
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    reply = handle_proxy_event(
        event,
        secrets=wiring.webhook_secrets(),
        intake=wiring.intake(),
        now=wiring.now(),
        tolerance_seconds=wiring.settings().tolerance_seconds,
    )
    outcome = reply.body.get("status") or reply.body.get("error", {}).get("code")
    if 400 <= reply.status < 500:
        metrics.add_metric(name="WebhookRejected", unit=MetricUnit.Count, value=1)
    logger.info("webhook answered", extra={"status": reply.status, "outcome": outcome})
    return reply.proxy_response()
