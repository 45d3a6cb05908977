"""The workflow graph: checks, order, and the plan the compiler emits (:mod:`pennflow.workflow.plan`).

Step Functions has no "start when these N states are done" join: a state machine is nested
sequences (``Series``) and ``Parallel`` blocks. A DAG whose precedence is exactly such a nesting
(series-parallel) compiles with no added waiting, so its makespan is the critical path for any
processor durations. The decomposition, iterative (an explicit stack, no recursion):

* split the graph into weakly connected components (-> Parallel);
* otherwise cut it where every node before the cut already precedes every node after it
  (-> Series, no constraint added);
* otherwise (a "prime" block, not series-parallel) cover the block with disjoint paths along its
  own edges (:mod:`pennflow.workflow.path_cover`) and join each node to its dependencies on other
  paths (-> ``Joined``): every node starts when its dependencies end, so the block, and the
  whole plan, takes exactly its critical path.

The previous compiler's answer to a prime block is kept as the ``level-cuts`` strategy (for
comparison, and for a workflow whose joins would not fit Step Functions' limits): cut between ASAP
levels, choosing the cut that adds the fewest new ordering pairs. Every such constraint is one Kahn
levels (Pennsieve's previous engine) also imposes, so that plan is never slower than Kahn levels.
"""

from __future__ import annotations

import graphlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pennflow.workflow.path_cover import path_cover
from pennflow.workflow.plan import (
    Join,
    Joined,
    Parallel,
    Plan,
    Series,
    Step,
    plan_depth,
    plan_finish_times,
    plan_joins,
    plan_steps,
    simulate,
)

if TYPE_CHECKING:
    from pennflow.workflow.definition import Workflow

__all__ = [
    "JOINS",
    "LEVEL_CUTS",
    "AddedConstraint",
    "Dag",
    "Decomposition",
    "Join",
    "Joined",
    "Parallel",
    "Plan",
    "Series",
    "Step",
    "decompose",
    "plan_depth",
    "plan_finish_times",
    "plan_joins",
    "plan_steps",
    "simulate",
]


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
    joins: tuple[Join, ...] = ()

    @property
    def is_series_parallel(self) -> bool:
        return not self.added and not self.joins


JOINS = "joins"  # the compiler's: a block with no clean cut runs as joined paths
LEVEL_CUTS = "level-cuts"  # the previous compiler's: cut it between ASAP levels (kept to compare)


def decompose(dag: Dag, strategy: str = JOINS) -> Decomposition:
    if strategy not in (JOINS, LEVEL_CUTS):
        raise ValueError(f"unknown strategy {strategy!r}: {JOINS} or {LEVEL_CUTS}")
    return _Decomposer(dag, strategy).run()


class _Pending:
    """One element of the plan being built: filled in once its children are."""

    __slots__ = ("children", "kind", "plan")

    def __init__(self) -> None:
        self.kind = ""
        self.children: list[_Pending] = []
        self.plan: Plan | None = None


class _Decomposer:
    """Bitset reachability makes each cut test a few integer operations, so 5,000 nodes stay fast."""

    def __init__(self, dag: Dag, strategy: str = JOINS):
        self.dag = dag
        self.strategy = strategy
        self.order = dag.topological_order()
        self.pos = {n: i for i, n in enumerate(self.order)}
        self.bit = {n: 1 << i for i, n in enumerate(self.order)}
        self.level = dag.levels() if strategy == LEVEL_CUTS else {}
        self.anc: dict[str, int] = {}
        for node in self.order:
            mask = 0
            for dep in dag.deps[node]:
                mask |= self.anc[dep] | self.bit[dep]
            self.anc[node] = mask
        self.desc: dict[str, int] = {}  # only level cuts count the pairs a cut orders
        if strategy == LEVEL_CUTS:
            for node in reversed(self.order):
                mask = 0
                for succ in dag.succs[node]:
                    mask |= self.desc[succ] | self.bit[succ]
                self.desc[node] = mask
        self.added: list[AddedConstraint] = []
        self.joins: list[Join] = []

    def run(self) -> Decomposition:
        if not self.order:
            return Decomposition(Series(()), ())
        plan = self._build(self.order)
        return Decomposition(plan, tuple(self.added), tuple(self.joins))

    def _build(self, nodes: list[str]) -> Plan:
        """Split blocks depth-first with an explicit stack (no recursion, whatever the nesting),
        then assemble the plan children first: each element is created after its parent."""
        root = _Pending()
        created = [root]
        pending = [(root, nodes)]
        while pending:
            element, block = pending.pop()
            kind, parts = self._split(block)
            element.kind = kind
            if kind == "done":
                element.plan = parts
                continue
            element.children = [_Pending() for _ in parts]
            created.extend(element.children)
            # reversed, so the first part is split first: the same order as a recursive descent
            pending.extend(reversed(list(zip(element.children, parts, strict=True))))
        for element in reversed(created):
            if element.kind == "parallel":
                element.plan = _parallel([child.plan for child in element.children])
            elif element.kind == "series":
                element.plan = _series([child.plan for child in element.children])
        assert root.plan is not None
        return root.plan

    def _split(self, nodes: list[str]) -> tuple[str, Any]:
        """("done", plan) for a step or a joined block; ("parallel"|"series", [sub-blocks])."""
        if len(nodes) == 1:
            return "done", Step(nodes[0])
        components = self._components(nodes)
        if len(components) > 1:
            return "parallel", components
        cuts = self._series_cuts(nodes)
        if cuts:
            bounds = [0, *cuts, len(nodes)]
            return "series", [nodes[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
        if self.strategy == JOINS:
            return "done", self._joined(nodes)
        before, after = self._prime_cut(nodes)
        return "series", [before, after]

    def _joined(self, nodes: list[str]) -> Joined:
        deps = self._reduced_deps(nodes)
        paths = path_cover(nodes, deps)
        joins = []
        for path in paths:
            for index, node in enumerate(path):
                before = path[index - 1] if index else None
                others = tuple(d for d in deps[node] if d != before)
                if others:
                    joins.append(Join(node, others))
        self.joins.extend(joins)
        return Joined(tuple(tuple(path) for path in paths), tuple(joins))

    def _reduced_deps(self, nodes: list[str]) -> dict[str, tuple[str, ...]]:
        """Each node's dependencies within the block less those another one already implies (the
        transitive reduction): fewer edges to cover and fewer dependencies to join on."""
        within = self._mask(nodes)
        reduced = {}
        for node in nodes:
            inside = [d for d in self.dag.deps[node] if self.bit[d] & within]
            implied = 0
            for dep in inside:
                implied |= self.anc[dep]
            reduced[node] = tuple(d for d in inside if not self.bit[d] & implied)
        return reduced

    def _mask(self, nodes: Sequence[str]) -> int:
        mask = 0
        for node in nodes:
            mask |= self.bit[node]
        return mask

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
