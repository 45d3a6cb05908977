"""The ready set of the local scheduler: what may start, as each processor succeeds."""

from __future__ import annotations

from pennflow.engine.ready_set import ReadySet
from pennflow.workflow.dag import Dag


def test_a_processor_is_ready_once_every_one_of_its_dependencies_succeeded() -> None:
    dag = Dag.from_edges(["a", "b", "c", "d"], [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")])
    ready = ReadySet(dag)
    assert ready.take() == ["a"]
    assert ready.take() == []  # handed out once
    ready.succeeded("a")
    assert ready.take() == ["b", "c"]
    ready.succeeded("b")
    assert ready.take() == []  # d still waits for c
    ready.succeeded("c")
    assert ready.take() == ["d"]
    assert ready.never_taken() == []


def test_what_never_became_ready_is_listed_in_definition_order() -> None:
    dag = Dag.from_edges(["a", "b", "c", "d"], [("a", "c"), ("b", "d")])
    ready = ReadySet(dag)
    assert ready.take() == ["a", "b"]
    ready.succeeded("b")  # a failed: c never becomes ready
    assert ready.take() == ["d"]
    assert ready.never_taken() == ["c"]


def test_a_dependency_named_twice_counts_once() -> None:
    dag = Dag(["a", "b"], {"a": (), "b": ("a", "a")})
    ready = ReadySet(dag)
    assert ready.take() == ["a"]
    ready.succeeded("a")
    assert ready.take() == ["b"]
