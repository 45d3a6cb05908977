"""Routes' logic for runs: start (or plan), get, list, cancel, rerun.

A run starts in two steps so the API answers at once: the run record is created here
(NOT_STARTED, params resolved), then the launcher hands its id to the node, which prepares the
run and starts the execution named by the run id. The execution ARN is therefore known, and
returned, before the execution exists.

Before that the run is keyed (``pennflow.data.content_key``): its dataset's files are listed on
Pennsieve, its layers' versions and its images' digests read, and one sha256 over those, the
definition and the params is its content key, stored on the run. A start whose key matches a
SUCCEEDED run returns that run (200, ``duplicateOf``) unless ``force``; a dry run returns the plan
and starts nothing; a rerun is deliberate, so it never counts as a duplicate. The files listed
become the run's download manifest, so the files keyed are the files the run downloads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pennflow.api.errors import BadRequest, Conflict, InvalidRequest, NotFound, Unavailable, field_error
from pennflow.api.models import (
    CancelAccepted,
    ImageView,
    InputsView,
    LayerVersion,
    ProcessorPlan,
    RunAccepted,
    RunAttemptView,
    RunDuplicate,
    RunList,
    RunPlan,
    RunRequest,
    RunSummary,
    RunView,
    StepView,
)
from pennflow.api.ports import ManifestWriter, RunCanceller, RunLauncher, RunPlanning, ecr_image_digest
from pennflow.api.run_budget import RunBudget
from pennflow.aws import arns
from pennflow.node.registry import WorkflowRecord, WorkflowRegistry
from pennflow.stores.base import RunStore
from pennflow.workflow.contract import (
    UnknownParameter,
    run_param_problems,
    run_parameters,
    typed_param_problems,
)
from pennflow.workflow.definition import Workflow
from pennflow.workflow.runs import RunRecord, Status, StepRecord, new_run_id, utcnow

if TYPE_CHECKING:
    from pennflow.data.content_key import LayerPin
    from pennflow.data.content_key import RunPlan as ContentPlan
    from pennflow.data.datasource import InputSummary
    from pennflow.pennsieve import ManifestEntry

ORIGIN = "api"
# Runs the creating step of a start: the API passes its Idempotency-Key record here, so a planned
# or duplicate answer never takes a key, and a retry of a created run returns that run.
Once = Callable[[Callable[[], RunAccepted]], RunAccepted]


@dataclass(frozen=True)
class KeyedRun:
    """A run's plan, and its content key unless the node could not see all it covers."""

    plan: ContentPlan
    content_key: str | None
    warnings: list[str]
    entries: list[ManifestEntry] | None  # the dataset's files: the run's download manifest


def start_run(
    request: RunRequest,
    *,
    store: RunStore,
    registry: WorkflowRegistry,
    launcher: RunLauncher,
    planning: RunPlanning | None = None,
    once: Once | None = None,
    processors: Any | None = None,
) -> RunAccepted | RunPlan | RunDuplicate:
    from pennflow.data.content_key import find_duplicate

    record = registry.get(request.workflow)
    if record is None:
        raise NotFound(
            f"no workflow named {request.workflow!r}: register it with POST /workflows",
            fields=[field_error("workflow", "not registered")],
        )
    workflow, images = _pinned(record.workflow(), processors)
    params = _resolve_params(workflow, request.params)
    layers = [{"name": name} for name in request.layers]
    planning = planning or RunPlanning()
    keyed = key_run(
        workflow,
        dataset_id=request.dataset_id,
        package_ids=request.package_ids,
        params=params,
        layers=layers,
        planning=planning,
    )
    wants_original = keyed.content_key and (request.dry_run or not request.force)
    original = find_duplicate(store, keyed.content_key) if wants_original else None
    budget, estimate = _estimate(workflow, keyed, planning)
    if request.dry_run:
        return _dry_run(record, workflow, request, params, keyed, original).model_copy(
            update={"cost_estimate": estimate}
        )
    budget.check(estimate)
    if original is not None:
        return _duplicate(original, keyed)

    def create() -> RunAccepted:
        return _create_and_launch(
            record,
            workflow,
            store=store,
            launcher=launcher,
            dataset_id=request.dataset_id,
            package_ids=request.package_ids,
            params=params,
            layers=layers,
            keyed=keyed,
            manifests=planning.manifests,
            images=images,
        )

    return once(create) if once else create()


