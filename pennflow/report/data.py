"""What a run report shows, gathered from a local run (store, logs, kept definition) or from a node
(``GET /runs/{id}`` and the workflow's registered definition)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from pennflow.workflow.cost import RunCost
from pennflow.workflow.dag import Dag
from pennflow.workflow.definition import Workflow
from pennflow.workflow.runs import RunRecord, StepRecord

LOG_TAIL_LINES = 30
KEPT_DEFINITION = "workflow.json"  # a local run's definition, kept in its folder


def keep_definition(workflow: Workflow, run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / KEPT_DEFINITION).write_text(workflow.model_dump_json(by_alias=True, exclude_none=True))


def kept_definition(run_dir: Path) -> Workflow | None:
    from pennflow.workflow.definition import DefinitionError, validate_definition

    path = run_dir / KEPT_DEFINITION
    try:
        return validate_definition(json.loads(path.read_text()), str(path))
    except (OSError, ValueError, DefinitionError):  # not kept (an older run) or damaged
        return None


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> list[str]:
    """The last lines of a log, read from its end (a log may be large)."""
    try:
        with open(path, "rb") as log:
            size = log.seek(0, 2)
            log.seek(max(0, size - 16_384))
            text = log.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    return text.splitlines()[-lines:]


class AttemptBar(BaseModel):
    attempt: int
    batch: int | None = None
    start: datetime | None = None
    seconds: float | None = None
    exit_code: int | None = None
    ok: bool


class StepReport(BaseModel):
    processor_id: str
    status: str
    level: int = 0
    depends_on: list[str] = Field(default_factory=list)
    attempts: int = 0
    exit_code: int | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_seconds: float | None = None
    cpu_seconds: float | None = None
    peak_rss_bytes: int | None = None
    cost_usd: float | None = None
    reason: str | None = None
    log_tail: list[str] = Field(default_factory=list)
    log_location: str | None = None
    image: str | None = None
    cpu: int | None = None
    memory: int | None = None
    layers: list[str] = Field(default_factory=list)
    bars: list[AttemptBar] = Field(default_factory=list)


class RunReport(BaseModel):
    run_id: str
    workflow: str
    status: str
    origin: str
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    reason: str | None = None
    failed_processor: str | None = None
    definition_hash: str
    definition_known: bool = True  # False: no definition with the run's hash was found
    dataset_id: str | None = None
    content_key: str | None = None
    params: dict[str, dict[str, str]] = Field(default_factory=dict)
    layers: list[dict[str, str]] = Field(default_factory=list)
    steps: list[StepReport]
    cost: RunCost | None = None
    console_url: str | None = None

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None


def from_local(
    run: RunRecord,
    steps: Sequence[StepRecord],
    workflow: Workflow | None,
    tail_of: Callable[[str], tuple[list[str], str | None]],
) -> RunReport:
    """A local run; ``tail_of(processor_id)`` gives the last lines of its log and where the log is."""
    from pennflow.engine.resource_use import AttemptUse, step_use

    known = workflow is not None and workflow.definition_hash() == run.definition_hash
    cost = RunCost.model_validate(run.cost) if run.cost else None
    per_processor = cost.by_processor() if cost else {}
    reports = []
    for step in steps:
        cpu, peak = step_use(step)
        uses = [AttemptUse.model_validate(u) for u in step.resource_use]
        failed = step.status.value not in ("SUCCEEDED", "NOT_STARTED")
        tail, where = tail_of(step.processor_id) if failed else ([], None)
        reports.append(
            StepReport(
                processor_id=step.processor_id,
                status=step.status.value,
                attempts=step.attempts,
                exit_code=step.exit_code,
                started_at=step.started_at,
                finished_at=step.finished_at,
                duration_seconds=step.duration_seconds,
                cpu_seconds=cpu,
                peak_rss_bytes=peak,
                cost_usd=per_processor.get(step.processor_id),
                reason=step.reason,
                log_tail=tail,
                log_location=where or step.log_path,
                bars=_bars(step, uses),
            )
        )
    return _finish(
        RunReport(
            run_id=run.run_id,
            workflow=run.workflow,
            status=run.status.value,
            origin=run.origin,
            created_at=run.created_at,
            started_at=run.started_at,
            finished_at=run.finished_at,
            reason=run.reason,
            failed_processor=run.failed_processor,
            definition_hash=run.definition_hash,
            definition_known=known,
            dataset_id=run.dataset_id,
            content_key=run.content_key,
            params=run.params,
            layers=run.layers,
            steps=reports,
            cost=cost,
        ),
        workflow,
    )


def from_remote(run: Mapping[str, Any], definition: Mapping[str, Any] | None) -> RunReport:
    """A node's run (``GET /runs/{id}``) and its workflow's registered definition, when it has the
    run's hash (another hash means the workflow changed since: the DAG is then the steps alone)."""
    from pennflow.workflow.definition import DefinitionError, validate_definition

    workflow = None
    if definition is not None:
        try:
            workflow = validate_definition(definition.get("definition", definition), "the node's definition")
        except DefinitionError:
            workflow = None
    if workflow is not None and workflow.definition_hash() != run.get("definitionHash"):
        workflow = None
    cost = RunCost.model_validate(run["cost"]) if run.get("cost") else None
    per_processor = cost.by_processor() if cost else {}
    reports = []
    for step in run.get("steps", []):
        record = StepRecord.model_validate(
            {
                "run_id": run["runId"],
                "processor_id": step["processorId"],
                "status": step["status"],
                "attempts": step.get("attempts", 0),
                "exit_code": step.get("exitCode"),
                "started_at": step.get("startedAt"),
                "finished_at": step.get("finishedAt"),
                "reason": step.get("reason"),
                "log_path": step.get("logPath"),
            }
        )
        reports.append(
            StepReport(
                processor_id=record.processor_id,
                status=record.status.value,
                attempts=record.attempts,
                exit_code=record.exit_code,
                started_at=record.started_at,
                finished_at=record.finished_at,
                duration_seconds=record.duration_seconds,
                cost_usd=per_processor.get(record.processor_id),
                reason=record.reason,
                log_location=record.log_path,
                bars=_bars(record, []),
            )
        )
    report = RunReport(
        run_id=run["runId"],
        workflow=run["workflow"],
        status=run["status"],
        origin=run.get("origin", "api"),
        created_at=run.get("createdAt"),
        started_at=run.get("startedAt"),
        finished_at=run.get("finishedAt"),
        reason=run.get("reason"),
        failed_processor=run.get("failedProcessor"),
        definition_hash=run.get("definitionHash", ""),
        definition_known=workflow is not None,
        dataset_id=run.get("datasetId"),
        content_key=run.get("contentKey"),
        params=run.get("params", {}),
        layers=run.get("layers", []),
        steps=reports,
        cost=cost,
        console_url=run.get("consoleUrl"),
    )
    return _finish(report, workflow)


