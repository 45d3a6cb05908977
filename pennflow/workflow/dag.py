"""The workflow graph: checks, order, and the series-parallel plan the compiler emits.

Step Functions has no "start when these N states are done" join: a state machine is nested
sequences (``Series``) and ``Parallel`` blocks. A DAG whose precedence is exactly such a nesting
(series-parallel) compiles with no added waiting, so its makespan is the critical path for any
processor durations. Any other DAG needs extra ordering constraints; we add as few as we can:

* split the graph into weakly connected components (-> Parallel);
* otherwise cut it where every node before the cut already precedes every node after it
  (-> Series, no constraint added);
* otherwise (a "prime" block) cut between ASAP levels (longest path from a source, computed once
  over the whole DAG), choosing the level cut that adds the fewest new ordering pairs, and recurse.

Every added constraint orders a node before one of a strictly higher ASAP level, and Kahn levels
(Pennsieve's previous engine: run level 0, then level 1, ...) order *every* such pair. So the
plan's precedence is a subset of the Kahn-level precedence and its makespan is never longer, for
any durations; usually it is shorter because most pairs stay unordered.
"""

from __future__ import annotations

import graphlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Union

if TYPE_CHECKING:
    from pennflow.workflow.definition import Workflow


# ------------------------------------------------------------------ plan tree


@dataclass(frozen=True)
class Step:
    id: str


@dataclass(frozen=True)
class Series:
    parts: tuple[Plan, ...]


@dataclass(frozen=True)
class Parallel:
    branches: tuple[Plan, ...]


Plan = Union[Step, Series, Parallel]  # noqa: UP007 - used at runtime in isinstance-free recursion


def plan_steps(plan: Plan) -> list[str]:
    if isinstance(plan, Step):
        return [plan.id]
    children = plan.parts if isinstance(plan, Series) else plan.branches
    return [sid for child in children for sid in plan_steps(child)]


def plan_depth(plan: Plan) -> int:
    """How many Parallel levels nest in the plan (0 for a step or a plain sequence); iterative, so a
    plan of any shape is measured before anything recurses over it."""
    deepest = 0
    pending: list[tuple[Plan, int]] = [(plan, 0)]
    while pending:
        node, depth = pending.pop()
        if isinstance(node, Parallel):
            depth += 1
            pending.extend((branch, depth) for branch in node.branches)
        elif isinstance(node, Series):
            pending.extend((part, depth) for part in node.parts)
        deepest = max(deepest, depth)
    return deepest


def simulate(plan: Plan, durations: Mapping[str, float]) -> float:
    """Makespan of the plan when each step takes its duration and Parallel waits for all branches."""
    if isinstance(plan, Step):
        return durations[plan.id]
    if isinstance(plan, Series):
        return sum(simulate(part, durations) for part in plan.parts)
    return max(simulate(branch, durations) for branch in plan.branches)


def plan_finish_times(plan: Plan, durations: Mapping[str, float], start: float = 0.0) -> dict[str, tuple]:
    """(start, end) of every step when the plan runs; used to check dependency order."""
    times: dict[str, tuple] = {}
    _finish(plan, durations, start, times)
    return times


def _finish(plan: Plan, durations: Mapping[str, float], start: float, times: dict) -> float:
    if isinstance(plan, Step):
        times[plan.id] = (start, start + durations[plan.id])
        return start + durations[plan.id]
    if isinstance(plan, Series):
        for part in plan.parts:
            start = _finish(part, durations, start, times)
        return start
    return max(_finish(branch, durations, start, times) for branch in plan.branches)


# ------------------------------------------------------------------ the graph


