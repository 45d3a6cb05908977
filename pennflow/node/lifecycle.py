"""Starting, queueing and cancelling runs on the compute node (DESIGN §4, §5).

    prepare_run(run_id, node)   the prepare Lambda: queue the run, then start queued runs while
                                slots are free (oldest first, so a new run never jumps the queue)
    start_queued_runs(node)     also called whenever a slot frees
    cancel_run(run_id, node)    (pennflow.node.cancel) the cancel Lambda: CANCELING, StopExecution, StopTask, then finalize
    release_when_idle(...)      frees a run's slot once none of its tasks is alive

Starting a run in a slot: empty the slot folder, ensure the task definitions (pennflow.node.taskdefs),
build the execution input (pennflow.workflow.asl.execution_input) and StartExecution named by the run id
(idempotent: an existing execution of that name is this run's), then mark the run STARTED.
Registering a large workflow's task definitions on a fresh slot may not fit in one invocation: the
run then keeps its slot, goes back on the queue and is resumed by a new one (pennflow.node.resume).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pennflow.aws import client as aws_client
from pennflow.aws import error_code
from pennflow.node.gpu import GpuCapacity
from pennflow.node.resume import Continuation, NoContinuation, PreparationPaused, TimeBudget
from pennflow.node.session_tokens import NoRunParameters, RunParameterWriter
from pennflow.node.slots import Slot, SlotFolders, SlotPool
from pennflow.node.taskdefs import TaskDefinitions
from pennflow.processors.registry import pinned_workflow
from pennflow.stores.dynamodb import DynamoRunStore
from pennflow.workflow import asl
from pennflow.workflow.asl_lambda import lambda_processors
from pennflow.workflow.asl_states import GPU_CAPACITY_KEY
from pennflow.workflow.contract import run_parameters
from pennflow.workflow.definition import ProcessorType, Workflow
from pennflow.workflow.runs import RESUMABLE, RunRecord, Status, utcnow

log = logging.getLogger(__name__)

# Errors that come back the same on every attempt: the run fails with the message instead.
PERMANENT_ERROR_CODES = frozenset(
    {
        "ClientException",
        "InvalidParameterException",
        "StateMachineDoesNotExist",
        "StateMachineDeleting",
        "InvalidArn",
        "InvalidName",
        "InvalidExecutionInput",
        "ValidationException",
    }
)
CANCEL_REASON = "canceled by request"
LIVE_TASK_LISTS = ("RUNNING", "STOPPED")  # a stopping task is listed under STOPPED until it is gone
DESCRIBE_TASKS_LIMIT = 100


class RunNotFound(LookupError):
    def __init__(self, run_id: str):
        super().__init__(f"no run {run_id!r} in the run store")


class WorkflowVersion(Protocol):
    """A registered definition (pennflow.node.registry.WorkflowRecord satisfies it)."""

    state_machine_arn: str

    @property
    def execution_target(self) -> str: ...

    def workflow(self) -> Workflow: ...


class WorkflowVersions(Protocol):
    def get_version(self, name: str, definition_hash: str) -> WorkflowVersion | None: ...


class LayersMissing(ValueError):
    """A layer the run needs cannot be mounted (the run fails with this message)."""


class LayerPins(Protocol):
    """Pins the current version of each layer for a run (and unpins it when the run ends)."""

    def pin(self, names: Sequence[str], run_id: str) -> dict[str, str]:
        """name -> the EFS access point id of the pinned version; raises LayersMissing."""

    def unpin(self, names: Sequence[str], run_id: str) -> None: ...


class NoLayers:
    """A node without a layer registry: runs that need no layer start, others fail clearly."""

    def pin(self, names: Sequence[str], run_id: str) -> dict[str, str]:
        if names:
            raise LayersMissing(f"layer(s) {', '.join(names)} requested, but this node has no layer registry")
        return {}

    def unpin(self, names: Sequence[str], run_id: str) -> None:
        pass


class RegistryLayerPins:
    """Layers from the layer registry (``pennflow.layers``): each version has its own access point."""

    def __init__(self, registry: Any):
        self.registry = registry

    def pin(self, names: Sequence[str], run_id: str) -> dict[str, str]:
        from pennflow.layers.models import LayersUnavailable
        from pennflow.layers.mounts import resolve_layers

        if not names:
            return {}
        try:
            mounts = resolve_layers(names, self.registry, run_id=run_id)
        except LayersUnavailable as exc:
            raise LayersMissing(str(exc)) from None
        pinned = {m.name: m.access_point_id for m in mounts if m.access_point_id}
        missing = sorted(set(names) - set(pinned))
        if missing:
            self.unpin(names, run_id)
            raise LayersMissing(
                f"layer(s) {', '.join(missing)} have no EFS access point for their current version"
            )
        return pinned

    def unpin(self, names: Sequence[str], run_id: str) -> None:
        from pennflow.layers.mounts import release_layers

        release_layers(names, self.registry, run_id)


class ManifestWriter(Protocol):
    """Writes what a data source downloads (batches for its Distributed Map) and says where."""

    def write(self, run: RunRecord, workflow: Workflow) -> dict[str, str]:
        """{"bucket", "key"} of the run's manifest in S3."""


