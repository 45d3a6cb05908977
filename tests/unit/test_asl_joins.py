"""The join states the compiler writes for a DAG that is not series-parallel."""

from __future__ import annotations

import pytest

from pennflow.workflow.asl import compile_workflow, execution_input
from pennflow.workflow.asl_joins import JOIN_RETRY, SIGNAL_SLACK_SECONDS, UNBOUNDED_WAIT_SECONDS
from pennflow.workflow.dag import Dag
from pennflow.workflow.definition import validate_definition
from pennflow.workflow.limits import worst_case_history
from tests.dag_strategies import workflow_from_dag
from tests.gates.asl import assert_valid_asl

NODE = {"cluster": "c", "subnets": [], "securityGroups": [], "finalizeFunction": "f"}


def n_shape(**b: object):
    """a -> c, b -> c, b -> d, every node a processor (b with ``b``'s extra fields)."""
    processors = [
        {"id": "a", "image": "img/a:1", "timeoutSeconds": 600},
        {"id": "b", "image": "img/b:1", "timeoutSeconds": 300, **b},
        {"id": "c", "image": "img/c:1", "dependsOn": ["a", "b"]},
        {"id": "d", "image": "img/d:1", "dependsOn": ["b"]},
    ]
    return validate_definition({"name": "n", "processors": processors})


def states_of(definition: dict) -> dict[str, dict]:
    found, pending = {}, [definition]
    while pending:
        machine = pending.pop()
        for name, state in machine["States"].items():
            found[name] = state
            pending.extend(state.get("Branches", ()))
    return found


def test_the_waiting_node_gets_a_token_task_and_its_dependency_a_signal():
    definition = compile_workflow(n_shape())
    states = states_of(definition)
    wait, signal = states["c waits"], states["b done"]
    assert wait["Resource"] == "arn:aws:states:::lambda:invoke.waitForTaskToken"
    assert wait["Parameters"] == {
        "FunctionName.$": "$.node.joinFunction",
        "Payload": {
            "action": "wait",
            "runId.$": "$.run.id",
            "node": "c",
            "deps": ["b"],
            "token.$": "$$.Task.Token",
        },
    }
    assert wait["Next"] == "c" and wait["Retry"] == [JOIN_RETRY]
    assert signal["Parameters"]["Payload"] == {
        "action": "done",
        "runId.$": "$.run.id",
        "node": "b",
        "waiters": ["c"],
    }
    assert signal["Resource"] == "arn:aws:states:::lambda:invoke"
    assert states["b"]["Next"] == "b done" and signal["Next"] == "d"
    assert "joined (not series-parallel)" in definition["Comment"]
    assert_valid_asl(definition)


def test_the_wait_times_out_after_the_longest_its_dependencies_can_take():
    bare = states_of(compile_workflow(n_shape()))["c waits"]["TimeoutSeconds"]
    retried = states_of(compile_workflow(n_shape(retry={"maxAttempts": 2, "intervalSeconds": 60})))
    # b's 300 s timeout, its infrastructure retries, the slack for the signal; two more attempts add 600 s + waits
    assert SIGNAL_SLACK_SECONDS + 300 < bare < SIGNAL_SLACK_SECONDS + 300 + 400
    assert retried["c waits"]["TimeoutSeconds"] >= bare + 600 + 60 + 120


def test_a_dependency_with_no_time_bound_gives_the_wait_the_unbounded_cap():
    dag = Dag.from_edges(["a", "b", "c", "d"], [("a", "c"), ("b", "c"), ("b", "d")])
    states = states_of(compile_workflow(workflow_from_dag(dag)))  # a and b are data sources
    assert states["c waits"]["TimeoutSeconds"] == UNBOUNDED_WAIT_SECONDS + SIGNAL_SLACK_SECONDS


def test_a_wait_counts_four_task_events_in_the_history_bound():
    states = states_of(compile_workflow(n_shape()))
    single = {"StartAt": "w", "States": {"w": {**states["c waits"], "Retry": []}}}
    single["States"]["w"].pop("Next")
    single["States"]["w"]["End"] = True
    assert worst_case_history(single) == (2 + 2 + 4, 0)  # execution, enter/exit, 4 task events


def test_a_run_of_a_joined_workflow_needs_the_join_function():
    workflow = n_shape()
    definitions = {p.id: "arn:td" for p in workflow.processors}
    with pytest.raises(ValueError, match="node settings missing: joinFunction"):
        execution_input(workflow, run_id="r", task_definitions=definitions, params={}, node=NODE)
    data = execution_input(
        workflow, run_id="r", task_definitions=definitions, params={}, node={**NODE, "joinFunction": "j"}
    )
    assert data["node"]["joinFunction"] == "j"


def test_a_series_parallel_run_does_not_need_it():
    workflow = validate_definition(
        {
            "name": "s",
            "processors": [
                {"id": "a", "image": "img/a:1"},
                {"id": "b", "image": "img/b:1", "dependsOn": ["a"]},
            ],
        }
    )
    execution_input(workflow, run_id="r", task_definitions={"a": "x", "b": "y"}, params={}, node=NODE)
