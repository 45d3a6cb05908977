"""The scheduler of a local run: a processor starts as soon as all of its own dependencies
succeeded (not level by level).

Each processor runs in a worker thread that blocks on its process, its attempts bounded by the
run's ``max_parallel`` slots (``StepRunner``); the scheduler blocks on a queue of finished
processors and cancels, so nothing sleeps or polls on the way from one processor to the next.
When a processor fails for good, no new processor starts, the ones that never started are
CANCELED and the run is FAILED, naming the processor, its exit code and why.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pennflow.engine.cancel import CANCELED_BY_USER, watch_for_cancel
from pennflow.engine.data_steps import DataSteps
from pennflow.engine.outcomes import Outcome
from pennflow.engine.run_context import RunContext
from pennflow.engine.step_runner import StepRunner
from pennflow.workflow.dag import Dag
from pennflow.workflow.runs import RunRecord, Status, utcnow


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

    def _on_done(self, pid: str, outcome: Outcome) -> None:
        self._events.put(("done", pid, outcome))

    def _schedule(self) -> None:
        stop = self.ctx.stop
        waiting = {pid: set(self.dag.deps[pid]) for pid in self.dag.nodes}
        outstanding = 0
        with ThreadPoolExecutor(max_workers=len(waiting), thread_name_prefix="pennflow") as workers:

            def start_ready() -> int:
                ready = [pid for pid, deps in waiting.items() if not deps] if not stop.is_set() else []
                for pid in ready:
                    del waiting[pid]
                    workers.submit(self.steps.run_processor, pid, self._on_done)
                return len(ready)

            try:
                outstanding += start_ready()
                while outstanding:
                    try:
                        event = self._events.get()
                    except KeyboardInterrupt:  # used as a library without a signal handler: cancel cleanly
                        stop.cancel(CANCELED_BY_USER)
                        continue
                    if event[0] == "cancel":
                        stop.cancel(event[1])
                        continue
                    _, pid, outcome = event
                    outstanding -= 1
                    if outcome.status is Status.SUCCEEDED:
                        for succ in self.dag.succs[pid]:
                            waiting[succ].discard(pid)
                        outstanding += start_ready()
                    elif outcome.status is Status.FAILED and self._failure is None:
                        self._failure = (pid, outcome)
                        stop.halt(f"canceled: processor {pid!r} failed")
            except BaseException:  # the scheduler itself broke (e.g. the store): leave no process behind
                stop.halt("canceled: pennflow stopped on an error")
                raise
        for pid in waiting:  # never started: the run stopped first
            self.ctx.records.set_step(pid, Status.CANCELED, finished_at=utcnow(), reason=stop.reason)
