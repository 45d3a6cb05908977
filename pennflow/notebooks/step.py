"""An interactive processor's session, run by the local engine as that processor's step.

``python -m pennflow.notebooks.step HOME RUN PROCESSOR INPUT_DIR [LAYER=PATH ...]``, started by the
engine's ``session_step`` once the processors before it succeeded (a process, not an import: the
engine imports nothing of this package). The engine owns the run: it pinned the layers, built
INPUT_DIR from the upstream outputs, records the step and releases the pins. This process writes
the session's state (``notebook stop`` and ``status`` read it), serves until the session stops,
writes how it ended for the engine (``SessionFiles.ending``) and removes its scratch folder.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from pennflow.engine.home import PennflowHome
from pennflow.notebooks.environments import session_python
from pennflow.notebooks.server import serve
from pennflow.notebooks.session import (
    NotebookError,
    SessionFiles,
    SessionRequest,
    SessionState,
    free_port,
    idle_timeout_setting,
    write_state,
)
from pennflow.workflow.runs import Status


def run_step(
    home: PennflowHome, run_id: str, processor_id: str, input_dir: Path, layers: dict[str, str]
) -> int:
    files = SessionFiles.of_processor(home, run_id, processor_id, input_dir)
    try:
        request = SessionRequest(layers=sorted(layers), idle_timeout_seconds=idle_timeout_setting())
    except NotebookError as exc:
        return _end(files, Status.FAILED, str(exc))
    files.work.mkdir(parents=True, exist_ok=True)
    files.ending.unlink(missing_ok=True)
    state = SessionState(
        run_id=run_id,
        processor_id=processor_id,
        files=files,
        request=request,
        python=sys.executable,
        python_version=session_python(),
        port=free_port(),
        token=secrets.token_urlsafe(32),
        scratch=tempfile.mkdtemp(prefix=f"pennflow-notebook-{run_id}-"),
        layers=layers,
        pid=os.getpid(),
    )
    try:
        write_state(home, state)
        ending = serve(home, state, cancel_asked=lambda: False)  # the engine cancels with SIGTERM
    finally:
        shutil.rmtree(state.scratch, ignore_errors=True)
    return _end(files, ending.status, ending.reason, ending.exit_code)


def _end(files: SessionFiles, status: Status, reason: str, exit_code: int | None = None) -> int:
    files.root.mkdir(parents=True, exist_ok=True)
    files.ending.write_text(json.dumps({"status": status.value, "reason": reason, "exitCode": exit_code}))
    print(f"pennflow: session {status.value}: {reason}", flush=True)
    return 0 if status is Status.SUCCEEDED else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 4 or not all("=" in a for a in args[4:]):
        print(
            "usage: python -m pennflow.notebooks.step HOME RUN PROCESSOR INPUT_DIR [LAYER=PATH ...]",
            file=sys.stderr,
        )
        return 2
    layers = dict(a.split("=", 1) for a in args[4:])
    return run_step(PennflowHome(Path(args[0])), args[1], args[2], Path(args[3]), layers)


if __name__ == "__main__":
    sys.exit(main())