class NoManifests:
    def write(self, run: RunRecord, workflow: Workflow) -> dict[str, str]:
        raise ValueError("the workflow has a data source, but this node has no Pennsieve download settings")


class PennsieveManifests:
    """The run's manifest (``pennflow.data.datasource``): the one the API wrote when it keyed the run's
    content, else built from Pennsieve with the node's secret, never with credentials from the run."""

    def __init__(self, bucket: str, s3_client: Any = None, pennsieve: Any = None):
        self.bucket = bucket
        self._s3 = s3_client
        self._pennsieve = pennsieve

    def write(self, run: RunRecord, workflow: Workflow) -> dict[str, str]:
        from pennflow.data.datasource import ensure_run_manifest
        from pennflow.pennsieve.node_secret import node_pennsieve

        if not run.dataset_id:
            raise ValueError("the workflow has a data source: start the run with a dataset id")
        location, _ = ensure_run_manifest(
            run.run_id,
            run.dataset_id,
            getattr(run, "package_ids", None) or None,
            bucket=self.bucket,
            client=self._pennsieve or node_pennsieve(),
            s3=self._s3,
        )
        return {"bucket": location.bucket, "key": location.key}


class Listener(Protocol):
    """What the handlers measure (metrics); the core calls it where the things happen."""

    def run_started(self, run_id: str, workflow: str) -> None: ...

    def run_finished(self, summary: Any) -> None: ...


class _Silent:
    def run_started(self, run_id: str, workflow: str) -> None:
        pass

    def run_finished(self, summary: Any) -> None:
        pass


@dataclass(frozen=True)
class NodeConfig:
    """The node's runtime settings the lifecycle needs (from the Lambda environment)."""

    cluster_arn: str
    subnets: tuple[str, ...]
    security_groups: tuple[str, ...]
    finalize_function: str
    list_batches_function: str | None
    download_function: str | None
    log_group: str
    log_bucket: str
    results_bucket: str
    retention_days: int = 90
    # A FAILED or CANCELED run keeps its slot this long, to be resumed (pennflow.node.redrive); 0: never.
    failed_run_retention_days: int = 0
    # Run costs (pennflow.node.run_cost): the node's region and its costPrices overrides (JSON).
    region: str = ""
    cost_prices: str = "{}"
    notify_topic_arn: str | None = None  # run ends are published here (pennflow.node.run_end)
    join_function: str | None = None  # releases a node waiting on another path (pennflow.node.joins)
    gpu_capacity_provider: str | None = None  # where computeType gpu tasks run (pennflow.node.gpu)
    gpu_instance_types: tuple[str, ...] = ()  # the group's, the first priced in run costs

    def execution_node(self) -> dict[str, Any]:
        node: dict[str, Any] = {
            "cluster": self.cluster_arn,
            "subnets": list(self.subnets),
            "securityGroups": list(self.security_groups),
            "finalizeFunction": self.finalize_function,
        }
        if self.list_batches_function:
            node["listBatchesFunction"] = self.list_batches_function
        if self.download_function:
            node["downloadFunction"] = self.download_function
        if self.join_function:
            node["joinFunction"] = self.join_function
        if self.gpu_capacity_provider:
            node[GPU_CAPACITY_KEY] = GpuCapacity(self.gpu_capacity_provider).strategy()
        return node


