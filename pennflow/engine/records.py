"""The run's and its steps' records: written to the store, then told to the reporter.

Worker threads of one run update steps concurrently; one lock keeps each store write and the
in-memory copy the reporter sees in the same order.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, Protocol

from pennflow.engine.outcomes import Outcome, StepLogs
from pennflow.stores.base import RunStore, StoreConflict
from pennflow.workflow.runs import RunRecord, Status, StepRecord, utcnow


class Reporter(Protocol):
    """Receives progress as it is stored (the CLI's live display implements it)."""

    def run_started(self, run: RunRecord, steps: Sequence[StepRecord]) -> None: ...

    def step_updated(self, step: StepRecord) -> None: ...

    def run_finished(self, run: RunRecord, steps: Sequence[StepRecord]) -> None: ...


class SilentReporter:
    def run_started(self, run: RunRecord, steps: Sequence[StepRecord]) -> None:
        pass

    def step_updated(self, step: StepRecord) -> None:
        pass

    def run_finished(self, run: RunRecord, steps: Sequence[StepRecord]) -> None:
        pass


class RunRecords:
    """One run's record and its steps', as stored; the reporter sees each change once it is stored."""

    def __init__(self, store: RunStore, reporter: Reporter, logs: StepLogs, reopened: bool = False):
        self.store = store
        # A resume (``pennflow.engine.resume``): the run and its NOT_STARTED steps are stored already.
        self.reopened = reopened
        self.reporter = reporter
        self.logs = logs
        self.run_id = logs.run_id
        self._steps: dict[str, StepRecord] = {}
        # An attempt's resource use, stored with its step's next change (add_resource_use)
        self._pending_use: dict[str, list[dict[str, Any]]] = {}
        self._lock = threading.RLock()

    def create(self, run: RunRecord, processor_ids: Sequence[str]) -> None:
        """Store the run and one NOT_STARTED step per processor."""
        steps = [StepRecord(run_id=self.run_id, processor_id=pid) for pid in processor_ids]
        if not self.reopened:
            self.store.create_run(run, steps)
        self._steps = {step.processor_id: step for step in steps}

    def reopen(self, run: RunRecord, processor_ids: Sequence[str]) -> None:
        """A resume: the run becomes ``run`` (its next attempt) with one NOT_STARTED step per processor,
        if it is still the ended attempt ``run.attempt - 1``; StoreConflict when it is not."""
        steps = [StepRecord(run_id=self.run_id, processor_id=pid) for pid in processor_ids]
        if not self.store.reopen_run(run, steps, attempt=run.attempt - 1):  # type: ignore[attr-defined]
            raise StoreConflict(f"run {self.run_id!r} was resumed or changed by someone else meanwhile")

    def mark_started(self, run: RunRecord) -> None:
        self.store.update_run(self.run_id, Status.STARTED, started_at=utcnow())
        self.reporter.run_started(self.store.get_run(self.run_id) or run, list(self._steps.values()))

    def set_step(self, pid: str, status: Status | None = None, **fields: Any) -> bool:
        with self._lock:
            pending = self._pending_use.pop(pid, None)
            if pending:
                fields = {**fields, "resource_use": [*self._steps[pid].resource_use, *pending]}
            if not self.store.update_step(self.run_id, pid, status, **fields):
                if pending:  # the change was refused: the use is stored on its own, as it came
                    self.set_step(pid, resource_use=fields["resource_use"])
                return False
            update = {**fields, **({"status": status} if status else {})}
            record = self._steps[pid] = self._steps[pid].model_copy(update=update)
            self.reporter.step_updated(record)
            return True

    def note_attempt(self, pid: str, attempt: int, retrying_after: str | None = None) -> None:
        """The first attempt (numbered 1) starts the processor; later ones (or batches) raise its
        attempt count; a retry's reason says why the attempt before it failed."""
        with self._lock:  # batches of one processor report concurrently
            step = self._steps[pid]
            if step.status is Status.NOT_STARTED:
                log_path = str(self.logs.path(pid))
                self.set_step(pid, Status.STARTED, started_at=utcnow(), attempts=attempt, log_path=log_path)
                return
            fields: dict[str, Any] = {}
            if attempt > step.attempts:
                fields["attempts"] = attempt
            if retrying_after is not None:
                fields["reason"] = retrying_after
            if fields:
                self.set_step(pid, **fields)

    def add_resource_use(self, pid: str, use: dict[str, Any]) -> None:
        """One attempt's CPU time and peak memory (engine/resource_use.py), after the ones before it.

        An attempt of a processor that runs as one process is stored with the step's next change
        (its end, or its next attempt, which follow at once): one store write fewer per attempt. A
        batch's is stored now, as its processor's other batches may run for a long while yet."""
        with self._lock:  # batches of one processor end concurrently
            if use.get("batch") is None:
                self._pending_use.setdefault(pid, []).append(use)
                return
            self.set_step(pid, resource_use=[*self._steps[pid].resource_use, use])

    def running(self) -> list[str]:
        """The processors whose step is STARTED now."""
        return [pid for pid, step in list(self._steps.items()) if step.status is Status.STARTED]

    def mark_canceling(self) -> None:
        self.store.update_run(self.run_id, Status.CANCELING)

    def current_status(self) -> Status | None:
        run = self.store.get_run(self.run_id)
        return run.status if run is not None else None

    def finish(self, failure: tuple[str, Outcome] | None, canceled: str | None) -> RunRecord:
        """The run's final status: FAILED naming the processor, else CANCELED, else SUCCEEDED."""
        now = utcnow()
        if failure is not None:
            pid, outcome = failure
            self.store.update_run(
                self.run_id,
                Status.FAILED,
                finished_at=now,
                failed_processor=pid,
                exit_code=outcome.exit_code,
                reason=f"processor {pid!r} failed: {outcome.reason}",
            )
        elif canceled is not None:
            self.store.update_run(self.run_id, Status.CANCELED, finished_at=now, reason=canceled)
        else:
            self.store.update_run(self.run_id, Status.SUCCEEDED, finished_at=now)
        run = self.store.get_run(self.run_id)
        assert run is not None
        self.reporter.run_finished(run, list(self._steps.values()))
        return run
