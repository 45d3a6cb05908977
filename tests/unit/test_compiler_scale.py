"""1,000 to 5,000 processors: validate and compile succeed or refuse (exit 2) naming the limit.

No timing here (benchmarks/compiler.py measures it): these check that nothing recurses past
Python's limit, that a joined form too large for one state machine is split into child machines
(never level cuts), and that what cannot fit is refused with the limit it would cross.
"""

from __future__ import annotations

import json
import random

import pytest
from typer.testing import CliRunner

from pennflow.cli import app
from pennflow.workflow.asl import CompileOptions, _Compiler, compile_machines, compile_with_plan
from pennflow.workflow.asl_input import canonical
from pennflow.workflow.asl_split import substitute
from pennflow.workflow.dag import Dag, decompose, plan_steps
from pennflow.workflow.explain import explain
from pennflow.workflow.limits import DEFINITION_LIMIT
from tests.dag_strategies import workflow_from_dag
from tests.gates.asl import assert_valid_asl


def pipeline(n: int, seed: int = 1) -> Dag:
    """A layered pipeline far from series-parallel: each node depends on a few nearby earlier ones."""
    rng = random.Random(seed)
    nodes = [f"p{i}" for i in range(n)]
    edges = set()
    for j in range(1, n):
        for _ in range(max(1, round(rng.expovariate(1 / 2.0)))):
            edges.add((nodes[max(0, j - 1 - int(rng.expovariate(1 / 8)))], nodes[j]))
    return Dag.from_edges(nodes, sorted(edges))


def definition_file(tmp_path, dag: Dag) -> str:
    processors = [
        {"id": n, "image": f"img/{n}:1", "dependsOn": list(dag.deps[n])}
        if dag.deps[n]
        else {"id": n, "type": "data-source"}
        for n in dag.nodes
    ]
    path = tmp_path / f"wide-{len(dag.nodes)}.json"
    path.write_text(json.dumps({"name": "wide", "processors": processors}))
    return str(path)


@pytest.mark.parametrize("size", [2000, 5000])
@pytest.mark.parametrize("command", ["validate", "compile"])
def test_thousands_of_processors_are_refused_with_exit_2_naming_the_payload_limit(tmp_path, size, command):
    result = CliRunner().invoke(app, [command, definition_file(tmp_path, pipeline(size))])
    assert result.exit_code == 2, result.output
    assert f"{size:,} processors: a state's payload could reach" in result.output
    assert "Step Functions allows 256 KiB (262,144 bytes)" in result.output
    assert "Traceback" not in result.output


def test_a_1000_processor_pipeline_too_large_for_one_machine_keeps_its_joins_in_child_machines(tmp_path):
    dag = pipeline(1000)
    workflow = workflow_from_dag(dag)
    joined = canonical(_Compiler(workflow, CompileOptions(), decompose(dag)).compile())
    assert len(joined.encode()) > DEFINITION_LIMIT, "one machine of this DAG would not fit"
    compiled = compile_machines(workflow)
    assert compiled.decomposition.joins and not compiled.decomposition.added, "no level cuts"
    parent, parts = compiled.texts()
    assert len(parts) >= 2
    versions = [f"arn:aws:states:us-east-1:123456789012:stateMachine:wide_part{k}:1" for k in range(1, 9)]
    for text in (parent, *parts):
        assert len(text.encode()) <= DEFINITION_LIMIT
        assert_valid_asl(json.loads(substitute(text, versions)))
    placed = [json.loads(text) for text in (parent, *parts)]
    steps = [name for part in placed for name in _task_names(part)]
    assert sorted(steps) == sorted(dag.nodes), "each processor in exactly one machine"
    text = explain(workflow)
    assert f"split into {len(parts)} child state machine(s)" in text and "part 1: branches 1-" in text
    for command in ("validate", "compile"):
        result = CliRunner().invoke(app, [command, definition_file(tmp_path, dag)])
        assert result.exit_code == 0, result.output
    printed = json.loads(CliRunner().invoke(app, ["compile", definition_file(tmp_path, dag)]).stdout)
    assert "${Part1}" in json.dumps(printed["definition"]) and len(printed["parts"]) == len(parts)


def _task_names(machine: dict) -> list[str]:
    """The ECS task and data-source Map states of a machine and its Parallel branches."""
    names, pending = [], [machine]
    while pending:
        current = pending.pop()
        for name, state in current["States"].items():
            if state["Type"] == "Map" or "ecs:runTask" in state.get("Resource", ""):
                names.append(name)
            pending.extend(state.get("Branches", ()))
    return names


def test_a_300_processor_pipeline_compiles_with_joins_to_valid_asl():
    dag = pipeline(300, seed=3)
    definition, plan = compile_with_plan(workflow_from_dag(dag))
    assert plan.joins and not plan.added
    assert "joined (not series-parallel)" in definition["Comment"]
    assert_valid_asl(definition)


@pytest.mark.parametrize("size", [1000, 2000, 5000])
def test_the_compiler_builds_5000_nodes_without_recursing(size):
    dag = pipeline(size, seed=size)
    decomposition = decompose(dag)
    assert sorted(plan_steps(decomposition.plan)) == sorted(dag.nodes)
    definition = _Compiler(workflow_from_dag(dag), CompileOptions(), decomposition).compile()
    assert definition["States"]  # built: the limit check (not run here) is what refuses it


def test_explain_names_each_join_and_why():
    dag = Dag.from_edges(["a", "b", "c", "d"], [("a", "c"), ("b", "c"), ("b", "d")])
    text = explain(workflow_from_dag(dag))
    assert "1 join(s), no added ordering" in text
    assert "'c waits' on path 1: c depends on b (path 2), on another branch of the block" in text
    assert "path 1: a -> [wait] c" in text and "path 2: b -> d" in text
    assert "1.000 mean, 1.000 worst" in text
