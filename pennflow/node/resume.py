"""Preparing a run across invocations: a time budget, and handing a half-prepared run on.

A fresh slot registers one task definition per processor, and ``RegisterTaskDefinition`` is
throttled account-wide (a burst of 20, then 1 per second): a 100-processor workflow needs about
100 s, close to prepare's 120 s timeout. So registration stops while enough time is left, the run
keeps its slot and goes back on the queue, and a new prepare invocation carries on:

- every family is remembered on the slot item as soon as it is registered
  (:meth:`pennflow.node.taskdefs.TaskDefinitions.ensure`), so nothing is registered twice;
- a queued run that already holds a slot is served first, free slot or not
  (:func:`pennflow.node.lifecycle.start_queued_runs`), so the hand-over never loses the slot;
- an invocation killed mid-registration leaves the run holding its slot off the queue; the
  asynchronous retry of the same event queues it again and the same path resumes it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Protocol

from pennflow import aws

RESERVE_SECONDS = 20.0  # kept for the slot and run writes, the manifest, StartExecution and the hand-over
MIN_CALL_SECONDS = 1.0  # a registration at the account's sustained rate of one per second


class TimeBudget:
    """What is left of this invocation's time, and whether one more call fits before the reserve."""

    def __init__(self, time_left: Callable[[], float] | None = None, reserve: float = RESERVE_SECONDS):
        self._time_left = time_left
        self.reserve = reserve

    @classmethod
    def of_lambda(cls, context: Any, reserve: float = RESERVE_SECONDS) -> TimeBudget:
        """From a Lambda context (``get_remaining_time_in_millis``); unlimited without one."""
        remaining = getattr(context, "get_remaining_time_in_millis", None)
        if remaining is None:
            return cls(None, reserve)
        return cls(lambda: remaining() / 1000.0, reserve)

    @property
    def limited(self) -> bool:
        return self._time_left is not None

    def seconds_left(self) -> float:
        return float("inf") if self._time_left is None else self._time_left()

    def allows(self, seconds: float) -> bool:
        """True when a call of about ``seconds`` still leaves the reserve."""
        return self.seconds_left() - seconds >= self.reserve


class PreparationPaused(Exception):
    """Registration stopped to stay within the invocation's time; progress is on the slot item."""

    def __init__(self, registered: int, remaining: int):
        self.registered = registered
        self.remaining = remaining
        super().__init__(
            f"registered {registered} task definition(s) in this invocation, {remaining} still to register"
        )


class Continuation(Protocol):
    def resume(self, run_id: str) -> None:
        """Have the node carry on preparing this run soon, in a new invocation."""


class NoContinuation:
    """Nothing to invoke (tests, a node without the setting): the run waits on the queue, holding
    its slot, until the next preparation or slot release serves the queue."""

    def resume(self, run_id: str) -> None:
        pass


class AsyncPrepare:
    """Invokes the prepare function asynchronously with ``{"runId"}``, as the API does to start a run."""

    def __init__(self, function_name: str, client: Any = None):
        self.function_name = function_name
        self._client = client

    def resume(self, run_id: str) -> None:
        client = self._client or aws.client("lambda")
        client.invoke(
            FunctionName=self.function_name,
            InvocationType="Event",
            Payload=json.dumps({"runId": run_id}).encode(),
        )
