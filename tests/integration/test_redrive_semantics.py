"""What a redrive of a failed run's execution runs again, in moto executions of compiled machines.

moto has no RedriveExecution: ``tests.harness.moto_redrive`` builds the machine a redrive runs from
the failed attempt's history by the rules AWS documents (cited there), and moto executes it. A
processor's state is the execution's unsuccessful one because nothing catches its failure; with
the Catch the compiler used to add, the unsuccessful state was the final Fail state, and a redrive
ran no processor at all.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from pennflow.workflow.asl import FINALIZE_OK, WORKFLOW_STATE, compile_workflow, execution_input
from pennflow.workflow.definition import Workflow, validate_definition
from tests.harness.moto_redrive import redrive, redriven_definition
from tests.harness.moto_sfn import HANG, MotoStepFunctions

CHAIN = [f"p{i}" for i in range(1, 6)]


def workflow(edges: dict[str, list[str]]) -> Workflow:
    processors = [
        {"id": pid, "image": f"img/{pid}:1", **({"dependsOn": deps} if deps else {})}
        for pid, deps in edges.items()
    ]
    return validate_definition({"name": "redrive", "processors": processors})


class Finalize:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        self.calls.append(event)
        return {}


@pytest.fixture
def aws():
    with MotoStepFunctions() as harness:
        yield harness


def prepared(aws: MotoStepFunctions, flow: Workflow) -> tuple[dict[str, Any], dict[str, Any], Finalize]:
    finalize = Finalize()
    aws.register_lambda("finalize", finalize)
    task_definitions = {p.id: aws.register_processor(p.id) for p in flow.processors}
    data = execution_input(
        flow,
        run_id="r-1",
        task_definitions=task_definitions,
        params={},
        node={**aws.node, "finalizeFunction": aws.function_arn("finalize")},
    )
    return compile_workflow(flow), data, finalize


def started(result) -> Counter:
    return Counter(call.processor_id for call in result.run_task_calls)


def test_the_third_of_five_fails_and_the_redrive_runs_the_third_to_fifth_once_each(aws) -> None:
    flow = workflow({pid: CHAIN[i - 1 : i] for i, pid in enumerate(CHAIN)})
    definition, data, finalize = prepared(aws, flow)

    failed = aws.run_execution(definition, data, outcomes={"p3": [3]})
    assert failed.status == "FAILED" and failed.error == "States.TaskFailed"
    assert started(failed) == Counter({"p1": 1, "p2": 1, "p3": 1})
    assert not finalize.calls  # the status tracker finalizes a failed execution from its FAILED event

    again = redrive(aws, definition, failed, data, outcomes={"p3": [0]})
    assert again.status == "SUCCEEDED", (again.error, again.cause)
    assert started(again) == Counter({"p3": 1, "p4": 1, "p5": 1})
    assert [call.processor_id for call in again.run_task_calls] == ["p3", "p4", "p5"]
    assert finalize.calls == [{"runId": "r-1", "outcome": "SUCCEEDED"}]


def test_with_the_catch_the_compiler_used_to_add_a_redrive_runs_no_processor(aws) -> None:
    flow = workflow({pid: CHAIN[i - 1 : i] for i, pid in enumerate(CHAIN)})
    definition, data, finalize = prepared(aws, flow)
    caught = catching_failures(definition)

    failed = aws.run_execution(caught, data, outcomes={"p3": [3]})
    assert failed.status == "FAILED" and failed.error == "pennflow.RunFailed"
    exited = {e["stateExitedEventDetails"]["name"] for e in failed.history if "stateExitedEventDetails" in e}
    assert WORKFLOW_STATE in exited, "the state that caught the failure exited"

    machine = redriven_definition(caught, failed.history)
    assert machine["States"][machine["StartAt"]]["Next"] == "Run failed"
    again = redrive(aws, caught, failed, data, outcomes={"p3": [0]})
    assert again.status == "FAILED" and not again.run_task_calls  # p3, p4, p5 never run again


def catching_failures(definition: dict[str, Any]) -> dict[str, Any]:
    """The failure path the compiler added before: one Catch on the wrapper, a finalize, a Fail."""
    machine = {**definition, "States": dict(definition["States"])}
    machine["States"][WORKFLOW_STATE] = {
        **definition["States"][WORKFLOW_STATE],
        "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.failure", "Next": "Finalize failed run"}],
    }
    finalize = definition["States"][FINALIZE_OK]
    payload = {**finalize["Parameters"]["Payload"], "outcome": "FAILED", "failure.$": "$.failure"}
    machine["States"]["Finalize failed run"] = {
        **finalize,
        "Parameters": {**finalize["Parameters"], "Payload": payload},
        "Next": "Run failed",
    }
    machine["States"]["Run failed"] = {
        "Type": "Fail",
        "Error": "pennflow.RunFailed",
        "Cause": "a processor failed",
    }
    return machine


def test_a_failed_branch_and_an_aborted_one_run_again_and_a_finished_one_does_not(aws) -> None:
    flow = workflow({"a": [], "b": ["a"], "c": ["a"], "d": ["a"], "e": ["b", "c", "d"]})
    definition, data, finalize = prepared(aws, flow)

    failed = aws.run_execution(definition, data, outcomes={"b": [3], "c": [HANG]})
    assert failed.status == "FAILED"
    exited = {e["stateExitedEventDetails"]["name"] for e in failed.history if "stateExitedEventDetails" in e}
    assert {"b", "c", "e"}.isdisjoint(exited) and "a" in exited

    again = redrive(aws, definition, failed, data)
    assert again.status == "SUCCEEDED", (again.error, again.cause)
    # Each processor that did not succeed runs once more; none that succeeded (a, and d if it
    # finished before b's failure aborted its branch) runs again.
    assert started(again) == Counter({pid: 1 for pid in "abcde" if pid not in exited})
    assert {"b", "c", "e"} <= set(started(again)) and "a" not in started(again)
    assert sum(started(failed)[pid] + started(again)[pid] for pid in exited & set("abcde")) == len(
        exited & set("abcde")
    ), "every processor that succeeded ran exactly once over both attempts"
