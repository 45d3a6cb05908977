"""Graph checks shared by definition loading and the DAG: the one place a cycle is found."""

from __future__ import annotations

import graphlib
from collections.abc import Iterable, Mapping


def find_cycle(graph: Mapping[str, Iterable[str]]) -> list[str] | None:
    """A dependency cycle as a path ``[a, b, ..., a]`` (each depends on the next), or None."""
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        cycle = list(exc.args[1])
        return cycle[::-1]
    return None
