"""Compiled machines with joins, executed in moto's Step Functions interpreter.

The join function is the node's own (`pennflow.node.joins`) on a moto DynamoDB table, releasing
waiting states through moto's `SendTaskSuccess`. Each run is checked from its history: every
processor ran once, and only after each of its dependencies had ended. Failures are injected: a
dependency that fails, a retried dependency, repeated and late signals, a cancelled run.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from pennflow.node.joins import JoinRequest, handle
from pennflow.workflow.asl import compile_workflow, execution_input
from pennflow.workflow.dag import Dag, decompose
from pennflow.workflow.definition import Workflow, validate_definition
from tests.harness.moto_sfn import HANG, ExecutionResult, MotoStepFunctions

pytestmark = pytest.mark.xdist_group("moto-sfn-joins")

RUN_ID = "r-joins"
TIMEOUT = 60.0


def workflow_of(edges: dict[str, list[str]], retry: set[str] = frozenset()) -> Workflow:
    """Every node a processor (so each one is an ECS task the harness scripts); roots depend on nothing."""
    processors = []
    for node, deps in edges.items():
        processor: dict[str, Any] = {"id": node, "image": f"img/{node}:1", "dependsOn": deps}
        if node in retry:
            processor["retry"] = {"maxAttempts": 2, "intervalSeconds": 1}
        processors.append(processor)
    return validate_definition({"name": "joins", "processors": processors})


# a->c, b->c, b->d: c runs on a's path and waits for b, which runs on d's path
N_SHAPE = {"a": [], "b": [], "c": ["a", "b"], "d": ["b"]}


def random_edges(n: int, seed: int) -> dict[str, list[str]]:
    """A layered pipeline: each node depends on one to three of the few nodes before it."""
    rng = random.Random(seed)
    edges: dict[str, list[str]] = {"p0": []}
    for j in range(1, n):
        picks = {max(0, j - 1 - int(rng.expovariate(1 / 4))) for _ in range(rng.randint(1, 3))}
        edges[f"p{j}"] = [f"p{i}" for i in sorted(picks)]
    return edges


def prepare(aws: MotoStepFunctions, workflow: Workflow) -> tuple[dict[str, Any], dict[str, Any]]:
    """The compiled definition and its execution input on the harness's node."""
    aws.register_lambda("finalize", lambda event, context: {})
    data = execution_input(
        workflow,
        run_id=RUN_ID,
        task_definitions={p.id: aws.register_processor(p.id) for p in workflow.processors},
        params={},
        node={**aws.node, "finalizeFunction": aws.function_arn("finalize")},
    )
    return compile_workflow(workflow), data


def run(aws: MotoStepFunctions, workflow: Workflow, **kwargs: Any) -> ExecutionResult:
    definition, data = prepare(aws, workflow)
    return aws.run_execution(definition, data, timeout=TIMEOUT, **kwargs)


def ended_in_order(result: ExecutionResult, workflow: Workflow) -> None:
    """Every processor's state entered once, and after each dependency's state exited."""
    entered: dict[str, int] = {}
    exited: dict[str, int] = {}
    for event in result.history:
        details = event.get("stateEnteredEventDetails") or event.get("stateExitedEventDetails") or {}
        name = details.get("name")
        if event["type"] == "TaskStateEntered":
            assert name not in entered, f"{name} entered twice"
            entered[name] = event["id"]
        elif event["type"] == "TaskStateExited":
            exited[name] = event["id"]
    for processor in workflow.processors:
        assert processor.id in entered, f"{processor.id} never ran"
        for dep in processor.dependencies:
            assert exited[dep] < entered[processor.id], f"{processor.id} started before {dep} ended"


def join_calls(result: ExecutionResult) -> list[dict[str, Any]]:
    return [call.payload for call in result.lambda_calls if call.function_name == "join"]


def signals_of(result: ExecutionResult, node: str) -> list[dict[str, Any]]:
    return [
        payload
        for payload in join_calls(result)
        if (payload["action"] == "done" and payload["node"] == node) or payload.get("done") == node
    ]


@pytest.fixture
def aws():
    with MotoStepFunctions() as harness:
        yield harness


def test_the_n_shape_runs_each_task_once_in_dependency_order(aws):
    workflow = workflow_of(N_SHAPE)
    result = run(aws, workflow)
    assert result.status == "SUCCEEDED", result.cause
    ended_in_order(result, workflow)
    assert sorted(call.processor_id for call in result.run_task_calls) == ["a", "b", "c", "d"]
    waits = [payload for payload in join_calls(result) if payload["action"] == "wait"]
    assert [(w["node"], w["deps"]) for w in waits] == [("c", ["b"])]
    assert len(signals_of(result, "b")) == 1


@pytest.mark.parametrize(("nodes", "seed"), [(30, 1), (40, 2), (50, 3)])
def test_random_dags_that_are_not_series_parallel_run_in_order(aws, nodes, seed):
    edges = random_edges(nodes, seed)
    workflow = workflow_of(edges)
    decomposition = decompose(Dag.from_workflow(workflow))
    assert decomposition.joins, "the generated DAG needs joins"
    result = run(aws, workflow)
    assert result.status == "SUCCEEDED", result.cause
    ended_in_order(result, workflow)
    assert sorted(call.processor_id for call in result.run_task_calls) == sorted(edges)
    waited = {payload["node"] for payload in join_calls(result) if payload["action"] == "wait"}
    assert waited == {join.node for join in decomposition.joins}
    released = [t for t in result.history if t["type"] == "TaskSucceeded"]
    assert len(released) >= len(waited)


