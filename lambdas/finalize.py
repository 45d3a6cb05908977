"""Finalize a run: the state machine's last state calls it with ``{"runId", "outcome", "failure"}``.

Invoked synchronously by Step Functions: a malformed payload raises a precise error, which fails
the finalize state visibly (Step Functions retries only Lambda service errors, so no loop).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lambdas.observability import logger, metrics, problems_of, tracer
from lambdas.settings import node_for
from pennflow.node.finalize import finalize_run


class Failure(BaseModel):
    model_config = ConfigDict(extra="ignore")

    Error: str | None = None
    Cause: str | None = None


class FinalizeEvent(BaseModel):
    model_config = ConfigDict(extra="ignore")

    run_id: str = Field(alias="runId", min_length=1)
    outcome: Literal["SUCCEEDED", "FAILED"]
    failure: Failure | None = None


class MalformedFinalizeEvent(ValueError):
    pass


@logger.inject_lambda_context
@metrics.log_metrics
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    try:
        request = FinalizeEvent.model_validate(event)
    except ValidationError as exc:
        problems = "; ".join(problems_of(exc))
        raise MalformedFinalizeEvent(f"malformed finalize event: {problems}") from None
    logger.append_keys(run_id=request.run_id)
    failure = request.failure.model_dump() if request.failure else None
    summary = finalize_run(request.run_id, request.outcome, failure, node_for(context))
    failed = summary.failed
    logger.info(
        "finalized",
        extra={
            "status": summary.status.value,
            "failed_processor": failed.processor_id if failed else None,
            "logs_archived": len(summary.log_keys),
            "slot_released": summary.slot_released,
        },
    )
    return {
        "runId": summary.run_id,
        "status": summary.status.value,
        "failedProcessor": failed.processor_id if failed else None,
        "exitCode": failed.exit_code if failed else None,
    }
