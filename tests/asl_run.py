"""Run a compiled definition's structure with durations, joins included (shared by compiler tests).

Task and Map states named by a node take its duration, others none. A join's ``<id> done`` state
(or a wait that carries the signal) records when its node signalled; ``<id> waits`` holds its
branch until every dependency it names has signalled. Branches are timed one after the other,
so a wait may need a signal from a branch timed later: the whole machine is timed again with the
signal times found, until they stop changing (they only grow, and the DAG has no cycle).

A split workflow's ``Part k`` states (``states:startExecution.sync:2`` of ``${Partk}``) run child
machine k in their place when ``parts`` are given (a child's start latency counted as zero).
"""

from __future__ import annotations

from typing import Any

JOIN_FUNCTION = "$.node.joinFunction"


def run_asl(
    machine: dict, durations: dict[str, float], parts: list[dict] = ()
) -> tuple[float, dict[str, tuple[float, float]]]:
    signals: dict[str, float] = {}
    for _ in range(len(durations) + 2):
        seen: dict[str, float] = {}
        times: dict[str, tuple[float, float]] = {}
        makespan = _run(machine, durations, 0.0, times, signals, seen, parts)
        if seen == signals:
            return makespan, times
        signals = seen
    raise AssertionError("join signals never settled: a wait depends on itself")


def _run(
    machine: dict,
    durations: dict[str, float],
    clock: float,
    times: dict,
    signals: dict[str, float],
    seen: dict[str, float],
    parts: list[dict],
) -> float:
    name = machine["StartAt"]
    while True:
        state = machine["States"][name]
        payload = _join_payload(state)
        child = _part(state, parts)
        if state["Type"] == "Parallel":
            clock = max(
                (_run(b, durations, clock, times, signals, seen, parts) for b in state["Branches"]),
                default=clock,
            )
        elif child is not None:
            clock = _run(child, durations, clock, times, signals, seen, parts)
        elif payload is not None:
            signalled = payload.get("done") if payload["action"] == "wait" else payload["node"]
            if signalled:
                seen[signalled] = clock
            if payload["action"] == "wait":
                clock = max([clock, *(signals.get(dep, 0.0) for dep in payload["deps"])])
        elif name in durations:
            times[name] = (clock, clock + durations[name])
            clock += durations[name]
        if state.get("End") or state["Type"] in ("Succeed", "Fail") or "Next" not in state:
            return clock
        name = state["Next"]


def _part(state: dict, parts: list[dict]) -> dict | None:
    """The child machine a ``Part k`` state starts, if ``parts`` were given."""
    if state["Type"] != "Task" or not state["Resource"].endswith("states:startExecution.sync:2"):
        return None
    placeholder = state["Parameters"]["StateMachineArn"]
    return parts[int(placeholder.removeprefix("${Part").removesuffix("}")) - 1]


def _join_payload(state: dict) -> dict[str, Any] | None:
    parameters = state.get("Parameters") or {}
    if state["Type"] != "Task" or parameters.get("FunctionName.$") != JOIN_FUNCTION:
        return None
    return parameters["Payload"]
