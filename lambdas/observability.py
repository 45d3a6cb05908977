"""The one Logger, Tracer and Metrics every handler uses (Powertools), and the run metrics.

Handlers stack the decorators in one order: ``@logger.inject_lambda_context``, then
``@metrics.log_metrics``, then ``@tracer.capture_lambda_handler``.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit, single_metric
from pydantic import ValidationError

# The stack sets both for every function: the service is the node's name, so each node's alarms and
# dashboard (stacks/monitoring.py) read its own metrics, by the `service` dimension.
SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME") or "pennflow"
NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or "pennflow"
RUN_COST = "RunCost"  # stacks.constants.RUN_COST_METRIC: USD per run, by node (service) and workflow

# Most status events and cancels emit no metric; Powertools would warn about each of those flushes.
warnings.filterwarnings("ignore", message="No application metrics to publish", category=UserWarning)

logger = Logger(service=SERVICE)
# Patch only what the handlers call: auto-patching every supported library imports them all and
# triples the cold start (measured in benchmarks/cold_start.py).
tracer = Tracer(service=SERVICE, patch_modules=("botocore", "requests"))
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)


class MetricsListener:
    """The lifecycle's listener: RunsStarted, RunsSucceeded, RunsFailed, RunDuration, ProcessorDuration,
    RunCost (USD)."""

    def run_started(self, run_id: str, workflow: str) -> None:
        metrics.add_metric(name="RunsStarted", unit=MetricUnit.Count, value=1)

    def run_finished(self, summary: Any) -> None:
        status = getattr(summary.status, "value", summary.status)
        if status == "SUCCEEDED":
            metrics.add_metric(name="RunsSucceeded", unit=MetricUnit.Count, value=1)
        elif status == "FAILED":
            metrics.add_metric(name="RunsFailed", unit=MetricUnit.Count, value=1)
        if summary.duration_seconds is not None:
            metrics.add_metric(name="RunDuration", unit=MetricUnit.Seconds, value=summary.duration_seconds)
        cost = getattr(summary, "cost", None)
        if cost is not None:
            # USD per run, by node (the service dimension) and workflow: the dashboard's cost per workflow per day.
            with single_metric(
                name=RUN_COST,
                unit=MetricUnit.NoUnit,
                value=float(cost.get("totalUsd", 0.0)),
                namespace=NAMESPACE,
                default_dimensions={"service": SERVICE},
            ) as metric:
                metric.add_dimension(name="workflow", value=summary.workflow)
        for processor_id, seconds in summary.processor_seconds.items():
            # Its own metric set: the processor dimension must not spread to the run metrics.
            with single_metric(
                name="ProcessorDuration",
                unit=MetricUnit.Seconds,
                value=seconds,
                namespace=NAMESPACE,
                default_dimensions={"service": SERVICE},
            ) as metric:
                metric.add_dimension(name="processor", value=processor_id)


def problems_of(exc: ValidationError) -> list[str]:
    """One line per invalid field of an event: ``field.path: what is wrong``."""
    return [
        f"{'.'.join(str(part) for part in error['loc']) or 'event'}: {error['msg']}" for error in exc.errors()
    ]


def rejected(what: str, exc: ValidationError) -> dict[str, Any]:
    """Log a malformed event precisely and say so in the result (an exception would only be retried)."""
    problems = problems_of(exc)
    logger.error(f"malformed {what} event", extra={"problems": problems})
    return {"error": f"malformed {what} event", "problems": problems}
