"""``pennflow resume RUN``: continue a local run that FAILED or was CANCELED, as the same run.

The run keeps its id, folder and logs; its attempt number goes up and the attempt that ended is
kept in its history (status, reason, each step's outcome). A new definition or params replace the
run's (``--param`` values replace the run's value of that key; the others it was given stay). Each
step whose key (``pennflow.data.step_keys``) matches one that SUCCEEDED, and whose output folder is
unchanged, is reused (``engine.step_reuse``); the others run, so a changed param re-runs exactly
the processors it reaches. A run still going (its engine alive) or SUCCEEDED is refused.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from pennflow.engine.home import PennflowHome
from pennflow.engine.local import DEFAULT_KILL_GRACE_SECONDS, RunOptions, execute_run
from pennflow.engine.orphans import settled
from pennflow.engine.records import Reporter
from pennflow.engine.run_spec import load_spec
from pennflow.workflow.definition import Workflow
from pennflow.workflow.runs import (
    RunRecord,
    Status,
    can_resume,
    ended_attempt,
)

if TYPE_CHECKING:
    from pennflow.stores.sqlite import SqliteRunStore


class ResumeRefused(Exception):
    """The run cannot be resumed; the message says why and what to do."""


def resume_run(
    run_id: str,
    *,
    store: SqliteRunStore,
    home: PennflowHome,
    workflow: Workflow | None = None,
    definition_dir: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, str] | None = None,
    reporter: Reporter | None = None,
    cancel_event: threading.Event | None = None,
    docker: bool | None = None,
    kill_grace: float = DEFAULT_KILL_GRACE_SECONDS,
) -> RunRecord:
    """Run the run's next attempt to its end and return its final record.

    Raises ResumeRefused (nothing changed) and, like ``run_workflow``, InvalidRunInput before
    anything runs; StoreConflict when another resume of the run came first.
    """
    record = resumable_run(store, run_id)
    spec = load_spec(home, run_id)
    if spec is None:
        raise ResumeRefused(
            f"run {run_id} has no record of what it was started with (it predates resume, or its folder "
            f"{home.run_dir(run_id)} was removed): start it again with `pennflow run`"
        )
    if workflow is None:
        try:
            workflow = spec.workflow()
        except ValidationError as exc:
            raise ResumeRefused(f"run {run_id}'s recorded definition no longer loads: {exc}") from None
    changes: dict[str, object] = {
        "definition": json.loads(workflow.canonical_json()),
        "overrides": {**spec.overrides, **(overrides or {})},
    }
    if definition_dir is not None:
        changes["definition_dir"] = str(Path(definition_dir).absolute())
    if docker is not None:
        changes["docker"] = docker
    steps = store.list_steps(run_id)
    resumed = record.model_copy(
        update={"attempt": record.attempt + 1, "history": [*record.history, ended_attempt(record, steps)]}
    )
    return execute_run(
        workflow,
        spec.model_copy(update=changes),
        home,
        run_id,
        RunOptions(store, reporter, cancel_event, kill_grace),
        resumed=resumed,
        previous={step.processor_id: step for step in steps},
    )


def resumable_run(store: SqliteRunStore, run_id: str) -> RunRecord:
    """The run, ended first when its engine is gone; ResumeRefused unless it FAILED or was CANCELED."""
    record = store.get_run(run_id)
    if record is None:
        raise ResumeRefused(f"no run {run_id!r} here (see `pennflow runs`)")
    if record.origin != "local":
        raise ResumeRefused(f"run {run_id} ran on a compute node: resume it there with --remote")
    record = settled(store, record)
    if can_resume(record.status):
        return record
    if record.status is Status.SUCCEEDED:
        raise ResumeRefused(f"run {run_id} SUCCEEDED: there is nothing to resume (start a new run instead)")
    raise ResumeRefused(
        f"run {run_id} is {record.status.value}: its engine is still running it; wait for it to end, "
        f"or `pennflow cancel {run_id}` first"
    )
