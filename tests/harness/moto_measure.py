"""Measure what Step Functions limits: the largest state payload and the history length of a run.

Step Functions refuses any state input, output or result over 256 KiB (`States.DataLimitExceeded`,
which no Catch can handle) and fails an execution whose history reaches 25,000 events. moto checks
neither the raw result of a Parallel or Map (the array of branch or item outputs, measured before
ResultPath drops it) nor any limit inside a Distributed Map, whose items it runs in-process with
one shared event list and then discards. The patches here measure both:

* every state's input, raw result and output, in compact JSON bytes, wherever it runs;
* each Distributed Map item as the child execution it is on AWS: its own event list, counted with
  the ExecutionStarted/ExecutionSucceeded pair that moto does not emit for it.

moto also lets a Distributed Map succeed whatever its items do; :func:`distributed_map_fails`
applies AWS's ToleratedFailure rule (default 0: any failed item fails the Map Run).
"""

from __future__ import annotations

import contextlib
import copy
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

from moto.stepfunctions.parser.api import HistoryEventType, MapRunFailedEventDetails
from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import (
    FailureEvent,
    FailureEventException,
)
from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name import StatesErrorName
from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name_type import (
    StatesErrorNameType,
)
from moto.stepfunctions.parser.asl.component.common.path.result_path import ResultPath
from moto.stepfunctions.parser.asl.component.state.exec.state_map.iteration import (
    distributed_iteration_component,
)
from moto.stepfunctions.parser.asl.component.state.exec.state_map.iteration.itemprocessor.distributed_item_processor_worker import (  # noqa: E501
    DistributedItemProcessorWorker,
)
from moto.stepfunctions.parser.asl.component.state.state import CommonStateField
from moto.stepfunctions.parser.asl.eval.event.event_detail import EventDetails
from moto.stepfunctions.parser.asl.eval.event.event_manager import EventManager

# A child execution's own history has these two events, which moto's in-process items lack.
CHILD_EXECUTION_EVENTS = 2
TOLERANCE_EXCEEDED = "The specified tolerated failure threshold was exceeded"


def json_size(value: Any, tries: int = 5) -> int:
    """Bytes of ``value`` as compact UTF-8 JSON, as Step Functions counts a payload.

    moto's ResultPath updates a state's input in place, possibly while a sibling branch's thread
    is measuring it; the measurement is then taken again."""
    for _ in range(tries - 1):
        with contextlib.suppress(RuntimeError):
            return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str).encode())
    return len(
        json.dumps(copy.deepcopy(value), separators=(",", ":"), ensure_ascii=False, default=str).encode()
    )


@dataclass(frozen=True)
class Payload:
    bytes: int = 0
    state: str = ""
    kind: str = ""  # input | result | output


@dataclass
class Figures:
    """What one execution (its parent and every child execution) came to."""

    largest_payload: Payload
    largest_by_kind: dict[str, Payload]  # input | result | output
    history_events: int  # the parent execution's history
    largest_child_history: int  # 0 without Distributed Map items
    child_executions: int
    events_per_state: dict[str, int]

    def summary(self) -> str:
        result = self.largest_by_kind.get("result", Payload())
        return (
            f"largest payload {self.largest_payload.bytes:,} B ({self.largest_payload.kind} of "
            f"{self.largest_payload.state!r}); largest result {result.bytes:,} B (of {result.state!r}); "
            f"history {self.history_events:,} events; "
            f"{self.child_executions:,} child executions, the longest {self.largest_child_history:,} events"
        )


@dataclass
class Recorder:
    """Thread-safe maxima of payload sizes, and the event count of each child execution."""

    largest: Payload = field(default_factory=Payload)
    by_kind: dict[str, Payload] = field(default_factory=dict)
    child_histories: list[int] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def payload(self, kind: str, state: str, value: Any) -> None:
        size = json_size(value)
        with self._lock:
            if size > self.largest.bytes:
                self.largest = Payload(size, state, kind)
            if size > self.by_kind.get(kind, Payload()).bytes:
                self.by_kind[kind] = Payload(size, state, kind)

    def child(self, events: int) -> None:
        with self._lock:
            self.child_histories.append(events)

    def reset(self) -> None:
        with self._lock:
            self.largest = Payload()
            self.by_kind = {}
            self.child_histories = []


def _state_name(env: Any) -> str:
    return env.states.context_object.context_object_data.get("State", {}).get("Name", "?")


