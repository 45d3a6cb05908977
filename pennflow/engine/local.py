"""The local engine: run a workflow on this machine, with the processor contract of DESIGN §3.

This module is the engine's public face (``run_workflow``, ``result_dirs``, ``InvalidRunInput``,
``Reporter``); the parts live next to it, one concern each:

- ``run_checks``: what the run is given and the checks made before anything runs;
- ``run_layers``: the layer versions the run pins, and each processor's read-only view of them;
- ``run_plan``: checks and pins together, every problem reported at once;
- ``scheduler``: the ready set; a processor starts as soon as its own dependencies succeeded;
- ``step_runner``: one processor's attempts, retries and scatter batches, within ``max_parallel``;
- ``processes``: one attempt as a process (a container, or the ``command`` in the layers sandbox);
- ``data_steps``: data sources (``--input`` or a Pennsieve download) and data targets (copy,
  ``publish``, or populate a persistent layer);
- ``cancel``: stopping the run on a final failure or a cancel (``cancel_event``, or the run's
  status turning CANCELING in the store, e.g. from ``pennflow cancel`` in another terminal);
- ``records``: the run's and steps' records, in the store and to the reporter.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

from pennflow.engine.cancel import CANCELED_BY_STORE, CANCELED_BY_USER, STORE_POLL_SECONDS
from pennflow.engine.home import PennflowHome
from pennflow.engine.launchers import container_runtime_available
from pennflow.engine.lease import keeper_for
from pennflow.engine.outcomes import NO_OUTPUT, StepLogs
from pennflow.engine.records import Reporter, RunRecords, SilentReporter
from pennflow.engine.run_checks import InvalidRunInput, RunInputs
from pennflow.engine.run_context import RunContext
from pennflow.engine.run_layers import VIEW_DIR
from pennflow.engine.run_plan import plan_run
from pennflow.engine.scheduler import LocalRun
from pennflow.engine.source_processors import resolve_sources
from pennflow.layers.sandbox import enforced
from pennflow.stores.base import RunStore
from pennflow.workflow.contract import RunLayout
from pennflow.workflow.dag import Dag
from pennflow.workflow.definition import ProcessorType, TargetType, Workflow
from pennflow.workflow.runs import RunRecord, new_run_id

__all__ = [
    "CANCELED_BY_STORE",
    "CANCELED_BY_USER",
    "DEFAULT_KILL_GRACE_SECONDS",
    "NOT_WRITE_PROTECTED",
    "NO_OUTPUT",
    "RESULTS_BUCKET_ENV",
    "STORE_POLL_SECONDS",
    "VIEW_DIR",
    "InvalidRunInput",
    "Reporter",
    "result_dirs",
    "run_workflow",
]

DEFAULT_KILL_GRACE_SECONDS = 5.0
RESULTS_BUCKET_ENV = "PENNFLOW_RESULTS_BUCKET"  # where --publish puts s3 targets' files
NOT_WRITE_PROTECTED = (
    "layers are not write-protected in this run: private mount namespaces are unavailable here and "
    "pennflow runs as root, so a processor could change the layers it reads"
)

logger = logging.getLogger(__name__)


def run_workflow(
    workflow: Workflow,
    *,
    definition_dir: str | os.PathLike[str],
    input_dir: str | os.PathLike[str] | None = None,
    params: Mapping[str, str] | None = None,
    layers: Sequence[str] = (),
    max_parallel: int | None = None,
    home: str | os.PathLike[str] | PennflowHome | None = None,
    store: RunStore | None = None,
    reporter: Reporter | None = None,
    cancel_event: threading.Event | None = None,
    docker: bool | None = None,
    dataset_id: str | None = None,
    package_ids: Sequence[str] = (),
    publish: bool = False,
    kill_grace: float = DEFAULT_KILL_GRACE_SECONDS,
) -> RunRecord:
    """Run ``workflow`` to the end and return its final record.

    Raises InvalidRunInput before anything runs (unknown param, a layer missing or not READY, no
    input folder or dataset, no Pennsieve credentials for the dataset, a data target that cannot
    ``publish``). ``layers`` are given to every processor, on top of the ones each asks for.
    ``docker=None`` uses containers when ``docker info`` succeeds; True/False forces the choice.
    Pennsieve hosts and credentials come from the environment (``PennsieveClient()``).
    """
    home = home if isinstance(home, PennflowHome) else PennflowHome.resolve(home)
    run_id = new_run_id()
    inputs = RunInputs(
        input_dir=Path(input_dir).absolute() if input_dir is not None else None,
        dataset_id=dataset_id,
        package_ids=tuple(dict.fromkeys(package_ids)),
        publish=publish,
        results_bucket=os.environ.get(RESULTS_BUCKET_ENV) or None,
    )
    use_docker = container_runtime_available() if docker is None else docker
    workflow, venv_launches = resolve_sources(workflow, home, Path(definition_dir), use_docker)
    plan = plan_run(workflow, home, run_id, inputs, params, layers, max_parallel)
    own_store = store is None
    try:
        if store is None:
            from pennflow.stores.sqlite import SqliteRunStore

            store = SqliteRunStore(home.db_path)
        if plan.layers.mounts and not enforced(plan.layers.mode):
            logger.warning(NOT_WRITE_PROTECTED)
        records = RunRecords(store, reporter or SilentReporter(), StepLogs(home, run_id))
        ctx = RunContext.create(
            plan,
            run_id=run_id,
            home=home,
            definition_dir=Path(definition_dir),
            records=records,
            use_docker=use_docker,
            kill_grace=kill_grace,
            lease=keeper_for(store, run_id),
            venv_launches=venv_launches,
        )
        return LocalRun(ctx, cancel_event or threading.Event()).run()
    finally:
        try:
            plan.layers.close(run_id)
        finally:
            if own_store and store is not None:
                store.close()  # type: ignore[attr-defined]


def result_dirs(workflow: Workflow, run_dir: Path) -> list[Path]:
    """Where a run's results are: the data targets' output folders, else the last processors'.

    A persistent-layer target has none: its results are the layer version its step names."""
    layout = RunLayout(run_dir)
    data_targets = [p for p in workflow.processors if p.type is ProcessorType.DATA_TARGET]
    targets = [p.id for p in data_targets if p.target_type is not TargetType.PERSISTENT_LAYER]
    if not data_targets:
        succs = Dag.from_workflow(workflow).succs
        targets = [pid for pid, after in succs.items() if not after]
    return [Path(layout.output_dir(pid)) for pid in targets]
