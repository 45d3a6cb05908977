"""An interactive processor's step: a notebook session that ends when its user stops it.

The processors before it ran as usual; its INPUT_DIR is their output (built as for any processor),
its layers the processor's (and the run's ``--layer``), pinned by the run. The session itself runs
in its own process, ``python -m pennflow.notebooks.step`` (a Jupyter server in a processor's sandbox),
tracked like any attempt's: a cancel or a failure elsewhere terminates it, the engine's lease lists
it. It has no timeout: it ends when stopped (``pennflow notebook stop``) or idle for the setting's
timeout, and says how in ``session-end.json``. Its working area is its OUTPUT_DIR, so a data target
after it copies (and with ``--publish`` publishes) what the user left there.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from pennflow.engine.cancel import STOPPED
from pennflow.engine.launchers import LaunchSpec, RunningProcess
from pennflow.engine.outcomes import Attempt, attempt_header
from pennflow.engine.resource_use import wait_and_record
from pennflow.engine.run_context import RunContext, fresh_dir
from pennflow.workflow.contract import FanInClash
from pennflow.workflow.definition import Processor
from pennflow.workflow.runs import Status

SESSION_MODULE = "pennflow.notebooks.step"
ENDING_NAME = "session-end.json"  # written by the session's process in the processor's folder


class SessionStep:
    def __init__(self, ctx: RunContext):
        self.ctx = ctx

    def argv(self, processor: Processor) -> list[str]:
        ctx = self.ctx
        layers = [f"{mount.name}={mount.path}" for mount in ctx.plan.layers.of(processor)]
        input_dir = ctx.input_dir(processor)
        home, run_id = str(ctx.home.root), ctx.run_id
        return [sys.executable, "-m", SESSION_MODULE, home, run_id, processor.id, str(input_dir), *layers]

    def run(self, processor: Processor, attempt: int) -> Attempt:
        ctx = self.ctx
        try:
            ctx.prepare_union(processor)
        except FanInClash as exc:
            ctx.logs.append(processor.id, f"{exc}\n")
            return Attempt(False, str(exc), retryable=False)
        fresh_dir(ctx.output_dir(processor.id))
        ending = ctx.layout.processor_dir(processor.id) / ENDING_NAME
        spec = LaunchSpec(self.argv(processor), dict(os.environ))
        log_path = ctx.logs.path(processor.id)
        with open(log_path, "ab") as log:
            log.write(attempt_header(processor, attempt, "notebook session").encode())
            log.flush()
            try:
                process = RunningProcess.start(spec, log, timeout_seconds=None, grace_seconds=ctx.kill_grace)
            except OSError as exc:
                return Attempt(
                    False, f"cannot start the notebook session: {exc.strerror or exc}", retryable=False
                )
            with ctx.stop.tracking(process), ctx.lease.tracking(process):
                code = wait_and_record(process, ctx.records, processor.id, attempt, None)
        if process.stopped_by == STOPPED:
            return Attempt(False, canceled=True)
        try:
            ended = json.loads(Path(ending).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return Attempt(
                False, f"the notebook session ended with code {code} and said nothing", code, False
            )
        reason = str(ended.get("reason") or "")
        if ended.get("status") == Status.SUCCEEDED.value:
            return Attempt(True, reason, exit_code=ended.get("exitCode"))
        return Attempt(False, reason, exit_code=ended.get("exitCode"), retryable=False)