@contextlib.contextmanager
def measure_payloads(recorder: Recorder) -> Iterator[None]:
    """Record each state's input (`CommonStateField._eval_body`), raw result (on the stack when
    `ResultPath._eval_body` runs: for a Parallel or Map the whole array of branch or item outputs)
    and output (`_verify_size_quota`, moto's own check of the state output)."""
    original_body = CommonStateField._eval_body
    original_quota = CommonStateField._verify_size_quota
    original_result_path = ResultPath._eval_body

    def eval_body(self, env):
        recorder.payload("input", self.name, env.states.get_input())
        return original_body(self, env)

    def verify_size_quota(self, env, value):
        recorder.payload("output", self.name, value)
        return original_quota(self, env, value)

    def result_path_body(self, env):
        if env.stack:
            recorder.payload("result", _state_name(env), env.stack[-1])
        return original_result_path(self, env)

    with (
        mock.patch.object(CommonStateField, "_eval_body", eval_body),
        mock.patch.object(CommonStateField, "_verify_size_quota", verify_size_quota),
        mock.patch.object(ResultPath, "_eval_body", result_path_body),
    ):
        yield


@contextlib.contextmanager
def child_execution_histories(recorder: Recorder) -> Iterator[None]:
    """Give each Distributed Map item its own event list, as a child execution has on AWS.

    `DistributedIterationComponent._eval_body` swaps in one `EventManager` for the whole Map Run and
    drops it afterwards; `DistributedItemProcessorWorker._eval_job` runs each item on a frame of
    the worker. The wrapped `_eval_job` gives that frame a fresh `EventManager` and records its
    length when the item ends.
    """
    original_eval_job = DistributedItemProcessorWorker._eval_job

    def eval_job(self, env, job):
        env.event_manager = EventManager()
        try:
            return original_eval_job(self, env, job)
        finally:
            recorder.child(len(env.event_manager.get_event_history()) + CHILD_EXECUTION_EVENTS)

    with mock.patch.object(DistributedItemProcessorWorker, "_eval_job", eval_job):
        yield


@contextlib.contextmanager
def distributed_map_fails() -> Iterator[None]:
    """Fail a Distributed Map whose failed items pass its tolerated failure threshold.

    `DistributedItemProcessorWorker._eval_job` counts a failed item and carries on, and
    `DistributedIterationComponent._map_run` returns the outputs whatever the counts say, so a
    failing child never fails the Map in moto. On AWS a Map Run with more failed (or timed out)
    items than ToleratedFailureCount/Percentage allow (default 0) fails with
    `States.ExceedToleratedFailureThreshold`; the wrapped `_map_run` raises exactly that.
    """
    component = distributed_iteration_component.DistributedIterationComponent
    original_map_run = component._map_run

    def map_run(self, env, eval_input):
        original_map_run(self, env, eval_input)
        items = eval_input.map_run_record.item_counter
        failed = items.failed.get() + items.timed_out.get()
        total = max(items.total.get(), 1)
        allowed_count = eval_input.tolerated_failure_count or 0
        allowed_share = (eval_input.tolerated_failure_percentage or 0.0) / 100
        if failed > allowed_count and failed / total > allowed_share:
            raise FailureEventException(
                FailureEvent(
                    env=env,
                    error_name=StatesErrorName(typ=StatesErrorNameType.StatesExceedToleratedFailureThreshold),
                    event_type=HistoryEventType.MapRunFailed,
                    event_details=EventDetails(
                        mapRunFailedEventDetails=MapRunFailedEventDetails(
                            error=StatesErrorNameType.StatesExceedToleratedFailureThreshold.to_name(),
                            cause=f"{TOLERANCE_EXCEEDED}: {failed} of {total} items failed",
                        )
                    ),
                )
            )

    with mock.patch.object(component, "_map_run", map_run):
        yield


def events_per_state(history: list[dict[str, Any]]) -> dict[str, int]:
    """How many history events each state caused (by the name its entered event gives)."""
    counts: dict[str, int] = {}
    current = "(execution)"
    by_id: dict[int, str] = {}
    for event in history:
        entered = event.get("stateEnteredEventDetails")
        current = entered["name"] if entered else by_id.get(event.get("previousEventId", 0), current)
        by_id[event["id"]] = current
        counts[current] = counts.get(current, 0) + 1
    return counts


def figures(recorder: Recorder, history: list[dict[str, Any]]) -> Figures:
    with recorder._lock:
        children = list(recorder.child_histories)
        largest = recorder.largest
        by_kind = dict(recorder.by_kind)
    return Figures(
        largest_payload=largest,
        largest_by_kind=by_kind,
        history_events=len(history),
        largest_child_history=max(children, default=0),
        child_executions=len(children),
        events_per_state=events_per_state(history),
    )