@dataclass
class Node:
    """Everything the lifecycle touches; clients default to :func:`pennflow.aws.client`."""

    config: NodeConfig
    store: DynamoRunStore
    slots: SlotPool
    folders: SlotFolders
    task_definitions: TaskDefinitions
    workflows: WorkflowVersions
    layers: LayerPins = field(default_factory=NoLayers)
    manifests: ManifestWriter = field(default_factory=NoManifests)
    listener: Listener = field(default_factory=_Silent)
    # This invocation's time, and who carries on a preparation that would not fit (pennflow.node.resume).
    budget: TimeBudget = field(default_factory=TimeBudget)
    continuation: Continuation = field(default_factory=NoContinuation)
    # Each slot's run id and SESSION_TOKEN, written at lease time (pennflow.node.session_tokens).
    run_parameters: RunParameterWriter = field(default_factory=NoRunParameters)
    # The processor registry (find): the manifests of the sourceUrl images a run pinned.
    processors: Any = None
    # computeType lambda: the slot's functions (pennflow.node.lambda_functions.ProcessorFunctions).
    functions: Any = None
    ecs_client: Any = None
    sfn_client: Any = None
    logs_client: Any = None
    s3_client: Any = None
    sns_client: Any = None

    @property
    def ecs(self) -> Any:
        return self.ecs_client or self.task_definitions.ecs

    @property
    def sfn(self) -> Any:
        return self.sfn_client or aws_client("stepfunctions")

    @property
    def logs(self) -> Any:
        return self.logs_client or aws_client("logs")

    @property
    def s3(self) -> Any:
        return self.s3_client or aws_client("s3")


@dataclass(frozen=True)
class StartResult:
    run_id: str
    outcome: str  # started | queued | failed | skipped | preparing (handed on, holding its slot)
    detail: str = ""
    slot_id: str | None = None
    execution_arn: str | None = None


# ------------------------------------------------------------------ prepare and the queue


def prepare_run(run_id: str, node: Node) -> StartResult:
    """Queue the run, then start queued runs while slots are free; says what became of this run."""
    run = node.store.get_run(run_id)
    if run is None:
        raise RunNotFound(run_id)
    if run.status is not Status.NOT_STARTED:
        return StartResult(run_id, "skipped", f"the run is {run.status.value}")
    node.slots.enqueue(run_id, run.created_at)
    results = {result.run_id: result for result in start_queued_runs(node)}
    if run_id in results:
        return results[run_id]
    detail = "queued: every run slot is busy; it starts when one frees"
    node.store.update_run_when(run_id, {Status.NOT_STARTED}, reason=detail)  # what `pennflow status` shows
    return StartResult(run_id, "queued", detail)


def start_queued_runs(node: Node) -> list[StartResult]:
    """Start queued runs, oldest first, until the queue is empty or no slot is free.

    A run handed on half-prepared (it holds a slot) goes first; a run that is handed on ends the
    loop, since this invocation's time is spent.
    """
    results = []
    while True:
        slots = node.slots.slots()
        entry = node.slots.next_to_serve(slots)
        if entry is None:
            break
        result = _start_queued(entry.run_id, node, slots)
        if result is None:
            break
        results.append(result)
        if result.outcome == "preparing":
            break
    return results


def start_next_queued(node: Node) -> StartResult | None:
    """Start the oldest queued run if a slot is free (or the run that holds one, half-prepared)."""
    slots = node.slots.slots()
    entry = node.slots.next_to_serve(slots)
    return _start_queued(entry.run_id, node, slots) if entry else None


def _start_queued(run_id: str, node: Node, slots: list[Slot]) -> StartResult | None:
    """None when no slot is free (the run stays queued)."""
    run = node.store.get_run(run_id)
    if run is None or run.status is not Status.NOT_STARTED:
        node.slots.dequeue(run_id)
        return StartResult(run_id, "skipped", "not waiting to start any more")
    version = node.workflows.get_version(run.workflow, run.definition_hash)
    if version is None:
        node.slots.dequeue(run_id)
        reason = f"definition {run.definition_hash[:12]} of workflow {run.workflow!r} is not registered on this node"
        _fail(node, run_id, reason)
        return StartResult(run_id, "failed", reason)
    workflow = pinned_workflow(version.workflow(), run.images, node.processors)  # sourceUrl processors
    try:
        access_points = node.layers.pin(layer_names(run, workflow), run_id)
    except LayersMissing as exc:
        node.slots.dequeue(run_id)
        _fail(node, run_id, str(exc))
        return StartResult(run_id, "failed", str(exc))
    held = next((slot for slot in slots if slot.run_id == run_id), None)
    preference = node.task_definitions.warmth(workflow, access_points, run_layers(run))
    slot = held or node.slots.lease(run_id, preference, snapshot=slots)
    if slot is None:
        return None  # stays queued, its layer versions pinned
    if not node.slots.dequeue(run_id):  # another preparation is starting this run
        if held is None:
            node.slots.release(slot.slot_id, run_id)
        return StartResult(run_id, "skipped", "being started by another preparation")
    try:
        return _start_in_slot(run, version, workflow, slot, access_points, node)
    except PreparationPaused as paused:
        return _hand_on(run, slot, paused, node)
    except Exception as exc:
        if not _permanent(exc):
            node.slots.release(slot.slot_id, run_id)
            node.slots.enqueue(run_id, run.created_at)
            raise
        reason = f"could not start: {exc}"
        _fail(node, run_id, reason)
        node.slots.release(slot.slot_id, run_id)
        node.layers.unpin(layer_names(run, workflow), run_id)
        return StartResult(run_id, "failed", reason, slot.slot_id)


