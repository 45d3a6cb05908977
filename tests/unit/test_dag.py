"""The series-parallel plan: every node once, order respected, critical path where possible."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pennflow.workflow.dag import (
    Dag,
    Parallel,
    Series,
    Step,
    decompose,
    plan_finish_times,
    plan_steps,
    simulate,
)
from pennflow.workflow.graph import find_cycle
from tests.dag_strategies import random_dags, random_durations, series_parallel_dags

EPS = 1e-9


def check_order(dag: Dag, plan, durations) -> None:
    times = plan_finish_times(plan, durations)
    for node in dag.nodes:
        for dep in dag.deps[node]:
            assert times[dep][1] <= times[node][0] + EPS, f"{node} starts before {dep} ends"


def test_find_cycle_returns_the_path():
    assert find_cycle({"a": ["b"], "b": ["c"], "c": ["a"]}) in (
        ["a", "b", "c", "a"],
        ["b", "c", "a", "b"],
        ["c", "a", "b", "c"],
    )
    assert find_cycle({"a": [], "b": ["a"]}) is None


def test_diamond_is_series_parallel():
    dag = Dag.from_edges(["s", "a", "b", "t"], [("s", "a"), ("s", "b"), ("a", "t"), ("b", "t")])
    result = decompose(dag)
    assert result.is_series_parallel
    assert result.plan == Series((Step("s"), Parallel((Step("a"), Step("b"))), Step("t")))


def test_complete_bipartite_layers_need_no_added_constraint():
    edges = [(a, b) for a in ("a1", "a2") for b in ("b1", "b2")]
    result = decompose(Dag.from_edges(["a1", "a2", "b1", "b2"], edges))
    assert result.is_series_parallel
    assert result.plan == Series((Parallel((Step("a1"), Step("a2"))), Parallel((Step("b1"), Step("b2")))))


def test_n_shape_is_not_series_parallel_and_says_what_it_added():
    # a->c, b->c, b->d: the smallest DAG Step Functions cannot express without waiting.
    dag = Dag.from_edges(["a", "b", "c", "d"], [("a", "c"), ("b", "c"), ("b", "d")])
    result = decompose(dag)
    assert not result.is_series_parallel
    assert len(result.added) == 1
    assert result.added[0].new_pairs == 1  # only a -> d is new
    assert sorted(plan_steps(result.plan)) == ["a", "b", "c", "d"]


def test_topological_order_is_deterministic_and_prefers_definition_order():
    dag = Dag.from_edges(["z", "y", "x"], [("z", "x")])
    assert dag.topological_order() == ["z", "y", "x"]


def test_critical_path():
    dag = Dag.from_edges(["a", "b", "c"], [("a", "c"), ("b", "c")])
    assert dag.critical_path({"a": 1, "b": 5, "c": 2}) == 7


@settings(max_examples=200, deadline=None)
@given(series_parallel_dags(), st.integers(0, 10_000))
def test_series_parallel_dags_compile_to_their_critical_path(dag, seed):
    result = decompose(dag)
    assert result.is_series_parallel
    assert sorted(plan_steps(result.plan)) == sorted(dag.nodes)
    durations = random_durations(dag, seed)
    check_order(dag, result.plan, durations)
    assert simulate(result.plan, durations) == pytest.approx(dag.critical_path(durations))


@settings(max_examples=200, deadline=None)
@given(random_dags(), st.integers(0, 10_000))
def test_any_dag_respects_order_and_never_loses_to_kahn_levels(dag, seed):
    result = decompose(dag)
    steps = plan_steps(result.plan)
    assert sorted(steps) == sorted(dag.nodes) and len(steps) == len(set(steps))
    durations = random_durations(dag, seed)
    check_order(dag, result.plan, durations)
    ours = simulate(result.plan, durations)
    assert ours >= dag.critical_path(durations) - EPS
    assert ours <= simulate(dag.kahn_plan(), durations) + EPS
    if result.is_series_parallel:
        assert ours == pytest.approx(dag.critical_path(durations))


def test_thousand_nodes_decompose():
    import random

    rng = random.Random(1)
    nodes = [f"n{i}" for i in range(1000)]
    edges = [(nodes[rng.randrange(j)], nodes[j]) for j in range(1, 1000) for _ in range(2)]
    dag = Dag.from_edges(nodes, sorted(set(edges)))
    result = decompose(dag)
    assert sorted(plan_steps(result.plan)) == sorted(nodes)
    check_order(dag, result.plan, random_durations(dag, 3))
