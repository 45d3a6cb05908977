"""The webhook subscriber of the node's notification topic: each run end to the owner's webhook
(Slack-compatible JSON), its URL read from the node's webhook secret.

SNS invokes it asynchronously: a delivery that fails its own retries raises, Lambda retries the
invocation, and what still fails lands in the dead-letter queue. A malformed message is logged and
dropped (no retry can fix it).
"""

from __future__ import annotations

import os
from typing import Any

from pydantic import ValidationError

from lambdas.observability import logger, metrics, rejected, tracer
from pennflow.node.run_end import deliver, webhook_url
from pennflow.workflow.run_end import RunEnded

WEBHOOK_SECRET_VARIABLE = "WEBHOOK_URL_SECRET_ARN"  # stacks.constants.ENV["notify_webhook_secret"]


@logger.inject_lambda_context
@metrics.log_metrics
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    delivered = []
    for record in event.get("Records", []):
        try:
            message = RunEnded.model_validate_json(record["Sns"]["Message"])
        except (ValidationError, KeyError, TypeError) as exc:
            if isinstance(exc, ValidationError):
                return rejected("run end", exc)
            logger.error("not an SNS notification", extra={"record": str(record)[:500]})
            continue
        status = deliver(message, webhook_url(os.environ[WEBHOOK_SECRET_VARIABLE]))
        logger.info("run end delivered", extra={"run_id": message.run_id, "status": status})
        delivered.append(message.run_id)
    return {"delivered": delivered}