@dataclass
class Dag:
    """Nodes in definition order and their dependencies (edges dependency -> dependent)."""

    nodes: list[str]
    deps: dict[str, tuple[str, ...]]
    succs: dict[str, list[str]] = field(init=False)

    def __post_init__(self) -> None:
        self.succs = {n: [] for n in self.nodes}
        for node in self.nodes:
            for dep in self.deps[node]:
                self.succs[dep].append(node)

    @classmethod
    def from_workflow(cls, workflow: Workflow) -> Dag:
        return cls([p.id for p in workflow.processors], {p.id: p.dependencies for p in workflow.processors})

    @classmethod
    def from_edges(cls, nodes: Sequence[str], edges: Iterable[tuple[str, str]]) -> Dag:
        deps: dict[str, list[str]] = {n: [] for n in nodes}
        for src, dst in edges:
            deps[dst].append(src)
        return cls(list(nodes), {n: tuple(d) for n, d in deps.items()})

    def topological_order(self) -> list[str]:
        """Deterministic: among ready nodes, definition order first."""
        rank = {n: i for i, n in enumerate(self.nodes)}
        sorter = graphlib.TopologicalSorter(self.deps)
        sorter.prepare()
        order: list[str] = []
        while sorter.is_active():
            ready = sorted(sorter.get_ready(), key=rank.__getitem__)
            order.extend(ready)
            sorter.done(*ready)
        return order

    def levels(self) -> dict[str, int]:
        """ASAP level: length of the longest dependency chain above the node."""
        level: dict[str, int] = {}
        for node in self.topological_order():
            level[node] = max((level[d] + 1 for d in self.deps[node]), default=0)
        return level

    def kahn_plan(self) -> Plan:
        """Pennsieve's previous engine: every level waits for the whole previous level."""
        level = self.levels()
        groups: dict[int, list[str]] = {}
        for node in self.nodes:
            groups.setdefault(level[node], []).append(node)
        return _series([_parallel([Step(n) for n in groups[k]]) for k in sorted(groups)])

    def critical_path(self, durations: Mapping[str, float]) -> float:
        finish: dict[str, float] = {}
        for node in self.topological_order():
            finish[node] = max((finish[d] for d in self.deps[node]), default=0.0) + durations[node]
        return max(finish.values(), default=0.0)


# ------------------------------------------------------------------ decomposition


@dataclass(frozen=True)
class AddedConstraint:
    """All of ``before`` must finish before any of ``after`` starts, though the DAG does not require it."""

    before: tuple[str, ...]
    after: tuple[str, ...]
    new_pairs: int


@dataclass(frozen=True)
class Decomposition:
    plan: Plan
    added: tuple[AddedConstraint, ...]

    @property
    def is_series_parallel(self) -> bool:
        return not self.added


def decompose(dag: Dag) -> Decomposition:
    return _Decomposer(dag).run()


