"""Hypothesis strategies and builders for workflow DAGs (shared by the DAG and compiler tests)."""

from __future__ import annotations

import random

from hypothesis import strategies as st

from pennflow.workflow.dag import Dag
from pennflow.workflow.definition import Workflow, validate_definition


@st.composite
def random_dags(draw, max_nodes: int = 25) -> Dag:
    """Any DAG: edges only go from a lower to a higher index."""
    n = draw(st.integers(1, max_nodes))
    density = draw(st.floats(0.05, 0.6))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = random.Random(seed)
    nodes = [f"n{i}" for i in range(n)]
    edges = [(nodes[i], nodes[j]) for j in range(n) for i in range(j) if rng.random() < density]
    return Dag.from_edges(nodes, edges)


@st.composite
def series_parallel_dags(draw, max_leaves: int = 20) -> Dag:
    """Vertex series-parallel DAGs built by random series/parallel composition."""
    counter = iter(range(10_000))

    def build(budget: int):
        if budget <= 1 or draw(st.integers(0, 3)) == 0:
            node = f"n{next(counter)}"
            return [node], [], [node], [node]  # nodes, edges, sources, sinks
        left_budget = draw(st.integers(1, budget - 1))
        a, b = build(left_budget), build(budget - left_budget)
        if draw(st.booleans()):  # series: every sink of a before every source of b
            edges = a[1] + b[1] + [(s, t) for s in a[3] for t in b[2]]
            return a[0] + b[0], edges, a[2], b[3]
        return a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3]

    nodes, edges, _, _ = build(draw(st.integers(1, max_leaves)))
    order = draw(st.permutations(nodes))  # definition order must not matter
    return Dag.from_edges(list(order), edges)


def workflow_from_dag(dag: Dag, name: str = "generated") -> Workflow:
    """Sources become data sources, everything else a processor; ids are the node names."""
    processors = []
    for node in dag.nodes:
        deps = list(dag.deps[node])
        if deps:
            processors.append(
                {"id": node, "image": f"img/{node}:1", "dependsOn": deps, "defaultParams": {"K": "v"}}
            )
        else:
            processors.append({"id": node, "type": "data-source"})
    return validate_definition({"name": name, "processors": processors})


def random_durations(dag: Dag, seed: int) -> dict[str, float]:
    rng = random.Random(seed)
    return {n: rng.uniform(0.1, 10.0) for n in dag.nodes}
