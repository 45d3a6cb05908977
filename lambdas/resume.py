"""Resume a run on the node (``pennflow.node.redrive``), and free the slots kept for resumes.

Two callers: the API, synchronously, with ``{"runId": ...}`` (the answer says resumed, refused and
why, or not found); and EventBridge schedules with ``{"action": "releaseExpired"}`` and
``{"action": "pruneFunctions"}`` (the processor functions of unused images).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lambdas.observability import logger, metrics, rejected, tracer
from lambdas.settings import node_for
from pennflow.node.lifecycle import RunNotFound
from pennflow.node.redrive import ResumeRefused, release_expired, resume_run


class ResumeEvent(BaseModel):
    model_config = ConfigDict(extra="ignore")

    run_id: str = Field(alias="runId", min_length=1)


class ReleaseEvent(BaseModel):
    model_config = ConfigDict(extra="ignore")

    # releaseExpired: free the slots kept past their time; pruneFunctions: delete the processor
    # functions of images nothing uses any more (pennflow.node.lambda_functions).
    action: Literal["releaseExpired", "pruneFunctions"]


@logger.inject_lambda_context
@metrics.log_metrics
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    if isinstance(event, dict) and "action" in event:
        try:
            scheduled = ReleaseEvent.model_validate(event)
        except ValidationError as exc:
            return rejected("resume", exc)
        if scheduled.action == "pruneFunctions":
            from pennflow.node.lambda_functions import prune_unused

            deleted = prune_unused(node_for(context))
            logger.info("processor functions pruned", extra={"functions": deleted})
            return {"deleted": deleted}
        released = release_expired(node_for(context))
        logger.info("kept slots released", extra={"runs": released})
        return {"released": released}
    try:
        request = ResumeEvent.model_validate(event)
    except ValidationError as exc:
        return rejected("resume", exc)
    logger.append_keys(run_id=request.run_id)
    try:
        resumed = resume_run(request.run_id, node_for(context))
    except RunNotFound as exc:
        return {"runId": request.run_id, "notFound": str(exc)}
    except ResumeRefused as exc:
        logger.info("resume refused", extra={"why": str(exc)})
        return {"runId": request.run_id, "refused": str(exc)}
    return {
        "runId": resumed.run_id,
        "status": resumed.status.value,
        "attempt": resumed.attempt,
        "reused": resumed.reused,
    }
