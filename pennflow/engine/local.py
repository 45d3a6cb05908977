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
- ``records``: the run's and steps' records, in the store and to the reporter;
- ``run_spec``, ``step_reuse``, ``resume``: what a run was started with, each step's key and output
  hash, and ``pennflow resume`` (a failed or canceled run continued, its unchanged steps reused).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pennflow.engine.cancel import CANCELED_BY_STORE, CANCELED_BY_USER, STORE_POLL_SECONDS
from pennflow.engine.gpus import gpu_placement
from pennflow.engine.home import PennflowHome
from pennflow.engine.launchers import container_runtime_available
from pennflow.engine.lease import keeper_for
from pennflow.engine.outcomes import NO_OUTPUT, StepLogs
from pennflow.engine.records import Reporter, RunRecords, SilentReporter
from pennflow.engine.run_checks import InvalidRunInput, RunInputs
from pennflow.engine.run_context import RunContext
from pennflow.engine.run_layers import VIEW_DIR
from pennflow.engine.run_plan import RunPlan, plan_run
from pennflow.engine.run_spec import RunSpec, save_spec
from pennflow.engine.scheduler import LocalRun
from pennflow.engine.source_processors import resolve_sources
from pennflow.engine.step_reuse import StepReuse
from pennflow.layers.sandbox import enforced
from pennflow.stores.base import RunStore
from pennflow.workflow.contract import RunLayout
from pennflow.workflow.dag import Dag
from pennflow.workflow.definition import ProcessorType, TargetType, Workflow
from pennflow.workflow.runs import RunRecord, Status, StepRecord, new_run_id

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
    rerun_of: str | None = None,
    allow_cpu: bool = False,
) -> RunRecord:
    """Run ``workflow`` to the end and return its final record.

    Raises InvalidRunInput before anything runs (unknown param, a layer missing or not READY, no
    input folder or dataset, no Pennsieve credentials for the dataset, a data target that cannot
    ``publish``). ``layers`` are given to every processor, on top of the ones each asks for.
    ``docker=None`` uses containers when ``docker info`` (or ``podman info``) succeeds; True/False forces
    the choice. A computeType gpu processor gets the machine's GPUs (``engine.gpus``), or with
    ``allow_cpu`` runs on the CPU where it cannot; without it such a run is refused.
    Pennsieve hosts and credentials come from the environment (``PennsieveClient()``).
    What the run was given is kept in its folder (``engine.run_spec``), so that ``pennflow rerun``
    and ``pennflow resume`` can start it again; ``rerun_of`` names the run a rerun repeats.
    """
    home = home if isinstance(home, PennflowHome) else PennflowHome.resolve(home)
    spec = RunSpec(
        definition=json.loads(workflow.canonical_json()),
        definition_dir=str(Path(definition_dir).absolute()),
        input_dir=str(Path(input_dir).absolute()) if input_dir is not None else None,
        dataset_id=dataset_id,
        package_ids=list(dict.fromkeys(package_ids)),
        overrides=dict(params or {}),
        run_layers=list(dict.fromkeys(layers)),
        max_parallel=max_parallel,
        docker=docker,
        publish=publish,
        allow_cpu=allow_cpu,
    )
    options = RunOptions(store, reporter, cancel_event, kill_grace, rerun_of)
    return execute_run(workflow, spec, home, new_run_id(), options)


@dataclass(frozen=True)
class RunOptions:
    store: RunStore | None = None
    reporter: Reporter | None = None
    cancel_event: threading.Event | None = None
    kill_grace: float = DEFAULT_KILL_GRACE_SECONDS
    rerun_of: str | None = None  # the run a rerun repeats (recorded on the run)


def execute_run(
    workflow: Workflow,
    spec: RunSpec,
    home: PennflowHome,
    run_id: str,
    options: RunOptions,
    resumed: RunRecord | None = None,
    previous: Mapping[str, StepRecord] | None = None,
) -> RunRecord:
    """Plan and run ``workflow`` as run ``run_id``: a new run, or (``resumed``, the run's record for
    its next attempt) a resume that may reuse the ``previous`` attempt's steps (``engine.resume``)."""
    inputs = RunInputs(
        input_dir=Path(spec.input_dir) if spec.input_dir is not None else None,
        dataset_id=spec.dataset_id,
        package_ids=tuple(spec.package_ids),
        publish=spec.publish,
        results_bucket=os.environ.get(RESULTS_BUCKET_ENV) or None,
    )
    use_docker = container_runtime_available() if spec.docker is None else spec.docker
    workflow, venv_launches = resolve_sources(workflow, home, Path(spec.definition_dir), use_docker)
    # after the sources: an app.yml may make a processor gpu
    gpu_processors = gpu_placement(workflow.processors, use_containers=use_docker, allow_cpu=spec.allow_cpu)
    plan = plan_run(workflow, home, run_id, inputs, spec.overrides, spec.run_layers, spec.max_parallel)
    store = options.store
    own_store = store is None
    try:
        if store is None:
            from pennflow.stores.sqlite import SqliteRunStore

            store = SqliteRunStore(home.db_path)
        if plan.layers.mounts and not enforced(plan.layers.mode):
            logger.warning(NOT_WRITE_PROTECTED)
        logs = StepLogs(home, run_id)
        records = RunRecords(store, options.reporter or SilentReporter(), logs, reopened=resumed is not None)
        definition_dir = Path(spec.definition_dir)
        run_input = {"input": spec.input_dir, "dataset": spec.dataset_id, "packages": spec.package_ids}
        reuse = StepReuse(
            plan,
            definition_dir=definition_dir,
            use_docker=use_docker,
            run_input=run_input,
            previous=previous,
            previous_attempt=resumed.attempt - 1 if resumed is not None else None,
        )
        ctx = RunContext.create(
            plan,
            run_id=run_id,
            home=home,
            definition_dir=definition_dir,
            records=records,
            use_docker=use_docker,
            kill_grace=options.kill_grace,
            lease=keeper_for(store, run_id),
            reuse=reuse,
            rerun_of=resumed.rerun_of if resumed is not None else options.rerun_of,
            venv_launches=venv_launches,
            gpu_processors=gpu_processors,
        )
        local_run = LocalRun(ctx, options.cancel_event or threading.Event())
        if resumed is not None:  # the last step before the engine takes it: nothing can fail between
            records.reopen(_next_attempt(resumed, plan), [p.id for p in workflow.processors])
        save_spec(home, run_id, spec)
        return local_run.run()
    finally:
        try:
            plan.layers.close(run_id)
        finally:
            if own_store and store is not None:
                store.close()  # type: ignore[attr-defined]


def _next_attempt(resumed: RunRecord, plan: RunPlan) -> RunRecord:
    """The resumed run's record as its next attempt starts: what it runs now, its outcome cleared."""
    return resumed.model_copy(
        update={
            "workflow": plan.workflow.name,
            "definition_hash": plan.workflow.definition_hash(),
            "status": Status.NOT_STARTED,
            "params": plan.params,
            "layers": [mount.run_entry() for mount in plan.layers.mounts.values()],
            "dataset_id": plan.inputs.dataset_id,
            "package_ids": list(plan.inputs.package_ids),
            "started_at": None,
            "finished_at": None,
            "failed_processor": None,
            "exit_code": None,
            "reason": None,
        }
    )


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
