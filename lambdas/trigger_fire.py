"""Fire debounced trigger windows: SQS messages (delayed by the debounce) -> one run per window.

Each record is one ``FireMessage``; ``Debouncer.fire`` closes its window once and starts its run
(or schedules the message again while uploads continue). A record that fails for a passing reason
is reported as a batch item failure and delivered again; a malformed one is logged and dropped.
The event source mapping must enable ``ReportBatchItemFailures``.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from pydantic import ValidationError

from lambdas.observability import logger, metrics, rejected, tracer
from pennflow.triggers import wiring
from pennflow.triggers.debounce import FireMessage, FireStatus
from pennflow.triggers.starter import ApiRunStarter

processor = BatchProcessor(event_type=EventType.SQS)


@cache
def run_starter() -> ApiRunStarter:
    """Starts runs as POST /runs does: the API function's own store, registry, launcher, idempotency."""
    from lambdas import api
    from pennflow.api import runs

    def start(request):
        return runs.start_run(
            request,
            store=api.run_store(),
            registry=api.workflow_registry(),
            launcher=api.run_launcher(),
            planning=api.run_planning(),  # keyed like POST /runs: unchanged inputs start nothing new
        )

    return ApiRunStarter(start, idempotency=api.idempotency())


def fire_record(record: SQSRecord) -> dict[str, Any]:
    try:
        message = FireMessage.model_validate_json(record.body)
    except ValidationError as exc:
        return rejected("trigger fire", exc)
    outcome = wiring.debouncer().fire(message, run_starter())
    if outcome.status in (FireStatus.STARTED, FireStatus.RESUMED):
        metrics.add_metric(name="TriggeredRuns", unit=MetricUnit.Count, value=1)
    logger.info("trigger window", extra={"ruleId": message.rule_id, **outcome.as_dict()})
    return outcome.as_dict()


@logger.inject_lambda_context
@metrics.log_metrics
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    run_starter().lambda_context = context  # bounds how long an interrupted start blocks its retries
    return process_partial_response(
        event=event, record_handler=fire_record, processor=processor, context=context
    )
