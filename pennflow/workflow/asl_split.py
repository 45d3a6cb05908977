"""Split a compiled definition too large for one state machine into child state machines.

Step Functions allows 1 MB per definition and 25,000 events per execution's history. A workflow
past either keeps its plan (joins included, so makespan = critical path) and moves parts of it
into child Standard machines, each started from the parent with ``states:startExecution.sync:2``:

* a ``Parallel`` (a series-parallel split, or a joined block's paths) whose branches do not fit
  gets its branches packed, in order, into groups that do; each group is one child machine (a
  ``Parallel`` of those branches), and each of the parent's branches starts one group;
* a sequence that still does not fit is cut, between states that leave the state as they found it
  (``ResultPath`` null: never between a scatter's listing and its Map), into consecutive segments,
  each one child machine started in turn.

Both apply again inside each child, so every machine fits. Joins still work across executions: a
waiting node's token and its dependencies' done-marks live in the run's items of the join table,
whichever execution writes them. A child gets the run's ``run`` and ``node`` (all any state reads;
a scatter's listing result is read by its own Map, which stays with it) and hands back ``{}``.
A failed child fails its task, so the parent's ``Parallel`` fails as with any processor; a
canceled parent task stops its child (the documented policy for ``.sync`` grants StopExecution
for that), and so its waiting branches.

The parent names each child by a placeholder (:func:`part_placeholder`); whoever deploys the
machines (the node's registry, the stack) creates the children first, in order, and puts each
one's published version ARN in its place, so a run always starts the children of its own version.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pennflow.workflow import limits
from pennflow.workflow.asl_input import canonical
from pennflow.workflow.asl_states import WORKFLOW_STATE, CompileOptions

PART_STATE = "Part {}"
PART_SUFFIX = "_part{}"  # a child machine is <parent>_part<k>: no workflow name holds "_"
START_CHILD = "states:startExecution.sync:2"
# An ARN as long as Step Functions allows (256), for each placeholder a deployer substitutes.
ARN_BUDGET = 256
# Room for the parent's own states (the wrapper, finalize, fail) and each child's wrapper.
WRAPPER_BYTES = 8_192
WRAPPER_EVENTS = 64
# What a child adds to the states it is given: its Comment and StartAt, a group's Parallel.
CHILD_BYTES = 512
CHILD_EVENTS = 4
# Refused starts (too many running executions) happen before a child runs: safe to retry. A
# failed child (States.TaskFailed) is not retried, or its processors would run twice.
START_RETRY = {
    "ErrorEquals": ["StepFunctions.ExecutionLimitExceededException"],
    "IntervalSeconds": 5,
    "MaxAttempts": 6,
    "BackoffRate": 2.0,
    "JitterStrategy": "FULL",
}


def part_placeholder(number: int) -> str:
    """What the parent's definition says in place of child ``number``'s ARN (1-based)."""
    return "${Part" + str(number) + "}"


def part_name(parent: str, number: int) -> str:
    return parent + PART_SUFFIX.format(number)


@dataclass(frozen=True)
class Budget:
    definition_bytes: int = limits.DEFINITION_LIMIT - WRAPPER_BYTES
    history_events: int = limits.HISTORY_EVENT_LIMIT - WRAPPER_EVENTS


DEFAULT_BUDGET = Budget()


@dataclass
class Part:
    """One child machine: its definition (which may name earlier parts) and what it runs."""

    definition: dict[str, Any]
    summary: str


@dataclass
class Split:
    definition: dict[str, Any]
    parts: list[Part] = field(default_factory=list)


def fits(definition: dict[str, Any], budget: Budget | None = None) -> bool:
    budget = budget or DEFAULT_BUDGET
    return _cost(definition)[0] <= budget.definition_bytes + WRAPPER_BYTES and (
        _events(definition.get("States", {}).values()) <= budget.history_events + WRAPPER_EVENTS
    )


def split(definition: dict[str, Any], options: CompileOptions, budget: Budget | None = None) -> Split:
    """The parent and its parts; ``definition`` as it is when it fits (nothing is split).

    The definition is taken over: it becomes the parent, rewritten in place (copying a 5,000-node
    definition would take longer than splitting it)."""
    result = Split(definition)
    if fits(definition, budget):
        return result
    splitter = _Splitter(options, budget or DEFAULT_BUDGET, definition.get("Comment", ""), result.parts)
    wrapper = definition["States"][WORKFLOW_STATE]
    wrapper["Branches"] = [splitter.fit_branch(wrapper["Branches"][0])]
    return result


def _size(value: Any) -> int:
    text = canonical(value)
    return len(text.encode()) + text.count("${Part") * ARN_BUDGET


def _events(states: Iterable[dict[str, Any]]) -> int:
    return sum(limits.state_events_within(state) for state in states)


def _cost(branch: dict[str, Any]) -> tuple[int, int]:
    return _size(branch), _events(branch["States"].values())


class _Splitter:
    def __init__(self, options: CompileOptions, budget: Budget, comment: str, parts: list[Part]):
        self.options = options
        self.budget = budget
        self.comment = comment
        self.parts = parts

    def _fits(self, branch: dict[str, Any]) -> bool:
        size, events = _cost(branch)
        return size <= self.budget.definition_bytes and events <= self.budget.history_events

    def fit_branch(self, branch: dict[str, Any]) -> dict[str, Any]:
        """``branch`` (a sequence of states) changed so that it fits, its excess in parts."""
        if self._fits(branch):
            return branch
        states = branch["States"]
        for name, body in states.items():
            if body["Type"] == "Parallel":
                self._fit_parallel(name, body)
        if self._fits(branch):
            return branch
        return self._segmented(branch)

    def _fit_parallel(self, name: str, body: dict[str, Any]) -> None:
        """The Parallel's branches packed into child machines, one parent branch starting each; so
        many that their starts do not fit either, the starts are grouped again (a tree)."""
        while not self._fits(_as_branch(name, body)):
            # each branch fits with room left for its group's own Parallel and Comment
            room = Budget(
                self.budget.definition_bytes - CHILD_BYTES, self.budget.history_events - CHILD_EVENTS
            )
            fitted = [
                _Splitter(self.options, room, self.comment, self.parts).fit_branch(b)
                for b in body["Branches"]
            ]
            groups = self._packed(fitted)
            if len(groups) == len(fitted) and all(_is_start(b) for b in fitted):
                body["Branches"] = fitted  # one start per group already: nothing smaller to make
                return
            body["Branches"] = self._started(name, groups)

    def _packed(self, branches: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
        """Consecutive branches in groups that each fit one child machine."""
        groups: list[list[dict[str, Any]]] = []
        size = events = 0  # of the group being filled, its child's own states included
        for branch in branches:
            b_size, b_events = _cost(branch)
            if (
                groups
                and size + b_size <= self.budget.definition_bytes
                and (events + b_events <= self.budget.history_events)
            ):
                groups[-1].append(branch)
                size, events = size + b_size, events + b_events
            else:
                groups.append([branch])
                size, events = CHILD_BYTES + b_size, CHILD_EVENTS + b_events
        return groups

    def _started(self, name: str, groups: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
        """Each group as a child machine (a Parallel of its branches), and the branches that start them."""
        out, first = [], 1
        for group in groups:
            child = {"StartAt": name, "States": {name: {"Type": "Parallel", "Branches": group, "End": True}}}
            child["States"][name]["OutputPath"] = None
            summary = f"branches {first}-{first + len(group) - 1} of '{name}'"
            first += len(group)
            out.append(self._start_branch(child, summary))
        return out

    def _segmented(self, branch: dict[str, Any]) -> dict[str, Any]:
        """Consecutive segments of the sequence, each a child machine, started one after another."""
        names = list(branch["States"])
        segments: list[list[str]] = [[]]
        size, events = CHILD_BYTES, 0
        for index, name in enumerate(names):
            body = branch["States"][name]
            s_size, s_events = _size({name: body}), limits.state_events_within(body)
            cut_allowed = index == 0 or branch["States"][names[index - 1]].get("ResultPath", 0) is None
            over = (
                size + s_size > self.budget.definition_bytes or events + s_events > self.budget.history_events
            )
            if segments[-1] and over and cut_allowed:
                segments.append([])
                size, events = CHILD_BYTES, 0
            segments[-1].append(name)
            size, events = size + s_size, events + s_events
        if len(segments) == 1:  # one state or an uncuttable run of them: nothing left to move
            return branch
        starts = []
        for segment in segments:
            states = {name: branch["States"][name] for name in segment}
            last = states[segment[-1]] = dict(states[segment[-1]])  # its own copy: it now ends
            last.pop("Next", None)
            last["End"] = True
            last["OutputPath"] = None
            child = self.fit_branch({"StartAt": segment[0], "States": states})
            summary = f"states '{segment[0]}' to '{segment[-1]}'"
            starts.append(self._start_state(child, summary))
        for state, following in zip(starts, starts[1:], strict=False):
            state[1]["Next"] = following[0]
        starts[-1][1]["End"] = True
        starts[-1][1]["OutputPath"] = None
        return {"StartAt": starts[0][0], "States": dict(starts)}

    def _start_branch(self, child: dict[str, Any], summary: str) -> dict[str, Any]:
        name, state = self._start_state(child, summary)
        state["End"], state["OutputPath"] = True, None
        return {"StartAt": name, "States": {name: state}}

    def _start_state(self, child: dict[str, Any], summary: str) -> tuple[str, dict[str, Any]]:
        """Register ``child`` as the next part; the parent's state that starts it and waits."""
        self.parts.append(Part({"Comment": f"{self.comment}: {summary}", **child}, summary))
        number = len(self.parts)
        state = {
            "Type": "Task",
            "Resource": self.options.resource(START_CHILD),
            "Parameters": {
                "StateMachineArn": part_placeholder(number),
                "Input": {
                    "run.$": "$.run",
                    "node.$": "$.node",
                    "AWS_STEP_FUNCTIONS_STARTED_BY_EXECUTION_ID.$": "$$.Execution.Id",
                },
            },
            "ResultPath": None,
            "Retry": [dict(START_RETRY)],
        }
        return PART_STATE.format(number), state


def _is_start(branch: dict[str, Any]) -> bool:
    """A branch that only starts a part (what grouping leaves in the parent)."""
    states = list(branch["States"].values())
    return len(states) == 1 and str(states[0].get("Resource", "")).endswith(START_CHILD)


def _as_branch(name: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"StartAt": name, "States": {name: body}}


def substitute(definition: str, arns: Iterable[str]) -> str:
    """The definition's text with each part's placeholder replaced by its ARN (part 1 first)."""
    for number, arn in enumerate(arns, 1):
        definition = definition.replace(part_placeholder(number), arn)
    return definition
