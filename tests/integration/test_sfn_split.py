"""A workflow split into child state machines, executed in moto's Step Functions interpreter.

The split (`pennflow.workflow.asl_split`) is what a workflow of about 800 or more processors gets;
here a 40-node DAG that is not series-parallel is split with a small budget, so that the same code
makes groups of a joined block's paths and segments of a sequence, children of children too, in a
run short enough for moto. Every processor runs once, after each of its dependencies has ended,
checked across all the executions' histories; joins release waiters in other executions.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import pytest

from pennflow.node.finalize import failed_processor
from pennflow.workflow.asl import CompileOptions, _Compiler, execution_input
from pennflow.workflow.asl_split import Budget, Split, split
from pennflow.workflow.dag import Dag, decompose
from pennflow.workflow.definition import Workflow
from tests.harness.moto_sfn import HANG, ExecutionResult, MotoStepFunctions
from tests.integration.test_sfn_joins import RUN_ID, random_edges, workflow_of

pytestmark = pytest.mark.xdist_group("moto-sfn-split")

TIMEOUT = 90.0
SMALL = Budget(definition_bytes=14_000, history_events=260)


def split_workflow(workflow: Workflow, budget: Budget = SMALL) -> Split:
    decomposition = decompose(Dag.from_workflow(workflow))
    assert decomposition.joins, "the DAG is not series-parallel"
    definition = _Compiler(workflow, CompileOptions(), decomposition).compile()
    return split(definition, CompileOptions(), budget)


def prepare(aws: MotoStepFunctions, workflow: Workflow, pieces: Split) -> tuple[dict, list[dict]]:
    """The execution input on the harness's node, and the parts' definitions."""
    aws.register_lambda("finalize", lambda event, context: {})
    data = execution_input(
        workflow,
        run_id=RUN_ID,
        task_definitions={p.id: aws.register_processor(p.id) for p in workflow.processors},
        params={},
        node={**aws.node, "finalizeFunction": aws.function_arn("finalize")},
    )
    return data, [part.definition for part in pieces.parts]


def run(aws: MotoStepFunctions, workflow: Workflow, pieces: Split, **kwargs: Any) -> ExecutionResult:
    data, parts = prepare(aws, workflow, pieces)
    return aws.run_execution(pieces.definition, data, parts=parts, timeout=TIMEOUT, **kwargs)


def task_times(result: ExecutionResult) -> tuple[dict[str, list[datetime]], dict[str, datetime]]:
    """When each processor's state was entered (every time) and last exited, in any execution."""
    entered: dict[str, list[datetime]] = {}
    exited: dict[str, datetime] = {}
    for history in (result.history, *result.child_histories):
        for event in history:
            details = event.get("stateEnteredEventDetails") or event.get("stateExitedEventDetails") or {}
            name = details.get("name")
            if event["type"] == "TaskStateEntered":
                entered.setdefault(name, []).append(event["timestamp"])
            elif event["type"] == "TaskStateExited":
                exited[name] = event["timestamp"]
    return entered, exited


@pytest.fixture
def aws():
    with MotoStepFunctions() as harness:
        yield harness


def test_the_split_uses_groups_segments_and_nested_parts():
    pieces = split_workflow(workflow_of(random_edges(40, 2)))
    summaries = [part.summary for part in pieces.parts]
    assert len(pieces.parts) >= 4, summaries
    assert any(s.startswith("branches") for s in summaries), "a Parallel's branches grouped"
    assert any(s.startswith("states") for s in summaries), "a sequence cut into segments"
    nested = [p for p in pieces.parts if "${Part" in str(p.definition)]
    assert nested, "a part that starts parts of its own"


def test_a_split_workflow_runs_each_task_once_after_its_dependencies(aws):
    workflow = workflow_of(random_edges(40, 2))
    pieces = split_workflow(workflow)
    result = run(aws, workflow, pieces)
    assert result.status == "SUCCEEDED", result.cause
    assert len(result.child_histories) == len(pieces.parts), "each part ran once"
    assert sorted(call.processor_id for call in result.run_task_calls) == sorted(
        p.id for p in workflow.processors
    )
    entered, exited = task_times(result)
    for processor in workflow.processors:
        assert len(entered[processor.id]) == 1, f"{processor.id} ran {len(entered[processor.id])} times"
        for dep in processor.dependencies:
            assert exited[dep] <= entered[processor.id][0], f"{processor.id} started before {dep} ended"
    waits = [
        c.payload for c in result.lambda_calls if c.function_name == "join" and c.payload["action"] == "wait"
    ]
    assert waits, "joins released waiters"


def test_a_failed_processor_in_a_child_fails_the_run_and_ends_every_child(aws):
    workflow = workflow_of(random_edges(40, 2))
    pieces = split_workflow(workflow)
    # p3 fails; p30 would hang: its child must end with the run, not run on
    result = run(aws, workflow, pieces, outcomes={"p3": [1], "p30": [HANG]})
    assert result.status == "FAILED"
    # No Catch: the machine finalizes nothing; the status tracker reads the failed processor from
    # the execution's cause, which carries the child's failure.
    assert not [c for c in result.lambda_calls if c.function_name == "finalize"]
    found = failed_processor({"Error": result.error, "Cause": result.cause}, [])
    assert found.processor_id == "p3"
    dependants = {p.id for p in workflow.processors if "p3" in p.dependencies}
    assert dependants and not dependants & {c.processor_id for c in result.run_task_calls}
    statuses = [e["status"] for e in aws.part_executions()]
    assert "FAILED" in statuses
    assert "RUNNING" not in statuses, statuses


def test_a_cancel_of_the_run_ends_every_child_and_its_waiting_branches(aws):
    workflow = workflow_of(random_edges(40, 2))
    pieces = split_workflow(workflow)
    data, parts = prepare(aws, workflow, pieces)
    execution = aws.start_execution(pieces.definition, data, parts=parts, outcomes={"p20": [HANG]})
    aws.wait_for_run_task("p20", timeout=TIMEOUT)
    aws.stop_execution(execution)
    assert aws.wait(execution, timeout=TIMEOUT).status == "ABORTED"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # the stops travel down one level of parts at a time
        statuses = [e["status"] for e in aws.part_executions()]
        if "RUNNING" not in statuses:
            break
        time.sleep(0.02)
    assert statuses and "RUNNING" not in statuses, statuses
    assert aws.wait_for_run_task("p20").last_status == "STOPPED", "the hanging task was stopped"


def test_each_harness_patch_for_children_is_needed():
    workflow = workflow_of(random_edges(40, 2))
    with MotoStepFunctions(without={"sfn_parameter_casing"}) as harness:
        result = run(harness, workflow, split_workflow(workflow))
        assert result.status == "FAILED" and not harness.part_executions(), "moto never started a child"
    with MotoStepFunctions(without={"sfn_sync_stops_abandoned_children"}) as harness:
        run(harness, workflow, split_workflow(workflow), outcomes={"p3": [1], "p30": [HANG]})
        assert "RUNNING" in [e["status"] for e in harness.part_executions()], "moto leaves children running"
