"""The data source's download function: the state machine calls it once per batch of the run's
manifest (``action: download``), then once to assemble and check everything (``action: verify``).

Events are those of ``pennflow.workflow.asl`` (``_data_source_states``). The run's ``/mnt/run/...`` folder
is its run slot's folder under the runs mount (``RUNS_MOUNT``). A malformed event raises
``DownloadEventError`` naming each bad field; a file whose bytes do not match Pennsieve's checksum
raises ``ChecksumMismatch`` naming the file (the error name the state machine's Retry/Catch see).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from pydantic import Field

from lambdas.observability import logger, metrics, tracer
from lambdas.settings import _EnvSettings
from pennflow.data.datasource import (
    DownloadNode,
    handle_download_event,
    parse_download_event,
    plan_settings,
    slot_task_path,
)


class DownloadFunctionSettings(_EnvSettings):
    runs_mount: Path = Field(Path("/mnt/runs"), alias="RUNS_MOUNT")
    slots_table: str = Field(alias="SLOTS_TABLE", min_length=1)
    file_system_id: str = Field(alias="FILE_SYSTEM_ID", min_length=1)
    run_slots: int = Field(alias="RUN_SLOTS", ge=1, le=50)
    pennsieve_secret: str = Field(alias="PENNSIEVE_SECRET_ARN", min_length=1)
    max_workers: int = Field(8, alias="DOWNLOAD_MAX_WORKERS", ge=1, le=64)


@cache
def download_node() -> DownloadNode:
    """Built once per container: the Pennsieve token and the connection pool outlive an invocation."""
    from pennflow.node.slots import SlotFolders, SlotPool
    from pennflow.pennsieve.node_secret import node_pennsieve

    settings = DownloadFunctionSettings()
    slots = SlotPool(
        settings.slots_table, file_system_id=settings.file_system_id, slot_count=settings.run_slots
    )
    return DownloadNode(
        task_path=slot_task_path(slots, SlotFolders(settings.runs_mount)),
        client=node_pennsieve(),
        settings=plan_settings(settings.max_workers),
    )


@logger.inject_lambda_context
@metrics.log_metrics
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    request = parse_download_event(event)  # a malformed event fails before anything is touched
    logger.append_keys(run_id=request.run_id, processor_id=request.processor_id, action=request.action)
    result = handle_download_event(request, download_node())
    if result["action"] == "download":
        metrics.add_metric(name="DownloadedBytes", unit=MetricUnit.Bytes, value=result["bytes"])
        metrics.add_metric(name="DownloadedFiles", unit=MetricUnit.Count, value=result["downloaded"])
    else:
        metrics.add_metric(name="VerifiedFiles", unit=MetricUnit.Count, value=result["files"])
    logger.info("download step done", extra=result)
    return result
