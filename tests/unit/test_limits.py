"""Workflows that cannot fit Step Functions' limits are refused at compile time, naming the limit."""

from __future__ import annotations

import json
import random
import re
from typing import Any

import pytest

from pennflow.workflow.asl import (
    CompileError,
    CompileOptions,
    _Compiler,
    compile_machines,
    compile_to_json,
    compile_workflow,
    execution_input,
    limit_problems,
)
from pennflow.workflow.asl_split import split
from pennflow.workflow.dag import Dag, decompose, plan_depth
from pennflow.workflow.definition import Workflow, validate_definition
from pennflow.workflow.limits import (
    DEFINITION_LIMIT,
    HISTORY_EVENT_LIMIT,
    MAX_PLAN_DEPTH,
    definition_size_problem,
    worst_case_history,
)
from tests.dag_strategies import workflow_from_dag
from tests.gates.asl import assert_valid_asl


def chain(n: int, **extra: Any) -> Workflow:
    processors = [{"id": "source", "type": "data-source"}]
    for i in range(n):
        previous = processors[-1]["id"]
        processors.append({"id": f"p{i}", "image": "img/p:1", "dependsOn": [previous], **extra})
    return validate_definition({"name": "chain", "processors": processors})


def caterpillar(depth: int) -> Workflow:
    """source -> a<depth>, b<depth>; a<k> -> a<k-1>, b<k-1>: a Parallel nested ``depth`` levels deep."""
    processors: list[dict[str, Any]] = [{"id": "source", "type": "data-source"}]
    parent = "source"
    for k in range(depth, 0, -1):
        processors += [
            {"id": f"a{k}", "image": "img/a:1", "dependsOn": [parent]},
            {"id": f"b{k}", "image": "img/b:1", "dependsOn": [parent]},
        ]
        parent = f"a{k}"
    return validate_definition({"name": "caterpillar", "processors": processors})


def layered(n: int, seed: int = 4) -> Workflow:
    """A layered pipeline that is far from series-parallel: the decomposer's deepest case."""
    rng = random.Random(seed)
    nodes = [f"n{i}" for i in range(n)]
    edges = {
        (nodes[max(0, j - 1 - int(rng.expovariate(1 / 6)))], nodes[j]) for j in range(1, n) for _ in range(3)
    }
    return workflow_from_dag(Dag.from_edges(nodes, sorted(edges)))


def test_a_4000_node_chain_is_refused_before_compiling_naming_the_payload_limit():
    # every state carries the run's input, one task definition ARN per processor: no split helps
    with pytest.raises(CompileError) as refused:
        compile_workflow(chain(4000))
    message = str(refused.value)
    assert message.startswith("4,001 processors: a state's payload could reach")
    assert "Step Functions allows 256 KiB (262,144 bytes)" in message


def test_a_4000_node_random_dag_is_refused_not_a_recursion_error():
    with pytest.raises(CompileError, match=r"256 KiB \(262,144 bytes\)"):
        compile_workflow(layered(4000))


def test_a_chain_past_1_mib_is_split_into_child_machines_each_under_it():
    workflow = chain(1300, defaultParams={"THRESHOLD": "0.5"})
    compiled = compile_machines(workflow)
    parent, parts = compiled.texts()
    assert len(parts) >= 2, "one machine would pass 1 MiB"
    for text in (parent, *parts):
        assert len(text.encode()) <= DEFINITION_LIMIT
        assert worst_case_history(json.loads(text))[0] < HISTORY_EVENT_LIMIT
    assert "${Part1}" in parent


def test_the_size_message_reads_as_the_issue_asks():
    assert definition_size_problem(1_237_319) == (
        "compiled definition is 1.18 MB; Step Functions allows 1 MB (1,048,576 bytes)"
    )
    assert definition_size_problem(DEFINITION_LIMIT) is None


def test_the_decomposer_handles_a_deep_layered_dag_below_the_size_limit():
    workflow = layered(900)
    text = compile_to_json(workflow)  # no RecursionError, and under the limit
    assert len(text.encode()) <= DEFINITION_LIMIT


def test_nesting_deeper_than_the_compiler_writes_is_refused():
    assert plan_depth(decompose(Dag.from_workflow(caterpillar(MAX_PLAN_DEPTH))).plan) == MAX_PLAN_DEPTH
    assert_valid_asl(compile_workflow(caterpillar(MAX_PLAN_DEPTH)))
    with pytest.raises(
        CompileError,
        match=f"nests {MAX_PLAN_DEPTH + 5} Parallel levels deep; the compiler writes at most {MAX_PLAN_DEPTH}",
    ):
        compile_workflow(caterpillar(MAX_PLAN_DEPTH + 5))


