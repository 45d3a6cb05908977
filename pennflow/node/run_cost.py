"""What a finished run cost on this node: the usage AWS bills, gathered when the run ends.

- ECS tasks: every task recorded for the run's steps (attempts and scatter batches), described with
  DescribeTasks (100 at a time): cpu, memory, architecture and the billed span, from the image pull
  (where Fargate's billing starts) to ``stoppedAt``. A task ECS no longer describes (it forgets
  stopped tasks after about an hour) is costed from its step's span at the processor's settings.
- Step Functions: state transitions are the ``...StateEntered`` events of the execution history,
  paginated, of every child execution of its Distributed Map runs (data sources, scatters), and of
  the child machines' executions a workflow too large for one machine starts (``Part k`` states).
- Lambda: the download, batch-listing and finalize invocations the histories show, with their
  measured durations, and each join call (a wait or a done signal: one call each, its duration an
  estimate, ``JOIN_CALL_SECONDS``); prepare and the status tracker are counted as requests (their durations are
  not in any history).
- NAT: the bytes of the run's download manifest (the data source fetches them from Pennsieve).
- EFS: the bytes in the run's slot folder for the span of the run.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pennflow.aws import error_code
from pennflow.data.step_keys import folder_bytes
from pennflow.node.lifecycle import Node
from pennflow.processors.lambda_bootstrap import is_invocation_attempt
from pennflow.workflow import cost as C
from pennflow.workflow.asl_joins import DONE_SUFFIX, WAIT_SUFFIX
from pennflow.workflow.asl_lambda import invoked_processor
from pennflow.workflow.definition import Workflow
from pennflow.workflow.runs import RunRecord, StepRecord

log = logging.getLogger(__name__)

DESCRIBE_BATCH = 100  # DescribeTasks takes at most 100 tasks
STATUS_EVENTS_PER_TASK = (
    3  # the tracker's rule sees about three state changes per task (to RUNNING, to STOPPED...)
)
MAX_CHILD_HISTORIES = 500  # beyond this, the rest of a map run's children are counted as its mean
MISSING = ("ExecutionDoesNotExist", "InvalidArn", "AccessDeniedException", "ResourceNotFound")


# A join call does a few DynamoDB reads and writes and at most a few SendTaskSuccess calls: an estimate
# (its execution history shows only the wait it belongs to), priced at the function's memory.
JOIN_CALL_SECONDS = 0.1


def record_run_cost(
    node: Node, run: RunRecord, steps: list[StepRecord], workflow: Workflow | None, *, now: datetime
) -> RunRecord:
    """Measure the ended run's cost once and keep it in its record (a repeated finalize reuses it).

    A cost that cannot be measured never fails the finalize: the run's end matters more.
    """
    if run.cost is not None or not run.status.is_terminal:
        return run
    try:
        measured = measure_run_cost(node, run, steps, workflow, now=now)
    except Exception:
        log.exception("measuring the cost of run %s failed; the run ends without one", run.run_id)
        return run
    cost = measured.model_dump(mode="json", by_alias=True)
    node.store.update_run(run.run_id, cost=cost)
    return run.model_copy(update={"cost": cost})


def measure_run_cost(
    node: Node, run: RunRecord, steps: list[StepRecord], workflow: Workflow | None, *, now: datetime
) -> C.RunCost:
    table = C.price_table(node.config.region or None, _overrides(node.config.cost_prices))
    notes: list[str] = []
    tasks = list(_tasks(node, run, steps, workflow, now, notes))
    history = _histories(node, run.execution_arn, notes)
    lambdas = [
        C.processor_function_usage(
            name.removeprefix(PROCESSOR_FUNCTION), count, _memory(name, workflow), seconds
        )
        if name.startswith(PROCESSOR_FUNCTION)
        else C.LambdaUsage(name, count, _memory(name, workflow), seconds)
        for name, (count, seconds) in sorted(history.lambdas.items())
    ]
    lambdas.append(C.LambdaUsage("prepare", 1, C.LIFECYCLE_FUNCTION_MB, 0.0))
    lambdas.append(
        C.LambdaUsage("status", 2 + STATUS_EVENTS_PER_TASK * len(tasks), C.LIFECYCLE_FUNCTION_MB, 0.0)
    )
    notes.append("prepare and status invocations are counted as requests; status ~3 events per task")
    end = run.finished_at or now
    span = (end - run.started_at).total_seconds() if run.started_at else 0.0
    usage = C.RunUsage(
        tasks=tasks,
        lambdas=lambdas,
        state_transitions=history.transitions,
        nat_bytes=_downloaded_bytes(node, run.run_id, notes),
        efs_bytes=_folder_bytes(node, run.run_id),
        efs_seconds=max(span, 0.0),
    )
    return C.run_cost(usage, table, notes=notes)


def _overrides(raw: str) -> C.PriceOverrides | None:
    try:
        return C.PriceOverrides.model_validate_json(raw or "{}")
    except ValueError:
        log.error("COST_PRICES is not a valid costPrices object; list prices used")
        return None


# ------------------------------------------------------------------ ECS tasks


def _tasks(
    node: Node,
    run: RunRecord,
    steps: list[StepRecord],
    workflow: Workflow | None,
    now: datetime,
    notes: list[str],
) -> Iterator[C.TaskUsage]:
    recorded = node.store.step_tasks(run.run_id)
    # A lambda step's invocations are recorded beside tasks; the histories bill them (processor:<id>).
    owner = {arn: pid for pid, arns in recorded.items() for arn in arns if not is_invocation_attempt(arn)}
    described: dict[str, dict[str, Any]] = {}
    arns = sorted(owner)
    for start in range(0, len(arns), DESCRIBE_BATCH):
        chunk = arns[start : start + DESCRIBE_BATCH]
        try:
            response = node.ecs.describe_tasks(cluster=node.config.cluster_arn, tasks=chunk)
        except Exception as exc:
            if error_code(exc) not in ("ClusterNotFoundException", "AccessDeniedException"):
                raise
            break
        described.update({task["taskArn"]: task for task in response.get("tasks", [])})
    processors = {p.id: p for p in workflow.processors} if workflow else {}
    spans = {s.processor_id: s for s in steps}
    missing = 0
    for arn in arns:
        pid = owner[arn]
        task = described.get(arn, {})
        processor, step = processors.get(pid), spans.get(pid)
        begin = task.get("pullStartedAt") or task.get("startedAt") or task.get("createdAt")
        if begin is not None and (processor is not None or "cpu" in task):
            stop = task.get("stoppedAt") or now
            cpu = int(task.get("cpu") or processor.cpu)
            memory = int(task.get("memory") or processor.memory)
            seconds = (stop - begin).total_seconds()
            yield C.TaskUsage(pid, cpu, memory, seconds, _architecture(task), **_gpu(node, processor))
            continue
        missing += 1
        if processor is None or step is None:
            continue
        end = step.finished_at or now
        seconds = (end - step.started_at).total_seconds() if step.started_at else 0.0
        yield C.TaskUsage(pid, processor.cpu, processor.memory, seconds, **_gpu(node, processor))
    if missing:
        notes.append(
            f"{missing} task(s) not described by ECS (gone after about an hour): costed from their step's span"
        )


def _gpu(node: Node, processor: Any) -> dict[str, Any]:
    """A gpu task's GPUs and the instance type it is priced at: the first the node's group launches."""
    if processor is None or not processor.gpu_count or not node.config.gpu_instance_types:
        return {}
    return {"gpus": processor.gpu_count, "instance_type": node.config.gpu_instance_types[0]}


def _architecture(task: Mapping[str, Any]) -> C.Architecture:
    for attribute in task.get("attributes", []):
        if attribute.get("name") == "ecs.cpu-architecture" and attribute.get("value") == "arm64":
            return C.Architecture.ARM64
    return C.Architecture.X86_64


# ------------------------------------------------------------------ Step Functions histories


PROCESSOR_FUNCTION = C.PROCESSOR_FUNCTION  # a lambda processor's invocations: "processor:<id>"


@dataclass
class _History:
    transitions: int = 0
    lambdas: dict[str, tuple[int, float]] = None  # function -> (invocations, seconds)

    def __post_init__(self) -> None:
        self.lambdas = self.lambdas or {}

    def add_lambda(self, function: str, seconds: float) -> None:
        count, total = self.lambdas.get(function, (0, 0.0))
        self.lambdas[function] = (count + 1, total + seconds)


def _histories(node: Node, execution_arn: str | None, notes: list[str]) -> _History:
    found = _History()
    if not execution_arn:
        return found
    try:
        events = list(_events(node, execution_arn))
    except Exception as exc:
        if error_code(exc) not in MISSING:
            raise
        notes.append(f"execution history unavailable ({error_code(exc)}): transitions not counted")
        return found
    _count(events, found)
    for event in events:
        map_run = event.get("mapRunStartedEventDetails", {}).get("mapRunArn")
        if map_run:
            _count_map_run(node, map_run, found, notes)
    for child in _child_executions(node, execution_arn, events):
        part = _histories(node, child, notes)
        found.transitions += part.transitions
        for function, (count, seconds) in part.lambdas.items():
            have_count, have_seconds = found.lambdas.get(function, (0, 0.0))
            found.lambdas[function] = (have_count + count, have_seconds + seconds)
    return found


def _child_executions(node: Node, execution_arn: str, events: list[dict[str, Any]]) -> list[str]:
    """A split workflow's child executions (``startExecution.sync:2``, pennflow.workflow.asl_split):
    their ARNs are in the started tasks' output, which only a read with the execution data shows,
    so the history is read again with it only when the execution started a child."""
    if not any(_starts_child(event) for event in events):
        return []
    pages = node.sfn.get_paginator("get_execution_history").paginate(
        executionArn=execution_arn, includeExecutionData=True
    )
    children = []
    for page in pages:
        for event in page.get("events", []):
            if _starts_child(event):
                output = event["taskSubmittedEventDetails"].get("output") or "{}"
                arn = json.loads(output).get("ExecutionArn")
                if arn:
                    children.append(arn)
    return children


def _starts_child(event: Mapping[str, Any]) -> bool:
    details = event.get("taskSubmittedEventDetails", {})
    return event["type"] == "TaskSubmitted" and details.get("resourceType") == "states"


def _count_map_run(node: Node, map_run_arn: str, found: _History, notes: list[str]) -> None:
    """A Distributed Map's child executions (one per batch); past MAX_CHILD_HISTORIES, the rest are
    taken to be like the ones read, so a 10,000-batch map does not outlast finalize's timeout."""
    children = _map_run_children(node, map_run_arn)
    read = children[:MAX_CHILD_HISTORIES]
    part = _History()
    for child in read:
        _count(list(_events(node, child)), part)
    scale = len(children) / len(read) if read else 0.0
    if scale > 1:
        notes.append(
            f"{len(children)} child executions of a map run: {len(read)} read, the rest extrapolated"
        )
    found.transitions += round(part.transitions * scale)
    for function, (count, seconds) in part.lambdas.items():
        have_count, have_seconds = found.lambdas.get(function, (0, 0.0))
        found.lambdas[function] = (have_count + round(count * scale), have_seconds + seconds * scale)


