"""One processor of a local run, from its first attempt to its outcome.

Attempts: 1 + ``retry.maxAttempts``, waiting ``interval * backoff^(n-1)`` before retry n; each
attempt holds one of the run's ``max_parallel`` slots while it runs. A scatter processor runs one
process per batch of input files, each batch with its own attempts, all writing the processor's
OUTPUT_DIR. The first failure that is final stops the run (``RunStop.halt``).
"""

from __future__ import annotations

import contextlib
import os
import threading
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pennflow.engine.data_steps import DataSteps
from pennflow.engine.folders import FoldersAhead
from pennflow.engine.outcomes import NO_OUTPUT, Attempt, Outcome
from pennflow.engine.processes import CannotLaunch, ProcessLauncher
from pennflow.engine.run_context import RunContext, fresh_dir, has_files
from pennflow.engine.session_step import SessionStep
from pennflow.workflow.contract import FanInClash, list_input_files, make_batches, stage_batch
from pennflow.workflow.definition import Processor, ProcessorType
from pennflow.workflow.runs import Status, utcnow


class StepRunner:
    def __init__(self, ctx: RunContext, data_steps: DataSteps):
        self.ctx = ctx
        self.data_steps = data_steps
        self.launcher = ProcessLauncher(ctx, pennsieve=data_steps.pennsieve)
        self.sessions = SessionStep(ctx)
        self._slots = threading.BoundedSemaphore(ctx.plan.max_parallel)
        # Batches of every scattered processor share one pool of max_parallel threads (their
        # processors wait in the scheduler's workers, so batches never wait on each other).
        self._batches: ThreadPoolExecutor | None = None
        self._batches_lock = threading.Lock()
        self._folders: FoldersAhead | None = None
        self._laid_out: set[str] = set()  # laid out in one pass before the run's sandbox started

    def lay_out_ahead(self, order: list[str]) -> None:
        """Lay out the folders of the processors that run as one process each, in ``order`` (the
        order they are likely to start), while the run goes (``folders``). Where the run has one
        sandbox (``run_sandbox``), every folder it binds must exist when it starts: all of them are
        laid out now, in one pass, and the sandbox started (from the run's main thread)."""
        processors = self.ctx.plan.processors
        kept = self.ctx.reuse.kept_outputs() if self.ctx.reuse is not None else frozenset()
        chosen = [
            processors[pid]
            for pid in order
            if processors[pid].type is ProcessorType.PROCESSOR
            and processors[pid].scatter is None
            and not processors[pid].interactive
            and pid not in kept  # a resume may reuse that OUTPUT_DIR: emptying it ahead would lose it
        ]
        sandboxed = [
            processors[pid]
            for pid in order
            if processors[pid].type is ProcessorType.PROCESSOR
            and self.launcher.runs_in_sandbox(processors[pid])
        ]
        if sandboxed and self.launcher.sandboxes_runs:
            self.ctx.views.in_run_sandbox()
            for processor in chosen:
                self._lay_out(processor)
                self._laid_out.add(processor.id)
            for processor in sandboxed:  # scattered and kept ones: their folder, as it is
                if processor.id not in self._laid_out:
                    self.ctx.output_dir(processor.id).mkdir(parents=True, exist_ok=True)
            self.launcher.start_run_sandbox(sandboxed)
            return
        self._folders = FoldersAhead(chosen, self._lay_out, halted=self.ctx.stop.is_set)
        self._folders.start()

    def _lay_out(self, processor: Processor) -> None:
        """What a processor's first attempt needs before its spec: an empty OUTPUT_DIR, its layers view."""
        output = self.ctx.output_dir(processor.id)
        with contextlib.suppress(FileExistsError):  # a new run's: one mkdir each, no look-ups first
            os.mkdir(output.parent)
        fresh_dir(output)
        if self.launcher.runs_in_sandbox(processor):
            self.ctx.views.of(processor)

    def close(self) -> None:
        """After the last processor ended: the folder and batch threads go, and the run's sandbox."""
        if self._folders is not None:
            self._folders.stop()
        if self._batches is not None:
            self._batches.shutdown(wait=True)
        self.launcher.close()

    def _batch_pool(self) -> ThreadPoolExecutor:
        with self._batches_lock:
            if self._batches is None:
                self._batches = ThreadPoolExecutor(
                    self.ctx.plan.max_parallel, thread_name_prefix="pennflow-batch"
                )
            return self._batches

    def run_processor(self, pid: str, on_done: Callable[[str, Outcome], None]) -> None:
        """A worker thread: run one processor to its outcome, and always tell ``on_done``."""
        outcome = Outcome(Status.FAILED, "pennflow stopped unexpectedly")
        try:
            if self.ctx.stop.is_set():  # the run stopped while this one waited for a worker
                outcome = Outcome(Status.CANCELED, self.ctx.stop.reason)
            else:
                processor = self.ctx.plan.processors[pid]
                outcome = self._reused(processor) or self._outcome(processor)
        except Exception as exc:  # pennflow's own fault (a bug, a full disk): fail visibly, keep the run sane
            outcome = Outcome(Status.FAILED, f"pennflow could not run it: {exc}")
            with contextlib.suppress(OSError):
                self.ctx.logs.append(pid, traceback.format_exc())
        try:
            fields: dict[str, Any] = {"finished_at": utcnow(), "reason": outcome.reason}
            if outcome.exit_code is not None:
                fields["exit_code"] = outcome.exit_code
            if outcome.status is Status.SUCCEEDED and self.ctx.reuse is not None:
                processor = self.ctx.plan.processors[pid]
                fields.update(self.ctx.reuse.succeeded(processor, self.ctx.output_dir(pid)))
            self.ctx.records.set_step(pid, outcome.status, **fields)
            if outcome.status is Status.FAILED:
                self.ctx.stop.halt(f"canceled: processor {pid!r} failed", failed=pid)
        finally:
            on_done(pid, outcome)

    def _reused(self, processor: Processor) -> Outcome | None:
        """A resume: the earlier attempt's output, when the step is unchanged (``StepReuse``)."""
        reuse = self.ctx.reuse
        if reuse is None or reuse.reusable(processor, self.ctx.output_dir(processor.id)) is None:
            return None
        reason = f"reused: unchanged since attempt {reuse.previous_attempt} of the run"
        self.ctx.records.set_step(processor.id, Status.STARTED, started_at=utcnow(), reused=True)
        self.ctx.logs.append(processor.id, f"==== {reason}: not run again\n")
        return Outcome(Status.SUCCEEDED, reason, reused=True)

    def _outcome(self, processor: Processor) -> Outcome:
        if processor.type is ProcessorType.DATA_SOURCE:
            return self._attempts(processor, lambda n: self.data_steps.receive_input(processor, n))
        if processor.type is ProcessorType.DATA_TARGET:
            return self._attempts(processor, lambda n: self.data_steps.publish(processor, n))
        if processor.interactive:
            return self._attempts(processor, lambda n: self.sessions.run(processor, n))
        if processor.scatter is not None:
            return self._scatter(processor)
        return self._attempts(processor, lambda n: self._process(processor, n))

    def _attempts(
        self, processor: Processor, attempt_once: Callable[[int], Attempt], batch: int | None = None
    ) -> Outcome:
        """1 + retry.maxAttempts attempts, waiting interval * backoff^(n-1) before retry n; a retry
        says why the attempt before it failed (in the step's reason and its log)."""
        retry = processor.retry
        stop = self.ctx.stop
        total = 1 + (retry.max_attempts if retry else 0)
        retrying_after: str | None = None
        for number in range(1, total + 1):
            if number > 1 and retry is not None:
                delay = retry.interval_seconds * retry.backoff_rate ** (number - 2)
                self.ctx.logs.append(processor.id, f"==== {retrying_after}; attempt {number} in {delay:g}s\n")
                if stop.wait(delay):
                    break
            with self._slots:
                if stop.is_set():
                    break
                self.ctx.records.note_attempt(processor.id, number, retrying_after)
                result = attempt_once(number)
            if result.ok:
                return Outcome(Status.SUCCEEDED, result.reason, result.exit_code)
            if result.canceled:
                break
            if not result.retryable or number == total:
                return Outcome(Status.FAILED, result.reason, result.exit_code)
            where = f"batch {batch} " if batch is not None else ""
            why = result.reason or f"exit code {result.exit_code}"
            retrying_after = f"retrying: {where}attempt {number} failed: {why}"
        return Outcome(Status.CANCELED, stop.reason)

    def _process(self, processor: Processor, attempt: int) -> Attempt:
        output = self.ctx.output_dir(processor.id)
        laid_out = attempt == 1 and (
            processor.id in self._laid_out or (self._folders is not None and self._folders.ensure(processor))
        )
        if not laid_out:
            fresh_dir(output)  # OUTPUT_DIR is empty at the start of every attempt
        try:
            if attempt == 1:
                self.ctx.prepare_union(processor)
            spec = self.launcher.spec(processor)
        except (FanInClash, CannotLaunch) as exc:
            self.ctx.logs.append(processor.id, f"{exc}\n")
            return Attempt(False, str(exc), retryable=False)
        result = self.launcher.run(processor, attempt, spec)
        if result.ok and not has_files(output):
            return Attempt(True, NO_OUTPUT, result.exit_code)
        return result

    def _scatter(self, processor: Processor) -> Outcome:
        """One process per batch of input files, all writing the processor's OUTPUT_DIR."""
        assert processor.scatter is not None
        pid = processor.id
        self.ctx.records.note_attempt(pid, 1)  # STARTED; its batches' retries raise the count
        try:
            self.ctx.prepare_union(processor)
        except FanInClash as exc:
            self.ctx.logs.append(pid, f"{exc}\n")
            return Outcome(Status.FAILED, str(exc))
        source = self.ctx.input_dir(processor)
        batches = make_batches(list_input_files(source), processor.scatter.batch_size)
        fresh_dir(self.ctx.output_dir(pid))
        for index, files in enumerate(batches):
            stage_batch(source, files, Path(self.ctx.layout.batch_dir(pid, index)))
        if not batches:
            return Outcome(Status.SUCCEEDED, "no input files: no batches ran")

        def run_batch(index: int) -> Outcome:
            outcome = self._attempts(processor, lambda n: self._process_batch(processor, index, n), index)
            if outcome.status is Status.FAILED:  # stop the other batches now
                self.ctx.stop.halt(f"canceled: processor {pid!r} failed", failed=pid)
            return outcome

        pool = self._batch_pool()
        outcomes = [future.result() for future in [pool.submit(run_batch, i) for i in range(len(batches))]]
        for index, outcome in enumerate(outcomes):
            if outcome.status is Status.FAILED:
                return Outcome(Status.FAILED, f"batch {index}: {outcome.reason}", outcome.exit_code)
        if any(outcome.status is Status.CANCELED for outcome in outcomes):
            return Outcome(Status.CANCELED, self.ctx.stop.reason)
        reason = None if has_files(self.ctx.output_dir(pid)) else NO_OUTPUT
        return Outcome(Status.SUCCEEDED, f"{len(batches)} batches" + (f"; {reason}" if reason else ""))

    def _process_batch(self, processor: Processor, index: int, attempt: int) -> Attempt:
        try:
            spec = self.launcher.spec(processor, batch=index)
        except CannotLaunch as exc:
            self.ctx.logs.append(processor.id, f"{exc}\n")
            return Attempt(False, str(exc), retryable=False)
        return self.launcher.run(processor, attempt, spec, batch=index)
