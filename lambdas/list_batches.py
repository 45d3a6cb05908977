"""List a scattered processor's batches: the state machine's ``<processor> batches`` state calls it.

Invoked synchronously by Step Functions with ``{"runId", "processorId", "inputDir", "batchSize"}``
and answers ``{"bucket", "key", "count"}``: where it wrote the batch list ``[{"index", "inputDir"}, ...]``
for the scatter's Distributed Map to read; bad input raises a precise error that
fails the state (Step Functions retries only Lambda service errors).
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from lambdas.observability import logger, metrics, problems_of, tracer
from lambdas.settings import node
from pennflow.node.batches import BatchError, BatchRequest, list_batches


@logger.inject_lambda_context
@metrics.log_metrics
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    try:
        request = BatchRequest.model_validate(event)
    except ValidationError as exc:
        problems = "; ".join(problems_of(exc))
        raise BatchError(f"malformed list-batches event: {problems}") from None
    logger.append_keys(run_id=request.run_id, processor_id=request.processor_id)
    answer = list_batches(request, node())
    logger.info("batches staged", extra={"batches": answer["count"], "key": answer["key"]})
    return answer
