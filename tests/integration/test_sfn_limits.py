"""Step Functions limits, measured in moto executions of the compiled machines.

Every state's input, output and Parallel/Map result stays under 256 KiB and every execution (and
each Distributed Map child execution) under 25,000 history events: a wide 100-processor DAG, a
1,000-batch scatter and a 20-batch download, each run to success. The figures are printed
(`pytest -s`) for the record; the assertions are the limits themselves.
"""

from __future__ import annotations

import json
import os
import random
from typing import Any

import boto3
import pytest

from pennflow.node.batches import write_batch_manifest
from pennflow.workflow.asl import compile_workflow, execution_input
from pennflow.workflow.dag import Dag
from pennflow.workflow.definition import Workflow, validate_definition
from pennflow.workflow.limits import HISTORY_EVENT_LIMIT, PAYLOAD_LIMIT
from tests.dag_strategies import workflow_from_dag
from tests.harness.moto_sfn import ExecutionResult, MotoStepFunctions

BUCKET = "pennflow-results"
RUN_ID = "r-limits"
MANIFEST_KEY = f"runs/{RUN_ID}/manifest.json"
FILES_PER_DOWNLOAD_BATCH = 200
POLL_SECONDS = float(os.environ.get("PENNFLOW_TEST_POLL", "0.05"))

pytestmark = pytest.mark.xdist_group("moto-sfn-limits")


def download_batches(count: int, files: int = FILES_PER_DOWNLOAD_BATCH) -> list[list[dict[str, Any]]]:
    """A manifest as the data plane writes it: batches of whole files, each with its id and size."""
    return [
        [
            {
                "path": f"sub-{b:03d}/ses-01/eeg/sub-{b:03d}_ses-01_task-rest_run-{f:03d}_eeg.edf",
                "packageId": f"N:package:{b:04d}-{f:04d}-0000-0000-000000000000",
                "fileId": b * 10_000 + f,
                "size": 1_000_000 + f,
            }
            for f in range(files)
        ]
        for b in range(count)
    ]


def wide_dag_workflow(processors: int, seed: int = 7) -> Workflow:
    """One data source and ``processors`` processors, each depending on one or two earlier nodes."""
    rng = random.Random(seed)
    nodes = ["source", *(f"p{i:03d}" for i in range(processors))]
    edges = sorted({(nodes[rng.randrange(j)], nodes[j]) for j in range(1, len(nodes)) for _ in range(2)})
    return workflow_from_dag(Dag.from_edges(nodes, edges), name="wide")


def scatter_workflow() -> Workflow:
    return validate_definition(
        {
            "name": "scatter",
            "processors": [
                {"id": "source", "type": "data-source"},
                {
                    "id": "per-file",
                    "image": "img/per-file:1",
                    "dependsOn": ["source"],
                    "scatter": {"over": "files", "batchSize": 1},
                },
            ],
        }
    )


def run(
    workflow: Workflow, *, batches: int = 0, downloads: int = 1, timeout: float = 60.0
) -> ExecutionResult:
    # dozens of Map items poll their tasks at once: a slower poll leaves the CPU to the tasks
    with MotoStepFunctions(sync_poll_seconds=POLL_SECONDS) as aws:
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        s3.put_object(Bucket=BUCKET, Key=MANIFEST_KEY, Body=json.dumps(download_batches(downloads)))

        def list_batches(event: dict[str, Any], context: Any) -> dict[str, Any]:
            listed = [
                {"index": i, "inputDir": f"/mnt/run/{event['processorId']}/batches/{i:05d}"}
                for i in range(batches)
            ]
            return write_batch_manifest(s3, BUCKET, event["runId"], event["processorId"], listed)

        def download(event: dict[str, Any], context: Any) -> dict[str, Any]:
            if event["action"] == "verify":
                return {"action": "verify", "files": downloads * FILES_PER_DOWNLOAD_BATCH}
            return {"action": "download", "items": len(event["batch"]), "downloaded": len(event["batch"])}

        lambdas = {"finalize": lambda event, context: {"ok": True}, "download": download}
        lambdas["list-batches"] = list_batches
        for name, handler in lambdas.items():
            aws.register_lambda(name, handler)
        task_definitions = {
            p.id: aws.register_processor(p.id) for p in workflow.processors if p.type.value == "processor"
        }
        data = execution_input(
            workflow,
            run_id=RUN_ID,
            task_definitions=task_definitions,
            params={},
            dataset_id="N:dataset:limits",
            manifest={"bucket": BUCKET, "key": MANIFEST_KEY},
            node={
                **aws.node,
                "finalizeFunction": aws.function_arn("finalize"),
                "downloadFunction": aws.function_arn("download"),
                "listBatchesFunction": aws.function_arn("list-batches"),
            },
        )
        return aws.run_execution(compile_workflow(workflow), data, timeout=timeout)


def assert_within_limits(label: str, result: ExecutionResult) -> None:
    figures = result.figures
    print(f"\n{label}: {figures.summary()}")
    assert result.status == "SUCCEEDED", (result.error, result.cause)
    assert figures.largest_payload.bytes < PAYLOAD_LIMIT, figures.largest_payload
    assert figures.history_events < HISTORY_EVENT_LIMIT
    assert figures.largest_child_history < HISTORY_EVENT_LIMIT


def test_a_wide_100_processor_dag_stays_within_the_limits():
    workflow = wide_dag_workflow(100)
    result = run(workflow)
    assert_within_limits("100-processor DAG", result)
    assert len(result.run_task_calls) == 100
    # the Parallel results were measured: each branch hands back an empty object, not its input
    # (before, one Parallel's result here was 119,250 bytes: ten copies of the run's input)
    largest_result = result.figures.largest_by_kind["result"]
    assert largest_result.bytes < 4096, largest_result


def test_a_1000_batch_scatter_runs_as_child_executions_within_the_limits():
    result = run(scatter_workflow(), batches=1000, timeout=300)
    assert_within_limits("1,000-batch scatter", result)
    assert len(result.calls_of("per-file")) == 1000
    assert sorted(int(c.environment["BATCH_INDEX"]) for c in result.calls_of("per-file")) == list(range(1000))
    assert result.figures.child_executions == 1000 + 1  # the batches, and the one download batch
    # the parent's history does not grow with the batch count, nor does the Map's result
    # (before: 8,033 events, and a 928,891-byte result holding every batch's input)
    assert result.figures.history_events < 100
    assert result.figures.largest_by_kind["result"].bytes < 8192


def test_a_20_batch_download_returns_no_batch_contents():
    result = run(scatter_workflow(), batches=1, downloads=20)
    assert_within_limits("20-batch download", result)
    # a download batch's file list is about 32 KB: its contents must not flow back into the parent
    # (before: the Map's result was 637,091 bytes, the 20 batches' inputs)
    assert result.figures.largest_payload.bytes < 60_000
    assert result.figures.largest_by_kind["result"].bytes < 8192
    source = result.figures.events_per_state["source"]
    assert source < 20, "the download batches run as child executions, not in the run's history"
