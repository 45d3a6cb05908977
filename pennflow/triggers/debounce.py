"""Debounce windows: a burst of matching uploads becomes one run.

Per rule there is at most one open window (``pending#<rule_id>``; a rule watches one dataset, so
this is per rule and dataset). The first matching event opens it and schedules one delayed fire
message (SQS, ``DelaySeconds = debounceSeconds``); later events only add their files to it.

Opening sends the message *before* storing the window: if the store then refuses (another event
opened the rule's window first), the message names a window that never existed and firing it does
nothing; the other order could leave a stored window whose message was never sent, which would
never fire.

Firing (``trigger_fire``), for the message's window:
1. not due yet (events kept coming): schedule the message again for the new due time;
2. due: in one transaction, delete the window *at the version read* and store its closed record
   (``FIRING``). An event that joined meanwhile changed the version, so the close is retried with
   it included: no file is ever lost between reading and closing;
3. start the run through the ``RunStarter`` port with the window id as idempotency key, and record
   ``STARTED`` with the run id.
A repeated message finds the window closed: when the closed record is still ``FIRING`` (the first
attempt died or the node was unavailable) it starts the run again with the same key, which the
starter turns into the same run; otherwise it does nothing. So each window starts exactly one run.
A window whose message was lost for good (dead-lettered) is re-armed by the next event that joins
it once it is ``OVERDUE_AFTER_SECONDS`` past its max wait.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from pennflow import aws
from pennflow.triggers.models import (
    RULE_ID_PATTERN,
    WINDOW_ID_PATTERN,
    FiredWindow,
    PendingWindow,
    Scope,
    TriggeredRun,
    TriggerRule,
    WindowAddition,
    WindowStatus,
    new_window_id,
)
from pennflow.triggers.store import TriggerStore, fits

MAX_SQS_DELAY_SECONDS = 900
EARLY_TOLERANCE_SECONDS = 1.0  # SQS delays are whole seconds; fire a window due within the second
MAX_CLOSE_ATTEMPTS = 8
MAX_OPEN_ATTEMPTS = 3
# A message whose window is not stored yet (its opener is between sending and storing) is retried
# until this long after the window opened; after that it was a loser's message, and is dropped.
UNOPENED_GRACE_SECONDS = 60
# A window still open this long past its max wait lost its fire message (dead-lettered after
# repeated failures): the next event to join it schedules another, so the rule is never stuck.
OVERDUE_AFTER_SECONDS = 900
RUN_KEY_PREFIX = "trigger-window-"


class FireMessage(BaseModel):
    """The SQS message body that fires a window."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    rule_id: str = Field(pattern=RULE_ID_PATTERN)
    window_id: str = Field(pattern=WINDOW_ID_PATTERN)
    opened_at: float


class FireQueue(Protocol):
    def schedule(self, message: FireMessage, delay_seconds: int) -> None:
        """Deliver the message to the fire function after the delay (0..900 s), at least once."""


class SqsFireQueue:
    def __init__(self, queue_url: str, client: Any = None):
        self.queue_url = queue_url
        self._client = client

    def schedule(self, message: FireMessage, delay_seconds: int) -> None:
        client = self._client or aws.client("sqs")
        client.send_message(
            QueueUrl=self.queue_url,
            MessageBody=message.model_dump_json(by_alias=True),
            DelaySeconds=max(0, min(MAX_SQS_DELAY_SECONDS, int(delay_seconds))),
        )


class RunRefused(Exception):
    """The node will not start this run, now or on a retry (e.g. the workflow is gone)."""


class RunStarter(Protocol):
    def start(self, run: TriggeredRun) -> str:
        """Start the run and return its id. The same ``run.key`` must give the same run.

        Raises RunRefused for a permanent refusal; any other exception is retried.
        """


class WindowContention(RuntimeError):
    """Events kept changing the window faster than it could be opened or closed; retry."""


class WindowNotStoredYet(RuntimeError):
    """The message's window is not stored yet; retry the message later."""


@dataclass(frozen=True)
class WindowJoined:
    window_id: str
    opened: bool  # this event opened the window (and scheduled its fire message)
    due_at: float


class FireStatus(StrEnum):
    STARTED = "started"
    RESUMED = "resumed"  # a previous attempt closed the window; this one started its run
    RESCHEDULED = "rescheduled"
    ALREADY_FIRED = "already-fired"
    STRAY = "stray"  # the message names a window that was never stored
    SKIPPED = "skipped"
    REFUSED = "refused"


@dataclass(frozen=True)
class FireOutcome:
    status: FireStatus
    window_id: str
    run_id: str | None = None
    detail: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status.value,
            "windowId": self.window_id,
            "runId": self.run_id,
            "detail": self.detail,
        }