def _events(node: Node, execution_arn: str) -> Iterator[dict[str, Any]]:
    pages = node.sfn.get_paginator("get_execution_history").paginate(
        executionArn=execution_arn, includeExecutionData=False
    )
    for page in pages:
        yield from page.get("events", [])


def _map_run_children(node: Node, map_run_arn: str) -> list[str]:
    pages = node.sfn.get_paginator("list_executions").paginate(mapRunArn=map_run_arn)
    return [execution["executionArn"] for page in pages for execution in page.get("executions", [])]


def _count(events: list[dict[str, Any]], found: _History) -> None:
    by_id = {event["id"]: event for event in events}
    started: dict[int, tuple[datetime, str | None]] = {}
    for event in sorted(events, key=lambda e: e["id"]):
        kind = event["type"]
        if kind.endswith("StateEntered"):
            found.transitions += 1
        elif (
            kind == "TaskStarted" and event.get("taskStartedEventDetails", {}).get("resourceType") == "lambda"
        ):
            scheduled = by_id.get(event.get("previousEventId", -1), {})
            started[event["id"]] = (event["timestamp"], _processor_invoked(scheduled))
        elif kind in ("TaskSucceeded", "TaskFailed", "TaskTimedOut"):
            begin, processor_id = started.pop(event.get("previousEventId", -1), (None, None))
            if begin is not None:
                state = _state_of(event, by_id)
                function = PROCESSOR_FUNCTION + processor_id if processor_id else _function_of(state)
                seconds = (event["timestamp"] - begin).total_seconds()
                # A join's wait spans the dependencies' run, not the function's: it is billed one call.
                found.add_lambda(function, JOIN_CALL_SECONDS if function == "join" else seconds)


