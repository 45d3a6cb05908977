"""The execution input every compiled state machine expects, and the payload bound it sets."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pennflow.workflow import limits
from pennflow.workflow.asl_lambda import FUNCTIONS_KEY, is_lambda, lambda_processors
from pennflow.workflow.asl_states import GPU_CAPACITY_KEY
from pennflow.workflow.contract import state_key
from pennflow.workflow.cost_tags import run_task_tags
from pennflow.workflow.definition import ComputeType, ProcessorType, Workflow


def canonical(definition: Mapping[str, Any]) -> str:
    """Canonical compact JSON text (what is deployed): the same value always gives the same bytes."""
    return json.dumps(definition, separators=(",", ":"))


def needs_joins(workflow: Workflow) -> bool:
    """Whether the compiled machine may call the node's join function (its DAG is not
    series-parallel; one that falls back to level cuts does not call it, but the node passes the
    function to every run anyway: this is asked only when it is missing)."""
    from pennflow.workflow.dag import Dag, decompose

    return bool(decompose(Dag.from_workflow(workflow)).joins)


def _has_gpu(workflow: Workflow) -> bool:
    return any(p.compute_type is ComputeType.GPU for p in workflow.processors)


def largest_payload_estimate(workflow: Workflow) -> int:
    """An upper bound, in bytes, of any state's payload in a run of ``workflow`` with its default
    parameters: its execution input with each id and ARN at its budget, plus what states add
    (scatter listings). Other parameter values are checked by :func:`execution_input`."""
    processors = [p for p in workflow.processors if p.type is not ProcessorType.DATA_SOURCE]
    skeleton = execution_input(
        workflow,
        run_id="",
        task_definitions={p.id: "" for p in processors if not is_lambda(p)},
        functions={p.id: "" for p in lambda_processors(processors)},
        params={},
        node=dict.fromkeys(
            ("cluster", "finalizeFunction", "listBatchesFunction", "downloadFunction", "joinFunction"), ""
        )
        | {"subnets": [], "securityGroups": []}
        | (
            {GPU_CAPACITY_KEY: [{"CapacityProvider": "", "Weight": 1, "Base": 0}]}
            if _has_gpu(workflow)
            else {}
        ),
        manifest={"bucket": "", "key": ""},
        check_size=False,
    )
    scatters = sum(1 for p in workflow.processors if p.scatter)
    return limits.largest_payload(len(canonical(skeleton).encode()), len(processors), scatters)


def execution_input(
    workflow: Workflow,
    *,
    run_id: str,
    task_definitions: Mapping[str, str],
    params: Mapping[str, Mapping[str, str]],
    node: Mapping[str, Any],
    dataset_id: str | None = None,
    manifest: Mapping[str, str] | None = None,
    check_size: bool = True,
    functions: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The input every compiled state machine expects; missing pieces fail here, not mid-run, and
    so does an input over Step Functions' 256 KiB (long parameter values). ``functions``: the run
    slot's function of each ``computeType: lambda`` processor (pennflow.workflow.asl_lambda)."""
    functions = functions or {}
    # data sources are a Distributed Map of download Lambdas: no task definition
    missing = [
        p.id
        for p in workflow.processors
        if p.type is not ProcessorType.DATA_SOURCE and not is_lambda(p) and p.id not in task_definitions
    ]
    if missing:
        raise ValueError(f"no task definition for processor(s) {', '.join(missing)}")
    no_function = [p.id for p in lambda_processors(workflow.processors) if p.id not in functions]
    if no_function:
        raise ValueError(f"no Lambda function for computeType lambda processor(s) {', '.join(no_function)}")
    needed = {"cluster", "subnets", "securityGroups", "finalizeFunction"}
    if any(p.scatter for p in workflow.processors):
        needed.add("listBatchesFunction")
    if _has_gpu(workflow):
        needed.add(GPU_CAPACITY_KEY)  # the GPU capacity-provider strategy (pennflow.node.gpu)
    has_source = any(p.type is ProcessorType.DATA_SOURCE for p in workflow.processors)
    if has_source:
        needed.add("downloadFunction")
        if not manifest or not {"bucket", "key"} <= set(manifest):
            raise ValueError("a workflow with a data source needs the run's manifest location {bucket, key}")
    if "joinFunction" not in node and needs_joins(workflow):  # decomposed only when it is missing
        needed.add("joinFunction")
    absent = sorted(needed - set(node))
    if absent:
        raise ValueError(f"node settings missing: {', '.join(absent)}")
    payload = {
        "run": {
            "id": run_id,
            "datasetId": dataset_id or "",
            **({"manifest": dict(manifest)} if manifest else {}),
            "taskDefinitions": {state_key(pid): arn for pid, arn in sorted(task_definitions.items())},
            **(
                {FUNCTIONS_KEY: {state_key(pid): fn for pid, fn in sorted(functions.items())}}
                if functions
                else {}
            ),
            "tags": run_task_tags(workflow.name, run_id),
            "params": {
                state_key(p.id): {
                    k: params.get(p.id, {}).get(k, v) for k, v in sorted(p.default_params.items())
                }
                for p in workflow.processors
            },
        },
        "node": {
            **node,
            "network": {
                "AwsvpcConfiguration": {
                    "Subnets": list(node["subnets"]),
                    "SecurityGroups": list(node["securityGroups"]),
                    "AssignPublicIp": "DISABLED",
                }
            },
        },
    }
    size = len(canonical(payload).encode())
    # the scatters' listings are added to this input: leave them their budget
    kept = sum(1 for p in workflow.processors if p.scatter) * limits.SCATTER_LISTING_BUDGET
    if check_size and size > limits.PAYLOAD_LIMIT - kept:
        raise ValueError(
            f"the run's execution input is {size:,} bytes; Step Functions allows 256 KiB "
            f"({limits.PAYLOAD_LIMIT:,} bytes) per state, less {kept:,} kept for the scatters' batch "
            "listings: shorten the parameter values"
        )
    return payload