class Debouncer:
    def __init__(self, store: TriggerStore, queue: FireQueue, clock: Callable[[], float] = time.time):
        self.store = store
        self.queue = queue
        self.clock = clock

    # ---------------------------------------------------------------- events

    def add(self, rule: TriggerRule, addition: WindowAddition) -> WindowJoined:
        """Add an event's matching files to the rule's window, opening it if none is open."""
        for _ in range(MAX_OPEN_ATTEMPTS):
            now = self.clock()
            window = self.store.add_to_window(rule.rule_id, addition, now=now)
            if window is not None:
                if now > window.opened_at + window.max_wait_seconds + OVERDUE_AFTER_SECONDS:
                    message = FireMessage(
                        rule_id=rule.rule_id, window_id=window.window_id, opened_at=window.opened_at
                    )
                    self.queue.schedule(message, 0)  # a repeat of a live message fires nothing twice
                return WindowJoined(window.window_id, opened=False, due_at=window.due_at)
            window = _new_window(rule, addition, now)
            self.queue.schedule(
                FireMessage(rule_id=rule.rule_id, window_id=window.window_id, opened_at=now),
                rule.debounce_seconds,
            )
            if self.store.open_window(window):
                return WindowJoined(window.window_id, opened=True, due_at=window.due_at)
            # Another event opened the rule's window first: join it (our message will find nothing).
        raise WindowContention(
            f"could not add event {addition.event_id!r} to a window of rule {rule.rule_id!r}"
        )

    # ---------------------------------------------------------------- firing

    def fire(self, message: FireMessage, starter: RunStarter) -> FireOutcome:
        for _ in range(MAX_CLOSE_ATTEMPTS):
            now = self.clock()
            window = self.store.get_pending(message.rule_id)
            if window is None or window.window_id != message.window_id:
                return self._resume(message, starter, now)
            if window.due_at > now + EARLY_TOLERANCE_SECONDS:
                delay = math.ceil(window.due_at - now)
                self.queue.schedule(message, delay)
                return FireOutcome(FireStatus.RESCHEDULED, window.window_id, detail=f"due in {delay} s")
            fired = FiredWindow.closing(window, now=now)
            if self.store.close_window(window, fired):
                return self._start(fired, starter, FireStatus.STARTED)
        raise WindowContention(f"window {message.window_id!r} kept changing while closing; retry")

    def _resume(self, message: FireMessage, starter: RunStarter, now: float) -> FireOutcome:
        fired = self.store.get_fired(message.window_id)
        if fired is None:
            if now - message.opened_at < UNOPENED_GRACE_SECONDS:
                # Its opener may still be storing it (rare): have the message delivered again later.
                raise WindowNotStoredYet(f"window {message.window_id!r} is not stored yet")
            return FireOutcome(
                FireStatus.STRAY, message.window_id, detail="no such window (an opener lost a race)"
            )
        if fired.status is WindowStatus.FIRING:
            return self._start(fired, starter, FireStatus.RESUMED)
        return FireOutcome(
            FireStatus.ALREADY_FIRED, fired.window_id, run_id=fired.run_id, detail=fired.status.value
        )

    def _start(self, fired: FiredWindow, starter: RunStarter, status: FireStatus) -> FireOutcome:
        rule = self.store.get_rule(fired.rule_id)
        if rule is None or not rule.enabled:
            why = "the rule was deleted" if rule is None else "the rule is disabled"
            self._finish(fired, WindowStatus.SKIPPED, reason=why)
            return FireOutcome(FireStatus.SKIPPED, fired.window_id, detail=why)
        try:
            run_id = starter.start(triggered_run(rule, fired))
        except RunRefused as exc:
            self._finish(fired, WindowStatus.REFUSED, reason=str(exc))
            return FireOutcome(FireStatus.REFUSED, fired.window_id, detail=str(exc))
        self._finish(fired, WindowStatus.STARTED, run_id=run_id)
        return FireOutcome(status, fired.window_id, run_id=run_id)

    def _finish(self, fired: FiredWindow, status: WindowStatus, **changes: Any) -> None:
        self.store.finish_fired(fired.model_copy(update={"status": status, **changes}))


def _new_window(rule: TriggerRule, addition: WindowAddition, now: float) -> PendingWindow:
    listed = fits(0, 0, addition)
    return PendingWindow(
        rule_id=rule.rule_id,
        window_id=new_window_id(),
        dataset_id=rule.dataset_id,
        opened_at=now,
        last_event_at=now,
        debounce_seconds=rule.debounce_seconds,
        max_wait_seconds=rule.max_wait_seconds,
        first_event_id=addition.event_id,
        file_count=addition.file_count,
        paths=addition.paths if listed else frozenset(),
        package_ids=addition.package_ids if listed else frozenset(),
        truncated=not listed,
    )


def triggered_run(rule: TriggerRule, fired: FiredWindow) -> TriggeredRun:
    """The run a closed window asks for. It reads only the uploaded packages when the rule's scope
    is uploads and the window knows all of them; otherwise (no package ids in the events, or more
    than a window keeps) it reads the whole dataset, which includes every uploaded file."""
    uploads_only = rule.scope is Scope.UPLOADS and fired.package_ids and not fired.truncated
    files = f"{fired.file_count} file(s) in {fired.event_count} upload event(s)"
    return TriggeredRun(
        key=RUN_KEY_PREFIX + fired.window_id,
        workflow=rule.workflow,
        dataset_id=fired.dataset_id,
        package_ids=sorted(fired.package_ids) if uploads_only else [],
        params=dict(rule.params),
        layers=list(rule.layers),
        reason=f"trigger {rule.rule_id}: {files} to {fired.dataset_id} (first event {fired.first_event_id})",
    )
