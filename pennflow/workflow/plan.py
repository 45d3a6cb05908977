"""The plan tree the compiler emits (steps in series, in parallel, or as joined paths), and how long
it takes: simulation with given durations, iterative so that a plan of any depth is timed."""

from __future__ import annotations

import graphlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Union


@dataclass(frozen=True)
class Step:
    id: str


@dataclass(frozen=True)
class Series:
    parts: tuple[Plan, ...]


@dataclass(frozen=True)
class Parallel:
    branches: tuple[Plan, ...]


@dataclass(frozen=True)
class Join:
    """``node`` starts only when ``deps`` (steps on other paths of its block) have finished."""

    node: str
    deps: tuple[str, ...]


@dataclass(frozen=True)
class Joined:
    """A block with no series or parallel split: each path (along the DAG's own edges) is one
    branch of a Parallel, and a node with a dependency on another path waits at a join. Each node
    starts when its dependencies end, so the block takes its critical path."""

    paths: tuple[tuple[str, ...], ...]
    joins: tuple[Join, ...]

    def deps_within(self) -> dict[str, tuple[str, ...]]:
        """Each node's dependencies inside the block: its path predecessor and its join's."""
        waits = {join.node: join.deps for join in self.joins}
        deps: dict[str, tuple[str, ...]] = {}
        for path in self.paths:
            for index, node in enumerate(path):
                before = (path[index - 1],) if index else ()
                deps[node] = before + waits.get(node, ())
        return deps

    def signals(self) -> dict[str, tuple[str, ...]]:
        """Each node some join waits for -> the nodes waiting for it, in path order."""
        waiting: dict[str, list[str]] = {}
        for join in self.joins:
            for dep in join.deps:
                waiting.setdefault(dep, []).append(join.node)
        return {node: tuple(nodes) for node, nodes in waiting.items()}


Plan = Union[Step, Series, Parallel, Joined]  # noqa: UP007 - used at runtime in isinstance-free recursion


def _children(plan: Plan) -> tuple[Plan, ...]:
    if isinstance(plan, Series):
        return plan.parts
    if isinstance(plan, Parallel):
        return plan.branches
    return ()


def _post_order(plan: Plan) -> list[Plan]:
    """Every element of the plan, children before their parent; iterative, so any depth is fine."""
    order: list[Plan] = []
    pending = [plan]
    while pending:
        node = pending.pop()
        order.append(node)
        pending.extend(_children(node))
    order.reverse()
    return order


def plan_steps(plan: Plan) -> list[str]:
    steps: list[str] = []
    pending = [plan]
    while pending:
        node = pending.pop()
        if isinstance(node, Step):
            steps.append(node.id)
        elif isinstance(node, Joined):
            steps.extend(step for path in node.paths for step in path)
        else:
            pending.extend(reversed(_children(node)))
    return steps


def plan_joins(plan: Plan) -> list[Join]:
    return [join for node in _post_order(plan) if isinstance(node, Joined) for join in node.joins]


def plan_depth(plan: Plan) -> int:
    """How many Parallel levels nest in the plan (0 for a step or a plain sequence; a joined block
    is one Parallel of paths); iterative, so a plan of any shape is measured before anything
    recurses over it."""
    deepest = 0
    pending: list[tuple[Plan, int]] = [(plan, 0)]
    while pending:
        node, depth = pending.pop()
        if isinstance(node, Parallel | Joined):
            depth += 1
        pending.extend((child, depth) for child in _children(node))
        deepest = max(deepest, depth)
    return deepest


def simulate(plan: Plan, durations: Mapping[str, float]) -> float:
    """Makespan of the plan when each step takes its duration, Parallel waits for all branches and a
    join releases its node when the last dependency ends (a join's own latency counted as zero)."""
    times = plan_finish_times(plan, durations)
    return max((end for _, end in times.values()), default=0.0)


def plan_finish_times(plan: Plan, durations: Mapping[str, float], start: float = 0.0) -> dict[str, tuple]:
    """(start, end) of every step when the plan runs; used to check dependency order.

    Iterative (an explicit stack of frames), so a plan of any depth is timed."""
    times: dict[str, tuple] = {}
    # frame: [element, clock (a Series: now; a Parallel: its start), next child, latest child end]
    stack: list[list[Any]] = [[plan, start, 0, start]]
    while stack:
        frame = stack[-1]
        node = frame[0]
        if isinstance(node, Step):
            end = frame[1] + durations[node.id]
            times[node.id] = (frame[1], end)
        elif isinstance(node, Joined):
            end = _joined_times(node, durations, frame[1], times)
        else:
            children = _children(node)
            if frame[2] < len(children):
                child = children[frame[2]]
                frame[2] += 1
                stack.append([child, frame[1], 0, frame[1]])
                continue
            end = frame[1] if isinstance(node, Series) else frame[3]
        stack.pop()
        if stack:
            parent = stack[-1]
            if isinstance(parent[0], Series):
                parent[1] = end
            else:
                parent[3] = max(parent[3], end)
    return times


def _joined_times(block: Joined, durations: Mapping[str, float], begin: float, times: dict) -> float:
    """Each node of the block starts when its dependencies end (its join releases it then)."""
    finish: dict[str, float] = {}
    deps = block.deps_within()
    for node in graphlib.TopologicalSorter(deps).static_order():
        start = max((finish[d] for d in deps[node]), default=begin)
        finish[node] = start + durations[node]
        times[node] = (start, finish[node])
    return max(finish.values(), default=begin)