def _state_of(event: Mapping[str, Any], by_id: Mapping[int, Any]) -> str:
    walk: Any = event
    while walk is not None:  # back to the state the task ran in (parallel branches interleave)
        name = walk.get("stateEnteredEventDetails", {}).get("name")
        if name is not None:
            return name
        walk = by_id.get(walk.get("previousEventId"))
    return ""


def _function_of(name: str) -> str:
    """The compiler's state names say which function a Lambda task calls (pennflow.workflow.asl)."""
    if name.endswith((" download", " verify")):
        return "download"
    if name.endswith(" batches"):
        return "list_batches"
    if name.endswith((WAIT_SUFFIX, DONE_SUFFIX)):
        return "join"
    return "finalize"


def _processor_invoked(scheduled: Mapping[str, Any]) -> str | None:
    """The computeType lambda processor a TaskScheduled event invokes (its resolved parameters)."""
    details = scheduled.get("taskScheduledEventDetails", {})
    try:
        parameters = json.loads(details.get("parameters") or "{}")
    except ValueError:
        return None
    return invoked_processor(parameters) if isinstance(parameters, dict) else None


def _memory(function: str, workflow: Workflow | None = None) -> int:
    """A processor's function has the processor's memory (its definition's, as the function was made)."""
    if function.startswith(PROCESSOR_FUNCTION) and workflow is not None:
        processors = {p.id: p for p in workflow.processors}
        processor = processors.get(function.removeprefix(PROCESSOR_FUNCTION))
        if processor is not None:
            return processor.memory
    return C.DOWNLOAD_FUNCTION_MB if function == "download" else C.LIFECYCLE_FUNCTION_MB


# ------------------------------------------------------------------ bytes


def _downloaded_bytes(node: Node, run_id: str, notes: list[str]) -> int:
    from pennflow.data.datasource import ManifestLocation, manifest_key, read_run_manifest

    location = ManifestLocation(bucket=node.config.results_bucket, key=manifest_key(run_id))
    try:
        batches = read_run_manifest(location, s3=node.s3)
    except Exception as exc:
        if error_code(exc) in ("NoSuchKey", "404", "AccessDenied"):
            return 0  # no data source: nothing downloaded
        notes.append(f"download manifest unreadable ({exc}): NAT bytes not counted")
        return 0
    return sum(item.size for batch in batches for item in batch)


def _folder_bytes(node: Node, run_id: str) -> int:
    """The run's files on EFS: its slot folder while it holds one, else its kept folder."""
    slot = node.slots.held_by(run_id)
    try:
        folder = node.folders.slot_dir(slot) if slot is not None else node.folders.run_dir(run_id)
    except ValueError:
        return 0
    return folder_bytes(folder)
