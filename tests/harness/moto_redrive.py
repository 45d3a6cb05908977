"""RedriveExecution for moto, which has none: the machine a redrive runs, built from the failed attempt's
history by the rules AWS documents, then executed in moto like any other.

The rules (Step Functions API reference, RedriveExecution,
https://docs.aws.amazon.com/step-functions/latest/apireference/API_RedriveExecution.html, and the
developer guide's "Redriving executions" and "Redriving Map Runs" pages,
https://docs.aws.amazon.com/step-functions/latest/dg/redrive-executions.html and .../redrive-map-run.html):

- a redrive "continues the failed execution from the unsuccessful step and uses the same input";
  the successful steps keep their results and are not run again;
- a Parallel (or inline Map) redrives "only the iterations and branches that failed or aborted";
- a state is unsuccessful when the history has its ``<type>StateEntered`` event and no matching
  ``<type>StateExited`` one.

So, per machine and per branch of a Parallel that is redriven: it restarts at its state that was
entered and never exited (given the input it was entered with; a branch aborted between two states
restarts at the next one), a branch that reached its end hands back the output it ended with and
runs nothing, and a branch never entered runs from its start.
A caught error is no exception: the state that caught it exits (moto's interpreter, like Step
Functions, writes its ``...StateExited`` once the Catch has chosen the next state), so the execution's
unsuccessful step is the one the Catch led to. A Distributed Map that failed runs all its items again
here, where AWS reruns only its unsuccessful child executions (no compiled test relies on that).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from typing import Any

from tests.harness.moto_sfn import ExecutionResult, LambdaHandler, MotoStepFunctions, OutcomeScript

REDRIVEN_INPUT = " (input as entered)"  # the Pass state that hands a restarted state its input


def redriven_definition(
    definition: Mapping[str, Any], history: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """The machine a redrive of the execution with ``history`` runs (see the module docstring)."""
    entered: dict[str, Any] = {}
    exited: dict[str, Any] = {}
    for event in sorted(history, key=lambda e: e["id"]):
        if "stateEnteredEventDetails" in event:
            details = event["stateEnteredEventDetails"]
            entered[details["name"]] = json.loads(details.get("input") or "{}")
        if "stateExitedEventDetails" in event:
            details = event["stateExitedEventDetails"]
            exited[details["name"]] = json.loads(details.get("output") or "{}")
    machine = copy.deepcopy(dict(definition))
    _redrive_level(machine, entered, exited, top=True)
    return machine


def _redrive_level(level: dict[str, Any], entered: dict[str, Any], exited: dict[str, Any], top: bool) -> None:
    states = level["States"]
    order = [name for name in entered if name in states]  # this level's states, as the attempt entered them
    if not order:
        return  # never entered: it runs from its start
    unfinished = [name for name in order if name not in exited]
    if len(unfinished) > 1:
        raise ValueError(
            f"states {unfinished} of one branch were all left unfinished: not a sequential branch"
        )
    if unfinished:
        restart, given = unfinished[0], entered[unfinished[0]]
    else:
        last = order[-1]
        if states[last].get("End") or states[last]["Type"] in ("Succeed", "Fail"):
            if top:
                raise ValueError("the execution reached its end state: there is nothing to redrive")
            level["States"] = {last: {"Type": "Pass", "Result": exited[last], "End": True}}
            level["StartAt"] = last
            return
        restart, given = states[last]["Next"], exited[last]  # aborted between two states
    if states[restart]["Type"] == "Parallel":
        for branch in states[restart]["Branches"]:
            _redrive_level(branch, entered, exited, top=False)
    states[restart + REDRIVEN_INPUT] = {"Type": "Pass", "Result": given, "Next": restart}
    level["StartAt"] = restart + REDRIVEN_INPUT


def redrive(
    aws: MotoStepFunctions,
    definition: Mapping[str, Any],
    failed: ExecutionResult,
    input: Mapping[str, Any],
    *,
    outcomes: Mapping[str, OutcomeScript] | None = None,
    lambdas: Mapping[str, LambdaHandler] | None = None,
    timeout: float = 10.0,
) -> ExecutionResult:
    """Run the redrive of ``failed`` (an execution of ``definition`` with ``input``) in moto; its
    result's calls are the redrive's own."""
    if failed.status not in ("FAILED", "TIMED_OUT", "ABORTED"):
        raise ValueError(
            f"only a FAILED, TIMED_OUT or ABORTED execution can be redriven, not {failed.status}"
        )
    machine = redriven_definition(definition, failed.history)
    return aws.run_execution(machine, dict(input), outcomes=outcomes, lambdas=lambdas, timeout=timeout)