def test_a_workflow_whose_retries_could_pass_25000_events_is_split_under_the_limit():
    retry = {"retry": {"maxAttempts": 10, "intervalSeconds": 1}}
    workflow = chain(600, **retry)
    one_machine = _Compiler(workflow, CompileOptions(), decompose(Dag.from_workflow(workflow))).compile()
    assert worst_case_history(one_machine)[0] >= HISTORY_EVENT_LIMIT, "one execution could pass 25,000"
    compiled = compile_machines(workflow)
    assert compiled.parts, "split into child executions, each with its own history"
    for machine in (compiled.definition, *(part.definition for part in compiled.parts)):
        assert worst_case_history(machine)[0] < HISTORY_EVENT_LIMIT
    assert not compile_machines(chain(600)).parts  # without retries the same chain fits one machine


def test_a_single_state_no_split_can_fit_is_still_refused_naming_the_limit():
    definition = compile_workflow(chain(1))
    task = definition["States"]["Run workflow"]["Branches"][0]["States"]["p0"]
    task["Retry"][0]["MaxAttempts"] = 9000  # one state's own retries pass the limit
    result = split(definition, CompileOptions())
    machines = [result.definition, *(part.definition for part in result.parts)]
    problems = [p for machine in machines for p in limit_problems(chain(1), machine)]
    assert any(
        re.search(r"could write [\d,]+ history events .*allows 25,000 per execution", p) for p in problems
    )


def test_worst_case_history_counts_each_state_and_every_retry():
    definition = compile_workflow(chain(1, retry={"maxAttempts": 2}))
    parent, child = worst_case_history(definition)
    # execution 2; Run workflow Parallel 4; the data source Map 6 and verify Lambda 5 + 6 retries x 3;
    # p0: ECS task 6 + 5 refused submissions x 3 + 2 failed attempts x 4; finalize (5 + 18), Succeed 2
    assert parent == 2 + 4 + 6 + (5 + 18) + (6 + 15 + 8) + (5 + 18) + 2
    # a download batch: its Lambda, 6 service retries x 3 and 3 failed tries x 3
    assert child == 2 + 5 + 18 + 9
    assert parent < HISTORY_EVENT_LIMIT


def test_an_inline_map_cannot_be_bounded():
    machine = {
        "StartAt": "m",
        "States": {"m": {"Type": "Map", "ItemProcessor": {"StartAt": "x", "States": {}}}},
    }
    with pytest.raises(ValueError, match="grows with its items"):
        worst_case_history(machine)


def test_long_default_parameters_that_cannot_fit_a_state_are_refused():
    long_params = {f"P{i}": "x" * 300 for i in range(20)}  # 6 KB of defaults per processor
    with pytest.raises(CompileError, match=r"payload could reach [\d,]+ bytes .*256 KiB \(262,144 bytes\)"):
        compile_workflow(chain(50, defaultParams=long_params))


def test_execution_input_refuses_run_parameters_that_pass_the_payload_limit():
    workflow = chain(3, defaultParams={"NOTE": "short"})
    node = {
        "cluster": "c",
        "subnets": ["s"],
        "securityGroups": ["g"],
        "finalizeFunction": "f",
        "downloadFunction": "d",
    }
    common = {"run_id": "r-1", "task_definitions": {f"p{i}": "arn" for i in range(3)}, "node": node}
    manifest = {"bucket": "b", "key": "runs/r-1/manifest.json"}
    fits = execution_input(workflow, params={"p0": {"NOTE": "x" * 1000}}, manifest=manifest, **common)
    assert fits["run"]["params"]["p0"]["NOTE"] == "x" * 1000
    with pytest.raises(ValueError, match=r"execution input is [\d,]+ bytes; Step Functions allows 256 KiB"):
        execution_input(workflow, params={"p0": {"NOTE": "x" * 300_000}}, manifest=manifest, **common)


def test_every_branch_and_item_hands_back_an_empty_object():
    definition = json.loads(compile_to_json(caterpillar(3)))
    pending = [definition["States"]["Run workflow"]]
    ends = []
    while pending:
        state = pending.pop()
        for branch in state.get("Branches", []):
            last = [s for s in branch["States"].values() if s.get("End")]
            ends += last
            pending += [s for s in branch["States"].values() if s["Type"] == "Parallel"]
    assert ends and all("OutputPath" in s and s["OutputPath"] is None for s in ends)