class _Decomposer:
    """Bitset reachability makes each cut test a few integer operations, so 1,000 nodes stay fast."""

    def __init__(self, dag: Dag):
        self.dag = dag
        self.order = dag.topological_order()
        self.pos = {n: i for i, n in enumerate(self.order)}
        self.bit = {n: 1 << i for i, n in enumerate(self.order)}
        self.level = dag.levels()
        self.anc: dict[str, int] = {}
        for node in self.order:
            mask = 0
            for dep in dag.deps[node]:
                mask |= self.anc[dep] | self.bit[dep]
            self.anc[node] = mask
        self.desc: dict[str, int] = {}
        for node in reversed(self.order):
            mask = 0
            for succ in dag.succs[node]:
                mask |= self.desc[succ] | self.bit[succ]
            self.desc[node] = mask
        self.added: list[AddedConstraint] = []

    def run(self) -> Decomposition:
        if not self.order:
            return Decomposition(Series(()), ())
        plan = self._block(self.order)
        return Decomposition(plan, tuple(self.added))

    def _mask(self, nodes: Sequence[str]) -> int:
        mask = 0
        for node in nodes:
            mask |= self.bit[node]
        return mask

    def _block(self, nodes: list[str]) -> Plan:
        """``nodes`` is a set in topological order. A prime block is cut in two and the part after
        the cut decomposed in this same loop, so a long run of prime cuts does not nest calls."""
        parts: list[Plan] = []
        while True:
            if len(nodes) == 1:
                parts.append(Step(nodes[0]))
                break
            components = self._components(nodes)
            if len(components) > 1:
                parts.append(_parallel([self._block(c) for c in components]))
                break
            cuts = self._series_cuts(nodes)
            if cuts:
                bounds = [0, *cuts, len(nodes)]
                parts.extend(self._block(nodes[a:b]) for a, b in zip(bounds, bounds[1:], strict=False))
                break
            before, nodes = self._prime_cut(nodes)
            parts.append(self._block(before))
        return _series(parts)

    def _components(self, nodes: list[str]) -> list[list[str]]:
        members = set(nodes)
        parent = {n: n for n in nodes}

        def root(n: str) -> str:
            while parent[n] != n:
                parent[n] = parent[parent[n]]
                n = parent[n]
            return n

        for node in nodes:
            for dep in self.dag.deps[node]:
                if dep in members:
                    parent[root(dep)] = root(node)
        groups: dict[str, list[str]] = {}
        for node in nodes:
            groups.setdefault(root(node), []).append(node)
        return list(groups.values())

    def _series_cuts(self, nodes: list[str]) -> list[int]:
        """Positions k where nodes[:k] all precede nodes[k:] already (so the cut adds nothing).

        A node s with no predecessor after position k is a "source" of the suffix; the cut is clean
        iff every such source has exactly the whole prefix as its ancestors within the block. Each
        node is a suffix source for k in (last predecessor position, own position], so each node
        forbids that interval except at k == its ancestor count: a difference array finds the rest.
        """
        n = len(nodes)
        within = self._mask(nodes)
        local = {node: i for i, node in enumerate(nodes)}
        forbid = [0] * (n + 2)
        for i, node in enumerate(nodes):
            last_pred = max((local[d] for d in self.dag.deps[node] if d in local), default=-1)
            lo, hi = last_pred + 1, i  # k ranges over [lo, hi]
            count = (self.anc[node] & within).bit_count()
            forbid[max(lo, 1)] += 1
            forbid[hi + 1] -= 1
            if max(lo, 1) <= count <= hi:
                forbid[count] -= 1
                forbid[count + 1] += 1
        cuts, running = [], 0
        for k in range(1, n):
            running += forbid[k]
            if running == 0:
                cuts.append(k)
        return cuts

    def _prime_cut(self, nodes: list[str]) -> tuple[list[str], list[str]]:
        """No clean cut: cut between ASAP levels where the fewest unordered pairs get ordered.

        Sweeping the boundary up one level at a time keeps the count of already-ordered pairs
        across the cut incrementally, so all candidate cuts cost O(block size) bit operations.
        """
        by_level: dict[int, list[str]] = {}
        for node in nodes:
            by_level.setdefault(self.level[node], []).append(node)
        levels = sorted(by_level)
        before_mask, after_mask = 0, self._mask(nodes)
        before_count = ordered = 0
        best: tuple[int, int] | None = None
        for index, level in enumerate(levels[:-1]):
            moved = by_level[level]
            after_mask &= ~self._mask(moved)
            # pairs into the moved nodes leave the cut; pairs out of them join it
            ordered -= sum((self.anc[x] & before_mask).bit_count() for x in moved)
            ordered += sum((self.desc[a] & after_mask).bit_count() for a in moved)
            before_mask |= self._mask(moved)
            before_count += len(moved)
            new_pairs = before_count * (len(nodes) - before_count) - ordered
            if best is None or new_pairs < best[0]:
                best = (new_pairs, levels[index + 1])
        assert best is not None, "a prime block spans at least two levels"
        new_pairs, boundary = best
        before = [n for n in nodes if self.level[n] < boundary]
        after = [n for n in nodes if self.level[n] >= boundary]
        constraint = AddedConstraint(
            tuple(_sinks(self.dag, before)), tuple(_sources(self.dag, after)), new_pairs
        )
        self.added.append(constraint)
        return before, after


def _sinks(dag: Dag, nodes: list[str]) -> list[str]:
    members = set(nodes)
    return [n for n in nodes if not any(s in members for s in dag.succs[n])]


def _sources(dag: Dag, nodes: list[str]) -> list[str]:
    members = set(nodes)
    return [n for n in nodes if not any(d in members for d in dag.deps[n])]


def _series(parts: list[Plan]) -> Plan:
    flat: list[Plan] = []
    for part in parts:
        flat.extend(part.parts if isinstance(part, Series) else (part,))
    return flat[0] if len(flat) == 1 else Series(tuple(flat))


def _parallel(branches: list[Plan]) -> Plan:
    flat: list[Plan] = []
    for branch in branches:
        flat.extend(branch.branches if isinstance(branch, Parallel) else (branch,))
    return flat[0] if len(flat) == 1 else Parallel(tuple(flat))
