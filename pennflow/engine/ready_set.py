"""The processors of a run that may start now: each finished processor touches only its own
successors, so a run of n processors and e dependencies costs O(n + e) to schedule, never a scan of
everything still waiting."""

from __future__ import annotations

from collections import deque

from pennflow.workflow.dag import Dag


class ReadySet:
    def __init__(self, dag: Dag):
        self._succs = {pid: list(dict.fromkeys(after)) for pid, after in dag.succs.items()}
        self._missing = {pid: len(set(dag.deps[pid])) for pid in dag.nodes}
        self._ready = deque(pid for pid in dag.nodes if not self._missing[pid])
        self._nodes = dag.nodes
        self._taken: set[str] = set()

    def take(self) -> list[str]:
        """The processors that became ready since the last call (definition order at first)."""
        ready = list(self._ready)
        self._ready.clear()
        self._taken.update(ready)
        return ready

    def succeeded(self, pid: str) -> None:
        """``pid`` succeeded: its successors whose every dependency succeeded are ready."""
        for succ in self._succs[pid]:
            self._missing[succ] -= 1
            if not self._missing[succ]:
                self._ready.append(succ)

    def never_taken(self) -> list[str]:
        """The processors never handed out (the run stopped before they were ready), in definition order."""
        return [pid for pid in self._nodes if pid not in self._taken]