def _hand_on(run: RunRecord, slot: Slot, paused: PreparationPaused, node: Node) -> StartResult:
    """Out of time: keep the slot, queue the run again (its first queue time) and have it resumed."""
    detail = f"preparing in {slot.slot_id}: {paused}; a new invocation continues"
    node.slots.enqueue(run.run_id, run.created_at)
    node.store.update_run_when(run.run_id, {Status.NOT_STARTED}, reason=detail)
    node.continuation.resume(run.run_id)
    log.info("run %s handed on: %s", run.run_id, detail)
    return StartResult(run.run_id, "preparing", detail, slot.slot_id)


def _start_in_slot(
    run: RunRecord,
    version: WorkflowVersion,
    workflow: Workflow,
    slot: Slot,
    access_points: dict[str, str],
    node: Node,
) -> StartResult:
    node.folders.wipe(slot)
    node.run_parameters.write(slot, run.run_id, workflow)  # before any task of the run can start
    arns = node.task_definitions.ensure(workflow, slot, access_points, run_layers(run), node.budget)
    node.slots.set_run_task_definitions(slot.slot_id, run.run_id, arns)
    functions = _processor_functions(node, workflow, slot, run)
    has_source = any(p.type is ProcessorType.DATA_SOURCE for p in workflow.processors)
    payload = asl.execution_input(
        workflow,
        run_id=run.run_id,
        task_definitions=arns,
        functions=functions,
        params=run.params or run_parameters(workflow),
        node=node.config.execution_node(),
        dataset_id=run.dataset_id,
        manifest=node.manifests.write(run, workflow) if has_source else None,
    )
    execution_arn = _start_execution(node, version, run.run_id, payload)
    if not node.store.update_run(
        run.run_id, Status.STARTED, execution_arn=execution_arn, started_at=utcnow(), reason=None
    ):
        # Canceled while it was being started: the execution must not run on.
        stop_execution(node, execution_arn, "the run was canceled while it started")
        release_when_idle(run.run_id, node)
        return StartResult(run.run_id, "skipped", "canceled while it started", slot.slot_id, execution_arn)
    node.listener.run_started(run.run_id, run.workflow)
    log.info("run %s started in %s", run.run_id, slot.slot_id)
    return StartResult(run.run_id, "started", "", slot.slot_id, execution_arn)


def _processor_functions(node: Node, workflow: Workflow, slot: Slot, run: RunRecord) -> dict[str, str]:
    """The slot's function of each computeType lambda processor (pennflow.node.lambda_functions)."""
    if node.functions is None:
        if lambda_processors(workflow.processors):
            raise ValueError("this node has no processor functions configured: computeType lambda cannot run")
        return {}
    return node.functions.ensure(workflow, slot, run_layers(run))


def _start_execution(node: Node, version: WorkflowVersion, run_id: str, payload: dict[str, Any]) -> str:
    try:
        response = node.sfn.start_execution(
            stateMachineArn=version.execution_target, name=run_id, input=json.dumps(payload)
        )
    except Exception as exc:
        if error_code(exc) != "ExecutionAlreadyExists":
            raise
        return execution_arn(version.state_machine_arn, run_id)
    return response["executionArn"]


