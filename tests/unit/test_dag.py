"""The series-parallel plan: every node once, order respected, critical path where possible."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pennflow.workflow.dag import (
    LEVEL_CUTS,
    Dag,
    Join,
    Joined,
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
    result = decompose(dag, LEVEL_CUTS)
    assert not result.is_series_parallel
    assert len(result.added) == 1
    assert result.added[0].new_pairs == 1  # only a -> d is new
    assert sorted(plan_steps(result.plan)) == ["a", "b", "c", "d"]


def test_n_shape_runs_as_two_paths_with_one_join():
    dag = Dag.from_edges(["a", "b", "c", "d"], [("a", "c"), ("b", "c"), ("b", "d")])
    result = decompose(dag)
    assert not result.is_series_parallel and not result.added
    assert result.plan == Joined((("a", "c"), ("b", "d")), (Join("c", ("b",)),))
    assert result.joins == (Join("c", ("b",)),)
    assert result.plan.signals() == {"b": ("c",)}
    # b is slow: c waits for it, d starts as soon as b ends, and nobody waits for a level
    durations = {"a": 1.0, "b": 5.0, "c": 1.0, "d": 1.0}
    assert plan_finish_times(result.plan, durations) == {
        "a": (0.0, 1.0),
        "b": (0.0, 5.0),
        "c": (5.0, 6.0),
        "d": (5.0, 6.0),
    }
    assert simulate(result.plan, durations) == dag.critical_path(durations) == 6.0


def test_an_unknown_strategy_is_named():
    with pytest.raises(ValueError, match="unknown strategy 'levels': joins or level-cuts"):
        decompose(Dag.from_edges(["a"], []), "levels")


def test_a_deep_plan_is_decomposed_and_timed_without_recursion():
    # a chain of 600 diamonds nests Series(Parallel(...)) far past Python's recursion limit if the
    # decomposer or the simulator recursed per level; a 3,000-deep caterpillar too
    nodes, edges, parent = ["root"], [], "root"
    for k in range(3000):
        nodes += [f"a{k}", f"b{k}"]
        edges += [(parent, f"a{k}"), (parent, f"b{k}")]
        parent = f"a{k}"
    dag = Dag.from_edges(nodes, edges)
    result = decompose(dag)
    assert result.is_series_parallel
    durations = dict.fromkeys(nodes, 1.0)
    assert simulate(result.plan, durations) == dag.critical_path(durations) == 3001.0
    assert sorted(plan_steps(result.plan)) == sorted(nodes)


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
def test_any_dag_respects_order_and_takes_exactly_its_critical_path(dag, seed):
    result = decompose(dag)
    steps = plan_steps(result.plan)
    assert sorted(steps) == sorted(dag.nodes) and len(steps) == len(set(steps))
    durations = random_durations(dag, seed)
    check_order(dag, result.plan, durations)
    # every node starts when its dependencies end: exactly the critical path (joins cost zero here)
    assert simulate(result.plan, durations) == dag.critical_path(durations)
    assert not result.added
    for join in result.joins:  # a join waits only for real dependencies, never for its own path
        assert set(join.deps) <= set(dag.deps[join.node])


@settings(max_examples=200, deadline=None)
@given(random_dags(), st.integers(0, 10_000))
def test_level_cuts_respect_order_and_never_lose_to_kahn_levels(dag, seed):
    result = decompose(dag, LEVEL_CUTS)
    steps = plan_steps(result.plan)
    assert sorted(steps) == sorted(dag.nodes) and len(steps) == len(set(steps))
    durations = random_durations(dag, seed)
    check_order(dag, result.plan, durations)
    ours = simulate(result.plan, durations)
    assert ours >= dag.critical_path(durations) - EPS
    assert ours <= simulate(dag.kahn_plan(), durations) + EPS
    if result.is_series_parallel:
        assert ours == pytest.approx(dag.critical_path(durations))


@settings(max_examples=100, deadline=None)
@given(series_parallel_dags())
def test_series_parallel_dags_need_no_join_and_plan_as_before(dag):
    joined, cut = decompose(dag), decompose(dag, LEVEL_CUTS)
    assert not joined.joins and joined.plan == cut.plan


@pytest.mark.parametrize("size", [1000, 2000, 5000])
def test_thousands_of_nodes_decompose_in_order_to_their_critical_path(size):
    import random

    rng = random.Random(1)
    nodes = [f"n{i}" for i in range(size)]
    edges = [(nodes[rng.randrange(j)], nodes[j]) for j in range(1, size) for _ in range(2)]
    dag = Dag.from_edges(nodes, sorted(set(edges)))
    result = decompose(dag)
    assert sorted(plan_steps(result.plan)) == sorted(nodes)
    durations = random_durations(dag, 3)
    check_order(dag, result.plan, durations)
    assert simulate(result.plan, durations) == dag.critical_path(durations)
