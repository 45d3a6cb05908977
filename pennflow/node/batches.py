"""Scatter: split a processor's INPUT_DIR into batches (the list-batches Lambda, DESIGN §2 scatter).

The state machine passes the input folder as the task sees it (under ``/mnt/run``, the run's
slot). This Lambda mounts the runs access point, so the same folder is the run's slot folder
under the runs mount. Each batch becomes a folder of links to its files
(:func:`pennflow.workflow.contract.stage_batch`). The list of those folders, as the task sees them, goes
to the results bucket (``runs/<run_id>/<processor_id>/batches.json``), where the scatter's Distributed
Map reads it: the answer is only its location and count, so no state carries the list (up to
10,000 batches would be about 600 KB, over Step Functions' 256 KiB payload limit). A fan-in processor that scatters gets its union INPUT_DIR built here, since its batch tasks read
the batch folders, not the union.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from pennflow.node.lifecycle import Node, RunNotFound
from pennflow.workflow.contract import (
    RUN_MOUNT,
    RunLayout,
    build_union,
    list_input_files,
    make_batches,
    stage_batch,
)
from pennflow.workflow.limits import MAX_SCATTER_BATCHES

MAX_BATCHES = MAX_SCATTER_BATCHES
BATCHES_NAME = "batches.json"


def batches_key(run_id: str, processor_id: str) -> str:
    return f"runs/{run_id}/{processor_id}/{BATCHES_NAME}"


def write_batch_manifest(
    s3: Any, bucket: str, run_id: str, processor_id: str, batches: Sequence[dict[str, object]]
) -> dict[str, object]:
    """Put the batch list where the scatter's Distributed Map reads it; answer its location and count
    (the ``<processor> batches`` state's result, see ``pennflow.workflow.asl``)."""
    key = batches_key(run_id, processor_id)
    s3.put_object(
        Bucket=bucket,
        Key=key,
        Body=json.dumps(list(batches), separators=(",", ":")).encode(),
        ContentType="application/json",
        ServerSideEncryption="AES256",
    )
    return {"bucket": bucket, "key": key, "count": len(batches)}


class BatchRequest(BaseModel):
    """The state machine's payload (see ``pennflow.workflow.asl``: ``<processor> batches`` state)."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    run_id: str = Field(alias="runId", min_length=1)
    processor_id: str = Field(alias="processorId", min_length=1)
    input_dir: str = Field(alias="inputDir", min_length=1)
    batch_size: int = Field(alias="batchSize", ge=1)


class BatchError(ValueError):
    """The batches cannot be made (bad folder, no slot, too many batches)."""


def list_batches(request: BatchRequest, node: Node) -> dict[str, object]:
    slot = node.slots.held_by(request.run_id)
    if slot is None:
        raise BatchError(f"run {request.run_id!r} holds no run slot: is it running?")
    slot_dir = node.folders.slot_dir(slot)
    try:
        input_dir = node.folders.task_path(slot, request.input_dir)
    except ValueError as exc:
        raise BatchError(f"inputDir {exc}") from None
    layout = RunLayout(RUN_MOUNT)
    if PurePosixPath(request.input_dir) == layout.union_dir(request.processor_id):
        _build_union(request, node, slot_dir)
    if not input_dir.is_dir():
        raise BatchError(
            f"processor {request.processor_id!r}: its input folder {request.input_dir} does not exist"
        )

    files = list_input_files(input_dir)
    batches = make_batches(files, request.batch_size)
    if len(batches) > MAX_BATCHES:
        raise BatchError(
            f"processor {request.processor_id!r}: {len(files)} files in batches of {request.batch_size} make "
            f"{len(batches)} batches, over {MAX_BATCHES}; raise scatter.batchSize"
        )
    batches_root = slot_dir / request.processor_id / "batches"
    shutil.rmtree(batches_root, ignore_errors=True)  # a retried listing starts clean
    answer = []
    for index, batch in enumerate(batches):
        task_dir = layout.batch_dir(request.processor_id, index)
        stage_batch(input_dir, batch, slot_dir / task_dir.relative_to(RUN_MOUNT))
        answer.append({"index": index, "inputDir": str(task_dir)})
    return write_batch_manifest(
        node.s3, node.config.results_bucket, request.run_id, request.processor_id, answer
    )


def _build_union(request: BatchRequest, node: Node, slot_dir: Path) -> None:
    run = node.store.get_run(request.run_id)
    if run is None:
        raise RunNotFound(request.run_id)
    version = node.workflows.get_version(run.workflow, run.definition_hash)
    if version is None:
        raise BatchError(f"run {request.run_id!r}: its workflow definition is not registered")
    processor = version.workflow().processor(request.processor_id)
    layout = RunLayout(slot_dir)
    dest = Path(layout.union_dir(processor.id))
    shutil.rmtree(dest, ignore_errors=True)
    build_union({dep: Path(layout.output_dir(dep)) for dep in processor.dependencies}, dest)
