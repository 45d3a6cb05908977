"""Stopping a local run early: a processor failed for good, or the user canceled.

A stop is final: no new attempt starts, the running processes are terminated, and the other
running processors show CANCELING until their process is gone. A cancel comes from the caller's
``cancel_event`` (Ctrl-C in the CLI) or from the store, when the run's status turns CANCELING
(``pennflow cancel`` in another terminal); a watcher thread looks for both.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from pennflow.engine.launchers import RunningProcess
from pennflow.engine.records import RunRecords
from pennflow.workflow.runs import Status

STORE_POLL_SECONDS = 0.5
CANCELED_BY_USER = "canceled by the user"
CANCELED_BY_STORE = "canceled (pennflow cancel)"
STOPPED = "stopped"  # RunningProcess.stopped_by when the run stops (failure elsewhere or cancel)


class RunStop:
    """Whether and why the run stopped, and the processes to terminate when it does."""

    def __init__(self, records: RunRecords):
        self._records = records
        self._stopped = threading.Event()
        self.reason: str | None = None
        self.canceled: str | None = None  # why the run was canceled, if it was
        self._active: set[RunningProcess] = set()
        self._lock = threading.Lock()

    def is_set(self) -> bool:
        return self._stopped.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True as soon as the run stops."""
        return self._stopped.wait(seconds)

    @contextmanager
    def tracking(self, process: RunningProcess) -> Iterator[None]:
        """While the block runs, a stop terminates ``process``; so does a stop that came first."""
        with self._lock:
            self._active.add(process)
            stopping = self._stopped.is_set()
        if stopping:  # the run stopped while this process was starting
            process.terminate(STOPPED)
        try:
            yield
        finally:
            with self._lock:
                self._active.discard(process)

    def cancel(self, reason: str) -> None:
        if self.canceled is not None:
            return
        self.canceled = reason
        self._records.mark_canceling()
        self.halt(reason)

    def halt(self, reason: str, failed: str | None = None) -> None:
        """Stop the run: no new attempts; terminate what runs; the other running processors (not
        the one that ``failed``) show CANCELING until their process is gone."""
        with self._lock:
            if self._stopped.is_set():
                return
            self.reason = reason
            self._stopped.set()
            running = list(self._active)
        for process in running:
            process.terminate(STOPPED)
        for pid in self._records.running():
            if pid != failed:
                self._records.set_step(pid, Status.CANCELING)


def watch_for_cancel(
    cancel_event: threading.Event,
    finished: threading.Event,
    records: RunRecords,
    on_cancel: Callable[[str], None],
) -> None:
    """Until the run is ``finished``: report the first cancel, from the caller or from the store."""
    while True:
        requested = cancel_event.wait(STORE_POLL_SECONDS)
        if finished.is_set():
            return
        if requested:
            on_cancel(CANCELED_BY_USER)
            return
        try:
            status = records.current_status()
        except Exception:  # a busy or briefly unreadable store: look again next time
            continue
        if status is Status.CANCELING:
            on_cancel(CANCELED_BY_STORE)
            return