def rerun(
    run_id: str,
    *,
    store: RunStore,
    registry: WorkflowRegistry,
    launcher: RunLauncher,
    planning: RunPlanning | None = None,
) -> RunAccepted:
    """A new run of the same definition (by hash), dataset, resolved params, layers and images (its
    sourceUrl processors' digests), keyed anew (the dataset's files as they are now) and started even
    when a succeeded run has that key."""
    from pennflow.processors.registry import with_pinned_images

    original = _existing_run(store, run_id)
    record = registry.get_version(original.workflow, original.definition_hash)
    if record is None:
        raise Conflict(
            f"run {run_id!r} used definition {original.definition_hash[:12]} of workflow "
            f"{original.workflow!r}, which is no longer registered"
        )
    workflow = with_pinned_images(record.workflow(), original.images)
    planning = planning or RunPlanning()
    keyed = key_run(
        workflow,
        dataset_id=original.dataset_id,
        package_ids=original.package_ids,
        params=original.params,
        layers=original.layers,
        planning=planning,
    )
    budget, estimate = _estimate(workflow, keyed, planning)
    budget.check(estimate)  # a rerun is a new run: the node's per-run ceiling holds for it too
    return _create_and_launch(
        record,
        workflow,
        store=store,
        launcher=launcher,
        dataset_id=original.dataset_id,
        package_ids=original.package_ids,
        params=original.params,
        layers=original.layers,
        keyed=keyed,
        manifests=planning.manifests,
        rerun_of=run_id,
        images=original.images,
    )


def _estimate(workflow: Workflow, keyed: KeyedRun, planning: RunPlanning) -> tuple[RunBudget, Any]:
    """The node's budget and the run's worst-case estimate (its processors and the dataset's bytes)."""
    budget = planning.budget or RunBudget()
    return budget, budget.estimate(workflow, keyed.plan.inputs.total_bytes if keyed.plan.inputs else 0)


