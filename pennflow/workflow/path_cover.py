"""Cover a DAG block with disjoint paths along its own edges, fewest paths first.

A block that is not series-parallel runs as one Parallel branch per path; a node whose dependency
is on another path waits for it at a join (:mod:`pennflow.workflow.asl_joins`). The fewest paths
is the block's size less a maximum matching of its edges (each matched edge links a node to the
next one on its path), found by Hopcroft-Karp in O(E sqrt V), with no recursion.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence

_FREE = -1


def path_cover(nodes: Sequence[str], deps: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """Disjoint paths covering ``nodes`` (in topological order); ``deps`` are edges within them.

    Paths come in the order of their first node, each path in dependency order, so the result
    depends only on the block's order and edges."""
    index = {node: i for i, node in enumerate(nodes)}
    succs: list[list[int]] = [[] for _ in nodes]
    for node in nodes:
        for dep in deps[node]:
            if dep in index:
                succs[index[dep]].append(index[node])
    for targets in succs:
        targets.sort()
    successor = _maximum_matching(succs, len(nodes))
    has_predecessor = [False] * len(nodes)
    for target in successor:
        if target != _FREE:
            has_predecessor[target] = True
    paths = []
    for start in range(len(nodes)):
        if has_predecessor[start]:
            continue
        path, current = [], start
        while current != _FREE:
            path.append(nodes[current])
            current = successor[current]
        paths.append(path)
    return paths


def _maximum_matching(succs: list[list[int]], n: int) -> list[int]:
    """Hopcroft-Karp on the bipartite graph (left copy -> right copy of each edge); returns each
    left node's matched right node or ``_FREE``."""
    match_left = [_FREE] * n
    match_right = [_FREE] * n
    # a greedy start matches most edges of a pipeline-like DAG at once
    for u in range(n):
        for v in succs[u]:
            if match_right[v] == _FREE:
                match_left[u], match_right[v] = v, u
                break
    infinite = n + 1
    while True:
        dist = _layers(succs, match_left, match_right, infinite)
        if dist is None:
            return match_left
        for root in range(n):
            if match_left[root] == _FREE:
                _augment(root, succs, match_left, match_right, dist, infinite)


def _layers(succs: list[list[int]], match_left: list[int], match_right: list[int], infinite: int):
    """BFS from the free left nodes: distances along alternating paths, or None if no augmenting path."""
    dist = [infinite] * len(succs)
    queue = deque()
    for u, matched in enumerate(match_left):
        if matched == _FREE:
            dist[u] = 0
            queue.append(u)
    found = False
    while queue:
        u = queue.popleft()
        for v in succs[u]:
            w = match_right[v]
            if w == _FREE:
                found = True
            elif dist[w] == infinite:
                dist[w] = dist[u] + 1
                queue.append(w)
    return dist if found else None


def _augment(
    root: int,
    succs: list[list[int]],
    match_left: list[int],
    match_right: list[int],
    dist: list[int],
    infinite: int,
) -> bool:
    """One augmenting path from ``root`` along the BFS layers, by an explicit stack (no recursion)."""
    stack = [(root, 0)]
    path: list[tuple[int, int]] = []  # (left node, right node chosen)
    while stack:
        u, edge = stack[-1]
        if edge >= len(succs[u]):
            dist[u] = infinite  # dead end: never try it again in this phase
            stack.pop()
            if path:
                path.pop()
            continue
        stack[-1] = (u, edge + 1)
        v = succs[u][edge]
        w = match_right[v]
        if w == _FREE:
            path.append((u, v))
            for left, right in path:
                match_left[left], match_right[right] = right, left
            return True
        if dist[w] == dist[u] + 1:
            path.append((u, v))
            stack.append((w, 0))
    return False
