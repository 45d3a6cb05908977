"""The scheduler of a local run: a processor starts as soon as all of its own dependencies
succeeded (not level by level).

A ready processor goes to a pool of ``max_parallel`` worker threads, where it runs to its outcome
blocking on its process (``StepRunner``). The worker that finishes a processor updates the ready
set, which costs it only that processor's successors (``ReadySet``), and goes straight on with one
of those that became ready; nothing sleeps, polls or scans on the way from one processor to the
next, and a chain needs no hand-over between threads. The main thread waits for the end or a cancel.
When a processor fails for good, no new processor starts, the ones that never started are
CANCELED and the run is FAILED, naming the processor, its exit code and why.
"""

from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pennflow.engine.cancel import CANCELED_BY_USER, watch_for_cancel
from pennflow.engine.data_steps import DataSteps
from pennflow.engine.outcomes import Outcome
from pennflow.engine.ready_set import ReadySet
from pennflow.engine.run_context import RunContext
from pennflow.engine.source_processors import source_pins
from pennflow.engine.step_runner import StepRunner
from pennflow.workflow.dag import Dag
from pennflow.workflow.runs import RunRecord, Status, utcnow

logger = logging.getLogger(__name__)


class LocalRun:
    def __init__(self, ctx: RunContext, cancel_event: threading.Event):
        self.ctx = ctx
        self.cancel_event = cancel_event
        self.dag = Dag.from_workflow(ctx.workflow)
        self.data_steps = DataSteps(ctx)
        self.steps = StepRunner(ctx, self.data_steps)
        self._events: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._finished = threading.Event()
        self._failure: tuple[str, Outcome] | None = None

    def run(self) -> RunRecord:
        """Record the run, run every processor it can, and return its final record."""
        ctx, plan = self.ctx, self.ctx.plan
        run = RunRecord(
            run_id=ctx.run_id,
            workflow=ctx.workflow.name,
            definition_hash=ctx.workflow.definition_hash(),
            params=plan.params,
            layers=[mount.run_entry() for mount in plan.layers.mounts.values()],
            dataset_id=plan.inputs.dataset_id,
            package_ids=list(plan.inputs.package_ids),
            rerun_of=ctx.rerun_of,
            images=source_pins(ctx.workflow, ctx.venv_launches),
        )
        ctx.lease.start()  # before the run is stored: a stored run always has its lease
        ended = False
        try:
            ctx.records.create(run, [p.id for p in ctx.workflow.processors])
            ctx.run_dir.mkdir(parents=True, exist_ok=True)
            ctx.records.mark_started(run)
            threading.Thread(
                target=watch_for_cancel,
                args=(self.cancel_event, self._finished, ctx.records, self._on_cancel),
                name="pennflow-cancel-watch",
                daemon=True,
            ).start()
            try:
                self._schedule()
            finally:
                self._finished.set()
                ctx.views.remove_all()
                self.data_steps.close()
            final = ctx.records.finish(self._failure, ctx.stop.canceled)
            ended = True
            return final
        finally:
            ctx.lease.close(ended)

    def _on_cancel(self, reason: str) -> None:
        self._events.put(("cancel", reason))

    def _schedule(self) -> None:
        """Hand the ready processors to the workers, then wait for the end (or a cancel)."""
        stop = self.ctx.stop
        self._ready = ReadySet(self.dag)
        self._lock = threading.Lock()
        self._outstanding = 0
        # At most max_parallel workers: a ready processor waits in the pool's queue, not in a thread
        # of its own (a 5,000-wide fan-out opens max_parallel threads, not 5,000).
        try:
            self.steps.lay_out_ahead(self.dag.topological_order())
            with ThreadPoolExecutor(self.ctx.plan.max_parallel, thread_name_prefix="pennflow") as workers:
                self._workers = workers
                with self._lock:
                    first = self._take_ready()
                for pid in first:
                    workers.submit(self._work, pid)
                try:
                    self._wait_for_the_end(bool(first))
                except BaseException:  # the scheduler itself broke (e.g. the store): leave no process behind
                    stop.halt("canceled: pennflow stopped on an error")
                    raise
        finally:
            self.steps.close()
        for pid in self._ready.never_taken():  # never started: the run stopped first
            self.ctx.records.set_step(pid, Status.CANCELED, finished_at=utcnow(), reason=stop.reason)

    def _wait_for_the_end(self, started: bool) -> None:
        stop = self.ctx.stop
        while started:  # nothing ready at all: nothing to wait for
            try:
                event = self._events.get()
            except KeyboardInterrupt:  # used as a library without a signal handler: cancel cleanly
                stop.cancel(CANCELED_BY_USER)
                continue
            if event[0] == "cancel":
                stop.cancel(event[1])
            elif event[0] == "broken":
                raise event[1]
            else:  # "finished": no processor runs or waits any more
                return

    def _take_ready(self) -> list[str]:
        """Under the lock: what may start now, counted as outstanding."""
        ready = self._ready.take() if not self.ctx.stop.is_set() else []
        self._outstanding += len(ready)
        return ready

    def _run_one(self, pid: str) -> Outcome:
        outcomes: list[Outcome] = []
        try:
            self.steps.run_processor(pid, lambda _, outcome: outcomes.append(outcome))
        except Exception:
            if not outcomes:
                raise
            # The outcome is known; only recording it failed (the store): the run goes on with it.
            logger.warning("could not record the end of processor %r", pid, exc_info=True)
        return outcomes[0]

    def _work(self, pid: str | None) -> None:
        """A worker: run the processor, then go straight on with one that its success made ready
        (the others go to the pool), so a chain runs in one thread without a hand-over per step."""
        try:
            while pid is not None:
                outcome = self._run_one(pid)
                with self._lock:
                    self._outstanding -= 1
                    if outcome.status is Status.SUCCEEDED:
                        self._ready.succeeded(pid)
                    elif outcome.status is Status.FAILED and self._failure is None:
                        self._failure = (pid, outcome)
                        # Also when recording the failure failed (run_processor halts after recording).
                        self.ctx.stop.halt(f"canceled: processor {pid!r} failed", failed=pid)
                    after = self._take_ready()
                    finished = self._outstanding == 0
                for other in after[1:]:
                    self._workers.submit(self._work, other)
                if finished:
                    self._events.put(("finished",))
                pid = after[0] if after else None
        except BaseException as exc:  # the scheduler's own fault: the main thread stops the run
            self._events.put(("broken", exc))