def test_a_wide_fan_out_and_in_needs_no_join(aws):
    edges = {"src": [], **{f"w{i}": ["src"] for i in range(12)}, "sink": [f"w{i}" for i in range(12)]}
    workflow = workflow_of(edges)
    result = run(aws, workflow)
    assert result.status == "SUCCEEDED"
    ended_in_order(result, workflow)
    assert join_calls(result) == []


def test_a_failed_dependency_releases_nobody_and_the_run_fails_without_hanging(aws):
    workflow = workflow_of(N_SHAPE)
    # b fails only after c has started waiting for it
    result = run(aws, workflow, outcomes={"b": lambda env, attempt: _after_wait(aws, 1)})
    assert result.status == "FAILED"
    assert sorted(call.processor_id for call in result.run_task_calls) == ["a", "b"]  # not c, not d
    assert signals_of(result, "b") == []
    wait_entered = [e for e in result.history if _state_name(e) == "c waits"]
    assert wait_entered, "c was waiting when b failed"
    # the wait was stopped with its branch: released by nobody
    assert not any(e["type"] == "TaskStateExited" and _state_name(e) == "c waits" for e in result.history)


def test_a_timed_out_dependency_releases_nobody_and_the_run_fails_without_hanging(aws):
    edges = dict(N_SHAPE)
    processors = [
        {
            "id": node,
            "image": f"img/{node}:1",
            "dependsOn": deps,
            **({"timeoutSeconds": 2} if node == "b" else {}),
        }
        for node, deps in edges.items()
    ]
    workflow = validate_definition({"name": "joins", "processors": processors})
    result = run(aws, workflow, outcomes={"b": [HANG]})  # b never ends: its state times out
    assert result.status == "FAILED"
    assert any(e["type"] == "TaskTimedOut" for e in result.history), "b's state timed out"
    assert sorted(call.processor_id for call in result.run_task_calls) == ["a", "b"]  # not c, not d
    assert signals_of(result, "b") == []
    assert not any(e["type"] == "TaskStateExited" and _state_name(e) == "c waits" for e in result.history)


def test_a_retried_dependency_signals_once(aws):
    workflow = workflow_of(N_SHAPE, retry={"b"})
    result = run(aws, workflow, outcomes={"b": [1, 0]})
    assert result.status == "SUCCEEDED", result.cause
    assert [call.attempt for call in result.calls_of("b")] == [1, 2]
    assert len(signals_of(result, "b")) == 1
    ended_in_order(result, workflow)


def test_repeated_signals_are_harmless(aws):
    repeated_marks = []

    def twice(event, context):
        first = aws.join_handler(event, context)
        again = aws.join_handler(event, context)
        if event["action"] == "done" or event.get("done"):
            repeated_marks.append(again["marked"])
        return first

    edges = random_edges(30, 4)
    workflow = workflow_of(edges)
    result = run(aws, workflow, lambdas={"join": twice})
    assert result.status == "SUCCEEDED", result.cause
    ended_in_order(result, workflow)  # a second release of a running waiter started nothing twice
    assert sorted(call.processor_id for call in result.run_task_calls) == sorted(edges)
    assert repeated_marks and not any(repeated_marks), "each repeated signal found its mark written"


def test_a_late_signal_after_the_run_ended_is_harmless(aws):
    workflow = workflow_of(N_SHAPE)
    result = run(aws, workflow, outcomes={"b": lambda env, attempt: _after_wait(aws, 1)})
    assert result.status == "FAILED"
    # b's signal arriving now finds c's token ended: nothing is raised, nobody is released
    late = JoinRequest.model_validate({"action": "done", "runId": RUN_ID, "node": "b", "waiters": ["c"]})
    assert handle(late, aws.join_store).released == ()


def test_cancelling_a_run_ends_its_waiting_branches(aws):
    workflow = workflow_of(N_SHAPE)
    definition, data = prepare(aws, workflow)
    arn = aws.start_execution(definition, data, outcomes={"b": [HANG]})
    _after_wait(aws, 0)
    aws.stop_execution(arn)
    result = aws.wait(arn, timeout=TIMEOUT)
    assert result.status == "ABORTED"
    assert "c" not in {call.processor_id for call in result.run_task_calls}
    # the stopped wait's token is dead: a signal for it now changes nothing
    late = JoinRequest.model_validate({"action": "done", "runId": RUN_ID, "node": "b", "waiters": ["c"]})
    assert handle(late, aws.join_store).released == ()


def _after_wait(aws: MotoStepFunctions, outcome: int | str, node: str = "c", timeout: float = 20.0):
    """Block until ``node``'s wait is registered in the join table, then give ``outcome``."""
    import time

    deadline = time.monotonic() + timeout
    while aws.join_store.waiter(RUN_ID, node) is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{node} never registered its wait")
        time.sleep(0.01)
    return outcome


def _state_name(event: dict[str, Any]) -> str | None:
    details = event.get("stateEnteredEventDetails") or event.get("stateExitedEventDetails") or {}
    return details.get("name")
