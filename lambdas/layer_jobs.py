"""The layer-jobs function: starts layer builds, populates and removals (asynchronous calls from the
API), finishes them on their tasks' STOPPED events (EventBridge), and reserves and publishes the
versions persistent-layer targets write (synchronous calls). See ``pennflow.layers.jobs``.

A malformed event is answered with its problems and never retried; a failing AWS call raises, so
the asynchronous retry replays the event (every step is idempotent).
"""

from __future__ import annotations

import logging
from functools import cache
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from lambdas.observability import logger, metrics, tracer
from pennflow.layers.ecs_jobs import EcsLayerJobs, handle_event

METRIC_BY_OUTCOME = {
    "started": "LayerJobsStarted",
    "published": "LayerVersionsPublished",
    "failed": "LayerJobsFailed",
}


@cache
def layer_jobs() -> EcsLayerJobs:
    """Built once per container from the environment the stack sets (a missing variable fails here)."""
    return EcsLayerJobs.from_env()


@logger.inject_lambda_context
@metrics.log_metrics
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    result = handle_event(event, layer_jobs())
    metric = METRIC_BY_OUTCOME.get(result.get("outcome", ""))
    if metric:
        metrics.add_metric(name=metric, unit=MetricUnit.Count, value=1)
    level = {"rejected": logging.ERROR, "failed": logging.WARNING}.get(
        result.get("outcome", ""), logging.INFO
    )
    logger.log(level, "layer job event handled", extra={"result": result})
    return result
