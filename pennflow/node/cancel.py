"""Cancel a run on the node: CANCELING, StopExecution, StopTask, then finalize.

Its own module because it ends a run through ``finalize`` and finalize starts queued runs through
``lifecycle``: keeping it here keeps both free of an import cycle.
"""

from __future__ import annotations

from pennflow.aws import error_code
from pennflow.node.finalize import finalize_run
from pennflow.node.lifecycle import (
    CANCEL_REASON,
    Node,
    RunNotFound,
    layer_names,
    live_tasks,
    release_when_idle,
    stop_execution,
)
from pennflow.workflow.runs import Status, utcnow


def cancel_run(run_id: str, node: Node, reason: str = CANCEL_REASON) -> Status:
    """Stop a run: its execution and tasks; the status it ends in (CANCELED, or how it had ended)."""
    run = node.store.get_run(run_id)
    if run is None:
        raise RunNotFound(run_id)
    if run.status.is_terminal:
        return run.status
    if run.status is Status.NOT_STARTED and _cancel_before_start(run_id, node, reason):
        return Status.CANCELED
    if not node.store.update_run(run_id, Status.CANCELING, reason=reason):
        latest = node.store.get_run(run_id)
        if latest is not None and latest.status is not Status.CANCELING:
            return latest.status  # it ended meanwhile
    if run.execution_arn:
        stop_execution(node, run.execution_arn, reason)
    slot = node.slots.held_by(run_id)
    if slot is not None:
        for task in live_tasks(node, slot):
            _stop_task(node, task, reason)
    return finalize_run(run_id, "CANCELED", None, node).status


def _cancel_before_start(run_id: str, node: Node, reason: str) -> bool:
    """Queued, or not handed to a slot yet: nothing runs, so the run is canceled at once."""
    waiting = node.slots.dequeue(run_id) or node.slots.held_by(run_id) is None
    if not (waiting and node.store.update_run(run_id, Status.CANCELED, reason=reason, finished_at=utcnow())):
        return False
    _unpin_layers(run_id, node)
    held = node.slots.held_by(run_id)  # handed on half-prepared: it kept a slot, but no task ever ran
    if held is not None:
        release_when_idle(run_id, node, held, tasks_all_stopped=True)
    return True


def _unpin_layers(run_id: str, node: Node) -> None:
    """Let go of the layer versions a run pinned (its definition says which layers)."""
    run = node.store.get_run(run_id)
    version = node.workflows.get_version(run.workflow, run.definition_hash) if run else None
    if run is not None and version is not None:
        node.layers.unpin(layer_names(run, version.workflow()), run_id)


def _stop_task(node: Node, task_arn: str, reason: str) -> None:
    try:
        node.ecs.stop_task(cluster=node.config.cluster_arn, task=task_arn, reason=reason[:255])
    except Exception as exc:
        if error_code(exc) not in ("InvalidParameterException", "ClientException"):
            raise
