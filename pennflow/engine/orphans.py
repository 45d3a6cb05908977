"""Ending a local run whose engine is gone: FAILED "engine stopped (pid N, last seen T)" (CANCELED
when a cancel was asked for), what it left running killed, its layer pins released.

The supervisor calls this when the engine dies; every command that reads a run calls ``settled``
first, so even with the supervisor gone too no run stays STARTED or CANCELING for ever. Every
write is conditional, so two readers ending the same run at once end it once.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Sequence
from pathlib import Path

from pennflow.engine.cancel import CANCELED_BY_STORE
from pennflow.engine.home import PennflowHome
from pennflow.engine.launchers import remove_container
from pennflow.engine.lease import engine_gone, engine_stopped_reason, process_start
from pennflow.stores.base import RunStore
from pennflow.stores.leases import EngineLease, LeasedProcess, RunLeases
from pennflow.workflow.runs import RunRecord, Status, utcnow


def settled(store: RunStore, run: RunRecord) -> RunRecord:
    """``run`` as it stands, ended first when it is still going but its engine is gone."""
    if run.status.is_terminal or run.origin != "local":
        return run
    leases: RunLeases | None = getattr(store, "leases", None)
    if leases is None:
        return run
    lease = leases.get(run.run_id)
    if lease is None or not engine_gone(lease):
        return run
    end_orphaned(store, leases, lease)
    return store.get_run(run.run_id) or run


def settled_runs(store: RunStore, runs: Sequence[RunRecord]) -> list[RunRecord]:
    return [settled(store, run) for run in runs]


def end_orphaned(store: RunStore, leases: RunLeases, lease: EngineLease) -> RunRecord | None:
    """End the run of an engine known to be gone; returns its final record."""
    run_id = lease.run_id
    kill_leftovers(leases.processes(run_id))
    run = store.get_run(run_id)
    if run is None:
        leases.release(run_id)
        return None
    why = engine_stopped_reason(lease)
    now = utcnow()
    canceling = run.status is Status.CANCELING
    for step in store.list_steps(run_id):
        if step.status.is_terminal:
            continue
        # What was running failed with the engine; what never started, or was being canceled, is CANCELED.
        status = Status.FAILED if step.status is Status.STARTED and not canceling else Status.CANCELED
        store.update_step(run_id, step.processor_id, status, finished_at=now, reason=why)
    if canceling:
        store.update_run(run_id, Status.CANCELED, finished_at=now, reason=f"{CANCELED_BY_STORE}; {why}")
    else:
        store.update_run(run_id, Status.FAILED, finished_at=now, reason=why)
    _release_layers(store, run)
    leases.release(run_id)
    return store.get_run(run_id)


def kill_leftovers(processes: Sequence[LeasedProcess]) -> None:
    """SIGKILL each listed process group (and remove its container); a group id some later process
    leads now is left alone."""
    for process in processes:
        leader = process_start(process.pgid)
        if leader and process.process_start and leader != process.process_start:
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pgid, signal.SIGKILL)
        if process.container:
            remove_container(process.container)


def _release_layers(store: RunStore, run: RunRecord) -> None:
    if not run.layers:
        return
    from pennflow.layers.mounts import run_layer_names
    from pennflow.layers.service import LocalLayers

    home = PennflowHome(Path(store.path).parent)  # type: ignore[attr-defined]  # the store is SQLite here
    with LocalLayers.open(home) as layers:
        layers.release(run_layer_names(run.layers), run.run_id)
