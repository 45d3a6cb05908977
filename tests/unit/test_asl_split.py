"""The split into child machines (pennflow.workflow.asl_split): every machine fits its budget, each
processor is in exactly one, and the split machines still take the critical path (timed by running
their structure, children in place of the states that start them)."""

from __future__ import annotations

import json
import random

import pytest

from pennflow.workflow.asl import CompileOptions, _Compiler
from pennflow.workflow.asl_input import canonical
from pennflow.workflow.asl_split import ARN_BUDGET, Budget, part_placeholder, split
from pennflow.workflow.dag import Dag, decompose
from pennflow.workflow.limits import state_events_within
from tests.asl_run import run_asl
from tests.dag_strategies import workflow_from_dag
from tests.unit.test_compiler_scale import pipeline

BUDGETS = [Budget(12_000, 200), Budget(30_000, 600), Budget(200_000, 100_000), Budget(1_000_000, 300)]


def machines_of(dag: Dag, budget: Budget):
    workflow = workflow_from_dag(dag)
    definition = _Compiler(workflow, CompileOptions(), decompose(dag)).compile()
    pieces = split(definition, CompileOptions(), budget)
    return pieces, [part.definition for part in pieces.parts]


def processors_in(machine: dict) -> list[str]:
    names, pending = [], [machine]
    while pending:
        current = pending.pop()
        for name, state in current["States"].items():
            if state["Type"] == "Map" or "ecs:runTask" in state.get("Resource", ""):
                names.append(name)
            pending.extend(state.get("Branches", ()))
    return names


@pytest.mark.parametrize("budget", BUDGETS, ids=lambda b: f"{b.definition_bytes}B-{b.history_events}ev")
@pytest.mark.parametrize(("nodes", "seed"), [(40, 1), (120, 2), (300, 3)])
def test_every_machine_fits_and_holds_its_own_processors(nodes, seed, budget):
    dag = pipeline(nodes, seed)
    pieces, parts = machines_of(dag, budget)
    for part in parts:
        size = len(canonical(part).encode()) + canonical(part).count("${Part") * ARN_BUDGET
        events = sum(state_events_within(s) for s in part["States"].values())
        assert size <= budget.definition_bytes and events <= budget.history_events
    placed = [name for m in (pieces.definition, *parts) for name in processors_in(m)]
    assert sorted(placed) == sorted(dag.nodes), "each processor in exactly one machine"
    texts = [json.dumps(m) for m in (pieces.definition, *parts)]
    for number in range(1, len(parts) + 1):
        starts = [i for i, text in enumerate(texts) if f'"{part_placeholder(number)}"' in text]
        assert len(starts) == 1, f"part {number} is started from one machine"
        assert starts[0] == 0 or starts[0] > number, "a part names only parts made before it"


@pytest.mark.parametrize(("nodes", "seed"), [(40, 4), (120, 5), (300, 6)])
def test_split_machines_still_take_the_critical_path(nodes, seed):
    rng = random.Random(seed)
    dag = pipeline(nodes, seed)
    for budget in BUDGETS[:2]:
        pieces, parts = machines_of(dag, budget)
        assert parts, "split"
        for _ in range(5):
            durations = {node: rng.uniform(1, 10) for node in dag.nodes}
            makespan, times = run_asl(pieces.definition, durations, parts)
            assert makespan == pytest.approx(dag.critical_path(durations))
            for node in dag.nodes:
                assert all(times[dep][1] <= times[node][0] + 1e-9 for dep in dag.deps[node])


def test_a_definition_that_fits_is_left_as_it_is():
    dag = pipeline(30)
    definition = _Compiler(workflow_from_dag(dag), CompileOptions(), decompose(dag)).compile()
    before = canonical(definition)
    pieces = split(definition, CompileOptions())
    assert not pieces.parts and canonical(pieces.definition) == before
