"""``pennflow logs RUN --follow`` on this machine: tail each processor's log file until the run ends.

Like ``tail -f`` over several files: new bytes of each log are printed as they appear, after a
``==> processor <==`` header whenever the output switches to another processor's log. The run's
status is read from the store between polls (settled, so a run whose engine died ends too); once
it has ended, what its logs gained meanwhile is printed and the command exits 0 if it SUCCEEDED,
else 1.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from pennflow.cli.output import EXIT_OK, EXIT_RUN_FAILED

CHUNK = 1 << 16


class LogTail:
    """The part of each log file already printed, and which one printed last."""

    def __init__(self, many: bool) -> None:
        self.offsets: dict[str, int] = {}
        self.many = many
        self.current: str | None = None

    def drain(self, processor_id: str, path: Path) -> bool:
        """Print what ``path`` gained since the last call; True when it gained anything."""
        offset = self.offsets.get(processor_id, 0)
        try:
            with open(path, "rb") as log:
                log.seek(offset)
                data = log.read()
        except FileNotFoundError:
            return False
        if not data:
            return False
        if self.many and self.current != processor_id:
            sys.stdout.write(f"==> {processor_id} <==\n")
        self.current = processor_id
        sys.stdout.write(data.decode("utf-8", errors="replace"))
        sys.stdout.flush()
        self.offsets[processor_id] = offset + len(data)
        return True


def follow_local_logs(store: Any, home: Any, run_id: str, steps: list[Any], interval: float) -> None:
    """Tail the logs of ``steps`` (a run's, or one processor's) until the run ends; exit 0 or 1."""
    import typer

    from pennflow.engine.orphans import settled
    from pennflow.workflow.runs import Status

    chosen = {step.processor_id for step in steps}
    tail = LogTail(many=len(chosen) > 1)
    while True:
        record = store.get_run(run_id)
        record = settled(store, record) if record is not None else None
        for step in store.list_steps(run_id):
            if step.processor_id in chosen:
                path = Path(step.log_path) if step.log_path else home.log_path(run_id, step.processor_id)
                tail.drain(step.processor_id, path)
        if record is None or record.status.is_terminal:
            break
        time.sleep(interval)
    raise typer.Exit(EXIT_OK if record is not None and record.status is Status.SUCCEEDED else EXIT_RUN_FAILED)
