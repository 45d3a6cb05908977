"""Routes' logic for runs: start (or plan), get, list, cancel, rerun.

A run starts in two steps so the API answers at once: the run record is created here
(NOT_STARTED, params resolved), then the launcher hands its id to the node, which prepares the
run and starts the execution named by the run id. The execution ARN is therefore known, and
returned, before the execution exists.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pennflow.api.errors import BadRequest, Conflict, InvalidRequest, NotFound, Unavailable, field_error
from pennflow.api.models import (
    CancelAccepted,
    RunAccepted,
    RunList,
    RunPlan,
    RunRequest,
    RunSummary,
    RunView,
    StepView,
)
from pennflow.api.ports import RunCanceller, RunLauncher
from pennflow.contract import UnknownParameter, run_parameters
from pennflow.definition import Workflow
from pennflow.runs import RunRecord, Status, StepRecord, new_run_id, utcnow
from pennflow.stores.base import RunStore
from pennflow.workflows_registry import WorkflowRecord, WorkflowRegistry

ORIGIN = "api"


def start_run(
    request: RunRequest, *, store: RunStore, registry: WorkflowRegistry, launcher: RunLauncher
) -> RunAccepted | RunPlan:
    record = registry.get(request.workflow)
    if record is None:
        raise NotFound(
            f"no workflow named {request.workflow!r}: register it with POST /workflows",
            fields=[field_error("workflow", "not registered")],
        )
    workflow = record.workflow()
    params = _resolve_params(workflow, request.params)
    if request.dry_run:
        return _plan(record, workflow, request, params)
    return _create_and_launch(
        record,
        workflow,
        store=store,
        launcher=launcher,
        dataset_id=request.dataset_id,
        package_ids=request.package_ids,
        params=params,
        layers=[{"name": name} for name in request.layers],
    )


def rerun(run_id: str, *, store: RunStore, registry: WorkflowRegistry, launcher: RunLauncher) -> RunAccepted:
    """A new run of the same definition (by hash), dataset, resolved params and layers."""
    original = _existing_run(store, run_id)
    record = registry.get_version(original.workflow, original.definition_hash)
    if record is None:
        raise Conflict(
            f"run {run_id!r} used definition {original.definition_hash[:12]} of workflow "
            f"{original.workflow!r}, which is no longer registered"
        )
    return _create_and_launch(
        record,
        record.workflow(),
        store=store,
        launcher=launcher,
        dataset_id=original.dataset_id,
        package_ids=getattr(original, "package_ids", []),  # as pennflow.lifecycle reads them
        params=original.params,
        layers=original.layers,
        rerun_of=run_id,
    )


def get_run(run_id: str, *, store: RunStore) -> RunView:
    run = _existing_run(store, run_id)
    steps = [StepView.of(step) for step in store.list_steps(run_id)]
    summary = RunSummary.of(run).model_dump()
    return RunView(
        **summary,
        definition_hash=run.definition_hash,
        params=run.params,
        layers=run.layers,
        exit_code=run.exit_code,
        reason=run.reason,
        execution_arn=run.execution_arn,
        console_url=console_url(run.execution_arn) if run.execution_arn else None,
        origin=run.origin,
        steps=steps,
    )


def list_runs(
    *, store: RunStore, workflow: str | None, status: Status | None, limit: int, cursor: str | None
) -> RunList:
    try:
        page = store.list_runs(workflow=workflow, status=status, limit=limit, cursor=cursor)
    except ValueError as exc:
        raise BadRequest(str(exc), fields=[field_error("cursor", str(exc), "query")]) from None
    return RunList(runs=[RunSummary.of(run) for run in page.runs], cursor=page.cursor)


def cancel_run(run_id: str, *, store: RunStore, canceller: RunCanceller) -> CancelAccepted:
    """Ask the node to cancel; 409 once the run has finished. Asking twice is harmless.

    The canceller owns every status change: a run that has not started yet goes straight to
    CANCELED, a started one through CANCELING (``pennflow.lifecycle.cancel_run``).
    """
    run = _existing_run(store, run_id)
    if run.status.is_terminal:
        raise Conflict(f"run {run_id!r} has already finished: {run.status.value}")
    canceller.cancel(run_id)
    return CancelAccepted(run_id=run_id, status=Status.CANCELING)


# ------------------------------------------------------------------ helpers


def console_url(arn: str) -> str:
    region = arn.split(":")[3]
    return f"https://{region}.console.aws.amazon.com/states/home?region={region}#/v2/executions/details/{arn}"


def _existing_run(store: RunStore, run_id: str) -> RunRecord:
    run = store.get_run(run_id)
    if run is None:
        raise NotFound(f"no run {run_id!r}", fields=[field_error("run_id", "no such run", "path")])
    return run


def _resolve_params(workflow: Workflow, overrides: Mapping[str, str]) -> dict[str, dict[str, str]]:
    try:
        return run_parameters(workflow, overrides)
    except UnknownParameter as exc:
        fields = [field_error(f"params.{key}", "no processor declares this param") for key in exc.keys]
        raise BadRequest(str(exc), fields=fields, code="unknown_param") from None


def _plan(
    record: WorkflowRecord, workflow: Workflow, request: RunRequest, params: dict[str, dict[str, str]]
) -> RunPlan:
    from pennflow.explain import explain  # only dry runs pay for the makespan simulation

    return RunPlan(
        workflow=record.name,
        definition_hash=record.definition_hash,
        dataset_id=request.dataset_id,
        package_ids=request.package_ids,
        params=params,
        layers=request.layers,
        plan=explain(workflow),
    )


def _create_and_launch(
    record: WorkflowRecord,
    workflow: Workflow,
    *,
    store: RunStore,
    launcher: RunLauncher,
    dataset_id: str | None,
    package_ids: Sequence[str],
    params: dict[str, dict[str, str]],
    layers: list[dict[str, str]],
    rerun_of: str | None = None,
) -> RunAccepted:
    run_id = new_run_id()
    arn = record.execution_arn(run_id)
    run = RunRecord(
        run_id=run_id,
        workflow=record.name,
        definition_hash=record.definition_hash,
        dataset_id=dataset_id,
        package_ids=list(package_ids),
        params=params,
        layers=layers,
        execution_arn=arn,
        origin=ORIGIN,
    )
    steps = [StepRecord(run_id=run_id, processor_id=p.id) for p in workflow.processors]
    try:
        store.create_run(run, steps)
    except ValueError as exc:  # the store's own limits (processors per run)
        raise InvalidRequest(
            str(exc), fields=[field_error("workflow", str(exc))], code="run_too_large"
        ) from None
    try:
        launcher.launch(run_id)
    except Exception as exc:  # any failure to hand over leaves a run nobody will start: record it
        store.update_run(
            run_id, Status.FAILED, reason=f"could not be handed to the node: {exc}", finished_at=utcnow()
        )
        raise Unavailable("the node could not take the run; try again") from exc
    return RunAccepted(
        run_id=run_id,
        workflow=record.name,
        status=Status.NOT_STARTED,
        execution_arn=arn,
        console_url=console_url(arn),
        rerun_of=rerun_of,
    )