def _bars(step: StepRecord, uses: Sequence[Any]) -> list[AttemptBar]:
    """One bar per attempt: measured ones laid end to end from the step's start (their gaps are
    the retry waits, not known exactly), else one bar for the step's span."""
    if uses and step.started_at is not None:
        bars, offset = [], 0.0
        for use in uses:
            start = step.started_at.timestamp() + offset
            bars.append(
                AttemptBar(
                    attempt=use.attempt,
                    batch=use.batch,
                    start=datetime.fromtimestamp(start, step.started_at.tzinfo),
                    seconds=use.seconds,
                    exit_code=use.exit_code,
                    ok=use.exit_code == 0,
                )
            )
            if use.batch is None:
                offset += use.seconds
        return bars
    if step.started_at is None:
        return []
    return [
        AttemptBar(
            attempt=max(step.attempts, 1),
            start=step.started_at,
            seconds=step.duration_seconds,
            exit_code=step.exit_code,
            ok=step.status.value == "SUCCEEDED",
        )
    ]


def _finish(report: RunReport, workflow: Workflow | None) -> RunReport:
    """Levels, dependencies and each processor's definition, from the workflow when it is known."""
    if workflow is None:
        for index, step in enumerate(report.steps):
            step.level = index
        return report
    levels = Dag.from_workflow(workflow).levels()
    processors = {p.id: p for p in workflow.processors}
    run_layers = [layer.get("name", "") for layer in report.layers]
    for step in report.steps:
        processor = processors.get(step.processor_id)
        step.level = levels.get(step.processor_id, 0)
        if processor is not None:
            step.depends_on = list(processor.dependencies)
            step.image = processor.image
            step.cpu, step.memory = processor.cpu, processor.memory
            step.layers = list(dict.fromkeys([*run_layers, *processor.layers]))
    return report
