"""The processor-builds function: CodeBuild's state-change events of the node's build project
(EventBridge) make a registered processor READY (image digest, manifest) or FAILED (the build log's
tail). See ``pennflow.node.processor_builds``; an event for a state in between changes nothing.
"""

from __future__ import annotations

import os
from functools import cache
from typing import Any

from lambdas.observability import logger, metrics, tracer
from pennflow.node.processor_builds import BuildOutputs, NodeProcessors, finish_build


@cache
def node_processors() -> NodeProcessors:
    found = NodeProcessors.from_env(os.environ)
    if found is None:
        raise RuntimeError(
            "PROCESSORS_TABLE, PROCESSOR_BUILD_PROJECT, PROCESSOR_MANIFEST_BUCKET and "
            "PROCESSOR_REPOSITORY_URI are required"
        )
    return found


@logger.inject_lambda_context
@metrics.log_metrics
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    processors = node_processors()
    outputs = BuildOutputs(processors.builds.settings)
    record = finish_build(event.get("detail") or {}, registry=processors.registry, outputs=outputs)
    if record is None:
        return {"outcome": "ignored"}
    logger.info("processor build finished", extra={"processor": record.id, "status": record.status.value})
    return {"outcome": record.status.value, "processor": record.id, "digest": record.image_digest}
