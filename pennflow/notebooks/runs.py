"""A workflow's notebook session in ``pennflow run``, ``runs`` and ``status``.

Before the run: the session's layers must fit its Python (Pennsieve's "match the Python version"
rule), checked with the other refusals so nothing runs first. While it runs: the URL (with its
token) is announced once the server answers. Afterwards: which runs are sessions, and their URL
while they run.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence

from pennflow.engine.home import PennflowHome
from pennflow.engine.records import Reporter
from pennflow.layers.models import LayerError
from pennflow.layers.service import LocalLayers
from pennflow.notebooks.environments import misfit_reason, session_python
from pennflow.notebooks.session import (
    POLL_SECONDS,
    SessionState,
    find_session,
    server_status,
)
from pennflow.workflow.definition import Processor, Workflow
from pennflow.workflow.runs import RunRecord, Status, StepRecord

KIND_NOTEBOOK = "notebook"
KIND_WORKFLOW = "workflow"


def session_processor(workflow: Workflow) -> Processor | None:
    return next((p for p in workflow.processors if p.interactive), None)


def session_problems(
    home: PennflowHome, workflow: Workflow, run_layers: Sequence[str], python_version: str | None = None
) -> list[str]:
    """Why the workflow's session cannot mount its layers (the run's ``--layer`` too), naming both
    Python versions; a layer that does not exist is left to the run's own checks."""
    processor = session_processor(workflow)
    if processor is None:
        return []
    wanted = python_version or session_python()
    problems = []
    with LocalLayers.open(home) as layers:
        for name in dict.fromkeys([*run_layers, *processor.layers]):
            try:
                record = layers.get(name)
            except LayerError:
                continue
            reason = misfit_reason(record, wanted)
            if reason:
                problems.append(f"processor {processor.id!r}: {reason}")
    return problems


class SessionAnnouncer:
    """A reporter that passes everything on and, once the session's step starts, says its URL as
    soon as its server answers (``say`` prints it)."""

    def __init__(self, inner: Reporter, home: PennflowHome, processor_id: str, say: Callable[[str], None]):
        self.inner = inner
        self.home = home
        self.processor_id = processor_id
        self.say = say
        self._announced = False
        self._finished = threading.Event()

    def run_started(self, run: RunRecord, steps: Sequence[StepRecord]) -> None:
        self.inner.run_started(run, steps)

    def step_updated(self, step: StepRecord) -> None:
        self.inner.step_updated(step)
        if step.processor_id == self.processor_id and step.status is Status.STARTED and not self._announced:
            self._announced = True
            threading.Thread(target=self._announce, args=(step.run_id,), daemon=True).start()

    def run_finished(self, run: RunRecord, steps: Sequence[StepRecord]) -> None:
        self._finished.set()
        self.inner.run_finished(run, steps)

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if close is not None:
            close()

    def _announce(self, run_id: str) -> None:
        """Until the server answers (however slow this machine is) or the run is over."""
        while not self._finished.wait(POLL_SECONDS):
            state = find_session(self.home, run_id)
            if state is not None and state.processor_id == self.processor_id and server_status(state):
                self.say(announcement(state))
                return


def announcement(state: SessionState) -> str:
    return (
        f"session {state.run_id} ({state.processor_id}) STARTED (Python {state.python_version})\n"
        f"  url:      {state.url}\n"
        f"  work dir: {state.files.work}\n"
        f"  stop:     pennflow notebook stop {state.run_id}  "
        f"(idle timeout {state.request.idle_timeout_seconds} s)"
    )


def sessions_of(home: PennflowHome, runs: Iterable[RunRecord]) -> dict[str, SessionState]:
    """The runs that are notebook sessions, by run id."""
    found = {}
    for run in runs:
        state = find_session(home, run.run_id)
        if state is not None:
            found[run.run_id] = state
    return found


def live_url(state: SessionState, run: RunRecord, steps: Sequence[StepRecord] | None = None) -> str | None:
    """The session's URL while its server runs (its step STARTED), else None."""
    if run.status.is_terminal:
        return None
    if steps is not None:
        step = next((s for s in steps if s.processor_id == state.processor_id), None)
        if step is None or step.status is not Status.STARTED:
            return None
    return state.url