def execution_arn(state_machine_arn: str, run_id: str) -> str:
    """``...:stateMachine:<name>[:<version>]`` -> ``...:execution:<name>:<run id>``."""
    prefix, _, rest = state_machine_arn.partition(":stateMachine:")
    return f"{prefix}:execution:{rest.split(':')[0]}:{run_id}"


def run_layers(run: RunRecord) -> list[str]:
    """Run-level layers (``--layer``), mounted for every processor as the local engine does."""
    return [layer["name"] for layer in run.layers if layer.get("name")]


def layer_names(run: RunRecord, workflow: Workflow) -> list[str]:
    """Every layer some processor of the run mounts."""
    names = run_layers(run) + [name for p in workflow.processors for name in p.layers]
    return list(dict.fromkeys(names))


def _permanent(exc: Exception) -> bool:
    from pennflow.pennsieve.errors import PennsieveError  # the dataset is missing, or access is refused

    return isinstance(exc, ValueError | PennsieveError) or error_code(exc) in PERMANENT_ERROR_CODES


def _fail(node: Node, run_id: str, reason: str) -> None:
    node.store.update_run(run_id, Status.FAILED, reason=reason, finished_at=utcnow())
    log.warning("run %s failed before it started: %s", run_id, reason)


# ------------------------------------------------------------------ cancel


def stop_execution(node: Node, arn: str, cause: str) -> None:
    try:
        node.sfn.stop_execution(executionArn=arn, error="pennflow.Canceled", cause=cause[:32_000])
    except Exception as exc:
        if error_code(exc) not in ("ExecutionDoesNotExist", "InvalidArn"):
            raise


# ------------------------------------------------------------------ slot release


def live_tasks(node: Node, slot: Slot) -> list[str]:
    """The slot's tasks that have not stopped yet (all of them belong to the run holding the slot)."""
    families = sorted({_family(arn) for arn in slot.run_task_definitions.values()})
    arns = sorted(
        {arn for fam in families for desired in LIVE_TASK_LISTS for arn in _list_tasks(node, fam, desired)}
    )
    live = []
    for start in range(0, len(arns), DESCRIBE_TASKS_LIMIT):
        described = node.ecs.describe_tasks(
            cluster=node.config.cluster_arn, tasks=arns[start : start + DESCRIBE_TASKS_LIMIT]
        )
        live += [
            task["taskArn"] for task in described.get("tasks", []) if task.get("lastStatus") != "STOPPED"
        ]
    return live


def release_when_idle(
    run_id: str, node: Node, slot: Slot | None = None, *, tasks_all_stopped: bool = False
) -> bool:
    """Free the run's slot once none of its tasks is alive: files kept at /runs/<run_id>/, queue served.

    False while a task is still stopping (the task's STOPPED event calls this again). ``slot``:
    the run's slot when the caller has just read it. ``tasks_all_stopped``: the caller knows it
    (an execution that succeeded waited for every task to stop), so ECS need not be asked.
    """
    slot = slot or node.slots.held_by(run_id)
    if slot is None:
        return True
    if kept_for_resume(node.store.get_run(run_id)):  # pennflow.node.redrive frees it when its time is up
        log.info("run %s keeps %s to be resumed", run_id, slot.slot_id)
        return False
    if not tasks_all_stopped and live_tasks(node, slot):
        log.info("run %s keeps %s until its tasks have stopped", run_id, slot.slot_id)
        return False
    node.folders.retain(slot, run_id)
    if node.slots.release(slot.slot_id, run_id):
        log.info("run %s released %s", run_id, slot.slot_id)
        _serve_queue(node)
    return True


def kept_for_resume(run: RunRecord | None) -> bool:
    """A FAILED or CANCELED run whose slot is kept to be resumed (``pennflow.node.redrive``)."""
    return run is not None and run.status in RESUMABLE and run.resume_until is not None


def _serve_queue(node: Node) -> None:
    """Start queued runs; a failure to start one never fails the caller (it stays queued)."""
    try:
        start_queued_runs(node)
    except Exception:
        log.exception("starting queued runs failed; they stay queued until the next slot frees")


def _family(task_definition_arn: str) -> str:
    return task_definition_arn.rsplit("/", 1)[-1].rsplit(":", 1)[0]


def _list_tasks(node: Node, family: str, desired: str) -> Iterator[str]:
    paginator = node.ecs.get_paginator("list_tasks")
    for page in paginator.paginate(cluster=node.config.cluster_arn, family=family, desiredStatus=desired):
        yield from page.get("taskArns", [])