def key_run(
    workflow: Workflow,
    *,
    dataset_id: str | None,
    package_ids: Sequence[str],
    params: Mapping[str, Mapping[str, str]],
    layers: Sequence[Mapping[str, str]],
    planning: RunPlanning,
) -> KeyedRun:
    """List the inputs, pin the layers, resolve the images: the run's plan and content key.

    What the node cannot see (no Pennsieve access, no layer registry) leaves the run without a
    key, with a warning saying why, rather than with a key that would match runs on other files.
    """
    from pennflow.data.content_key import plan_run
    from pennflow.data.datasource import summarize

    gaps: list[str] = []
    entries = inputs = None
    if dataset_id:
        if planning.inputs is None:
            gaps.append("this node has no Pennsieve access to list the dataset's files")
        else:
            entries = planning.inputs.entries(dataset_id, package_ids)
            inputs = summarize(entries, dataset_id=dataset_id, package_ids=package_ids)
    # Every layer some processor mounts, as pennflow.node.lifecycle.layer_names pins them.
    run_layers = [layer["name"] for layer in layers if layer.get("name")]
    names = list(dict.fromkeys(run_layers + [name for p in workflow.processors for name in p.layers]))
    pins: list[LayerPin] = []
    if names and planning.layers is None:
        gaps.append("this node has no layer registry to read the layers' versions")
    elif names:
        try:
            pins = layer_pins(names, planning.layers)
        except ValueError as exc:
            field = "layers" if run_layers else "workflow"  # else the registered definition names them
            raise InvalidRequest(
                str(exc), fields=[field_error(field, str(exc))], code="layer_not_published"
            ) from None
    plan = plan_run(
        workflow,
        params=params,
        inputs=inputs,
        layers=pins,
        resolver=planning.resolve_image or ecr_image_digest,
    )
    warnings = plan.warnings + [
        f"no content key: {gap}, so the run is never taken for a duplicate" for gap in gaps
    ]
    return KeyedRun(plan, None if gaps else plan.content_key, warnings, entries)


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
        content_key=run.content_key,
        execution_arn=run.execution_arn,
        console_url=console_url(run.execution_arn) if run.execution_arn else None,
        origin=run.origin,
        rerun_of=run.rerun_of,
        attempt=run.attempt,
        history=[RunAttemptView.of(earlier) for earlier in run.history],
        resume_until=run.resume_until,
        steps=steps,
        cost=run.cost,
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
    CANCELED, a started one through CANCELING (``pennflow.node.cancel.cancel_run``).
    """
    run = _existing_run(store, run_id)
    if run.status.is_terminal:
        raise Conflict(f"run {run_id!r} has already finished: {run.status.value}")
    canceller.cancel(run_id)
    return CancelAccepted(run_id=run_id, status=Status.CANCELING)


# ------------------------------------------------------------------ helpers


console_url = arns.execution_console_url  # one home: pennflow.aws.arns (run-end notifications use it too)


def _existing_run(store: RunStore, run_id: str) -> RunRecord:
    run = store.get_run(run_id)
    if run is None:
        raise NotFound(f"no run {run_id!r}", fields=[field_error("run_id", "no such run", "path")])
    return run


def _pinned(workflow: Workflow, processors: Any | None) -> tuple[Workflow, dict[str, str]]:
    """SourceUrl processors by digest (409 naming any not READY); a workflow without any as it is."""
    if not any(p.source_url and not p.image for p in workflow.processors):
        return workflow, {}
    from pennflow.api.processors import pin_run_images

    return pin_run_images(workflow, processors)


def _resolve_params(workflow: Workflow, overrides: Mapping[str, str]) -> dict[str, dict[str, str]]:
    try:
        params = run_parameters(workflow, overrides)
    except UnknownParameter as exc:
        fields = [field_error(f"params.{key}", "no processor declares this param") for key in exc.keys]
        raise BadRequest(str(exc), fields=fields, code="unknown_param") from None
    typed = typed_param_problems(workflow, params)
    if typed:
        fields = [
            field_error(f"params.{problem.processor}.{problem.name}", problem.message) for problem in typed
        ]
        raise BadRequest("; ".join(map(str, typed)), fields=fields, code="invalid_param")
    problems = run_param_problems(workflow, params)
    if problems:
        fields = [field_error("params.layerName", problem) for problem in problems]
        raise BadRequest("; ".join(problems), fields=fields, code="invalid_param")
    from pennflow.workflow.asl import override_problems  # the compiler is needed only for this check

    too_long = override_problems(workflow, params)
    if too_long:
        raise BadRequest(
            "; ".join(too_long), fields=[field_error("params", p) for p in too_long], code="params_too_long"
        )
    return params


def _dry_run(
    record: WorkflowRecord,
    workflow: Workflow,
    request: RunRequest,
    params: dict[str, dict[str, str]],
    keyed: KeyedRun,
    original: RunRecord | None,
) -> RunPlan:
    from pennflow.workflow.explain import explain  # only dry runs pay for the makespan simulation

    plan = keyed.plan
    return RunPlan(
        workflow=record.name,
        definition_hash=record.definition_hash,
        content_key=keyed.content_key,
        duplicate_of=original.run_id if original else None,
        dataset_id=request.dataset_id,
        package_ids=request.package_ids,
        params=params,
        layers=request.layers,
        layer_versions=[LayerVersion(**pin.model_dump()) for pin in plan.layers],
        inputs=_inputs_view(plan.inputs),
        processors=[
            ProcessorPlan(id=p.id, type=p.type, image=ImageView(**p.image.model_dump()), params=p.params)
            for p in plan.processors
        ],
        warnings=keyed.warnings,
        plan=explain(workflow),
    )


def _inputs_view(inputs: InputSummary | None) -> InputsView | None:
    if inputs is None:
        return None
    return InputsView(**inputs.model_dump(), without_checksum=inputs.without_checksum)


def _duplicate(original: RunRecord, keyed: KeyedRun) -> RunDuplicate:
    return RunDuplicate(
        duplicate_of=original.run_id,
        content_key=keyed.content_key or "",
        run=RunSummary.of(original),
        message=f"run {original.run_id!r} already succeeded with the same definition, images, params, layers "
        "and input files; send force: true to run again",
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
    keyed: KeyedRun,
    manifests: ManifestWriter | None,
    rerun_of: str | None = None,
    images: Mapping[str, str] | None = None,
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
        content_key=keyed.content_key,
        origin=ORIGIN,
        rerun_of=rerun_of,
        images=dict(images or {}),
    )
    steps = [StepRecord(run_id=run_id, processor_id=p.id) for p in workflow.processors]
    try:
        store.create_run(run, steps)
    except ValueError as exc:  # the store's own limits (processors per run)
        raise InvalidRequest(
            str(exc), fields=[field_error("workflow", str(exc))], code="run_too_large"
        ) from None
    try:
        if manifests is not None and keyed.entries is not None:  # else prepare lists the files itself
            manifests.write(run_id, keyed.entries)
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
        content_key=keyed.content_key,
        warnings=keyed.warnings,
    )


def layer_pins(names: Iterable[str], registry: Any) -> list[LayerPin]:
    """Each named layer's current published version and checksum, from the layer registry; a layer a
    run could not mount (missing, FAILED, never built) is refused here, at submit time."""
    from pennflow.data.content_key import LayerPin
    from pennflow.layers.mounts import unavailable_reason

    pins, problems = [], []
    for name in sorted(set(names)):
        record = registry.get(name)
        problem = unavailable_reason(name, record)
        if problem:
            problems.append(problem)
            continue
        pins.append(LayerPin(name=name, version=record.version, checksum=record.checksum))
    if problems:
        raise ValueError("; ".join(problems))
    return pins
