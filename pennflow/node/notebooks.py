"""Notebook sessions on the compute node: one Fargate task per session, in a run slot, reached by SSM.

A session is a run (workflow ``notebook``, one step ``notebook``), as it is locally
(``pennflow.notebooks.session``): created NOT_STARTED by the API, then

    start_session(run_id, node, sessions)  lease a free slot, write the session's token and run id to
        the slot's parameters, register the session's task definition (content-addressed and kept
        per slot, like processors', so a second session with the same layers and size registers
        nothing), RunTask with ECS Exec enabled and no public IP; the run is STARTED.
    stop_session(run_id, node)  StopTask; what follows is the task's STOPPED event.
    session_stopped(task, node)  the STOPPED event: the run ends (SUCCEEDED when stopped or idle,
        FAILED when the server exited with an error), its cost is measured like a run's
        (``pennflow.node.run_cost``) and the slot is released: the working area's files move to
        ``/runs/<run_id>/`` and are kept for the node's retention (``pennflow.node.lifecycle``).

What the task sees: the slot's folder at /mnt/run (read-write; the server's root is
/mnt/run/notebook/workspace, as runs/<run>/notebook/workspace locally), each requested layer at
/mnt/layers/<name> (read-only), and a scratch folder on the task's own storage for ``pip install``,
HOME and Jupyter's runtime files: it goes with the task, so a live install lasts one session.
The server listens on 127.0.0.1 only; the user reaches it through SSM port forwarding
(``pennflow notebook connect``), so the session's security group has no ingress rule at all.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from pennflow.aws import error_code
from pennflow.node.notebook_runs import (
    CONTAINER,
    GROUP,
    PORT,
    ROLE_KIND,
    SCRATCH,
    SESSION_TAG,
    STOPPED_BY_REQUEST,
    TOKEN_PARAMETER,
    WORKFLOW,
    WORKSPACE,
    SessionSize,
)
from pennflow.node.taskdefs import (
    RUN_ID_PARAMETER,
    RUN_VOLUME,
    SLOT_TAG,
    _efs_volume,
    _layer_environment,
    _logs,
    family,
)
from pennflow.notebooks.jupyter_idle import jupyter_idle_arguments
from pennflow.workflow.contract import LAYERS_MOUNT, RUN_MOUNT
from pennflow.workflow.cost_tags import NODE_TAG
from pennflow.workflow.definition import Processor, Workflow
from pennflow.workflow.runs import RunRecord, Status, utcnow

if TYPE_CHECKING:  # the API imports this module for its names and records: it stays light
    from pennflow.node.lifecycle import Node
    from pennflow.node.slots import Slot

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SessionSettings:
    """What the node's settings give sessions (``interactive`` and the notebook settings)."""

    image: str
    python_version: str
    idle_minutes: int
    security_group: str
    log_group: str
    family_prefix: str


@dataclass(frozen=True)
class Started:
    run_id: str
    outcome: str  # started | failed | skipped
    detail: str = ""
    slot_id: str | None = None
    task_arn: str | None = None


def session_workflow(run: RunRecord, image: str = "notebook") -> Workflow:
    """The session as a one-processor workflow, for what reads runs by their processors (its cost:
    a task ECS no longer describes is costed from the step's span at the session's size)."""
    size = SessionSize.of(run)
    return Workflow(
        name=WORKFLOW, processors=[Processor(id=WORKFLOW, image=image, cpu=size.cpu, memory=size.memory)]
    )


def jupyter_command(settings: SessionSettings) -> list[str]:
    """The server on loopback in the task, rooted at the working area, stopped by the idle rule.

    The token comes from ``JUPYTER_TOKEN`` (a task-definition secret), never from argv."""
    server = [
        "python", "-m", "jupyter_server",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={PORT}",
        "--ServerApp.port_retries=0",
        "--ServerApp.open_browser=False",
        f"--ServerApp.root_dir={WORKSPACE}",
        *jupyter_idle_arguments(settings.idle_minutes * 60),
    ]  # fmt: skip
    prepare = f'mkdir -p {WORKSPACE} "$PIP_TARGET" "$HOME" && exec "$@"'
    return ["sh", "-c", prepare, "notebook", *server]


def registration(
    slot: Slot,
    *,
    layers: Mapping[str, str],
    size: SessionSize,
    node: Node,
    sessions: SessionSettings,
) -> dict[str, Any]:
    """The session's ``RegisterTaskDefinition`` request: nothing in it names the run, so it is
    content-addressed per (image, size, layers, slot) and sessions reuse it."""
    tasks = node.task_definitions.settings
    volumes = [_efs_volume(RUN_VOLUME, tasks.file_system_id, slot.access_point_id)]
    mounts = [{"sourceVolume": RUN_VOLUME, "containerPath": str(RUN_MOUNT), "readOnly": False}]
    for name in sorted(layers):
        volume = f"layer-{name}"
        volumes.append(_efs_volume(volume, tasks.file_system_id, layers[name]))
        mounts.append({"sourceVolume": volume, "containerPath": str(LAYERS_MOUNT / name), "readOnly": True})
    environment = _session_environment(sorted(layers))
    secrets_ = [
        {"name": "PENNFLOW_RUN_ID", "valueFrom": tasks.slot_parameter_arn(slot.slot_id, RUN_ID_PARAMETER)}
    ]
    secrets_.append(
        {"name": "JUPYTER_TOKEN", "valueFrom": tasks.slot_parameter_arn(slot.slot_id, TOKEN_PARAMETER)}
    )
    container = {
        "name": CONTAINER,
        "image": sessions.image,
        "essential": True,
        "memoryReservation": size.memory,
        "command": jupyter_command(sessions),
        "mountPoints": mounts,
        "environment": environment,
        "secrets": secrets_,
        # ECS Exec runs its agent beside the server; an init process reaps what it leaves behind.
        "linuxParameters": {"initProcessEnabled": True},
        "logConfiguration": _logs(replace(tasks, log_group=sessions.log_group), WORKFLOW),
    }
    return {
        "taskRoleArn": tasks.slot_role_template.format(slot=slot.slot_id, kind=ROLE_KIND),
        "executionRoleArn": tasks.execution_role_arn,
        "networkMode": "awsvpc",
        "requiresCompatibilities": ["FARGATE"],
        "cpu": str(size.cpu),
        "memory": str(size.memory),
        "containerDefinitions": [container],
        "volumes": volumes,
    }


def _session_environment(layers: Sequence[str]) -> list[dict[str, str]]:
    """The contract's layer variables, and the session-only places a local session also gets
    (``pennflow.notebooks.server.session_environment``): live installs first on PYTHONPATH."""
    env = {e["name"]: e["value"] for e in _layer_environment(layers)}
    site = f"{SCRATCH}/site-packages"
    env["PYTHONPATH"] = ":".join([site, *([env["PYTHONPATH"]] if "PYTHONPATH" in env else [])])
    env.update(
        {
            "OUTPUT_DIR": str(WORKSPACE),
            "PIP_TARGET": site,
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            "HOME": f"{SCRATCH}/home",
            "JUPYTER_RUNTIME_DIR": f"{SCRATCH}/runtime",
            "JUPYTER_CONFIG_DIR": f"{SCRATCH}/config",
            "JUPYTER_DATA_DIR": f"{SCRATCH}/data",
            "IPYTHONDIR": f"{SCRATCH}/ipython",
        }
    )
    return [{"name": name, "value": value} for name, value in sorted(env.items())]


# ------------------------------------------------------------------ start


def start_session(run_id: str, node: Node, sessions: SessionSettings, ssm_client: Any = None) -> Started:
    """Start the session's task in a free slot; a session never waits in the queue (it fails, saying why)."""
    from pennflow.node.lifecycle import LayersMissing

    run = node.store.get_run(run_id)
    if run is None or run.workflow != WORKFLOW:
        return Started(run_id, "skipped", "not a notebook session of this node")
    if run.status is not Status.NOT_STARTED:
        return Started(run_id, "skipped", f"the session is {run.status.value}")
    names = [layer["name"] for layer in run.layers if layer.get("name")]
    try:
        access_points = node.layers.pin(names, run_id)
    except LayersMissing as exc:
        return _fail(node, run_id, str(exc))
    slot = node.slots.lease(run_id)
    if slot is None:
        node.layers.unpin(names, run_id)
        return _fail(
            node, run_id, "every run slot is busy: stop a session or wait for a run to end, then start again"
        )
    try:
        node.folders.wipe(slot)
        _write_parameters(node, slot, run_id, ssm_client)
        size = SessionSize.of(run)
        request = registration(slot, layers=access_points, size=size, node=node, sessions=sessions)
        definition = _ensure_definition(node, slot, family(request, sessions.family_prefix), request)
        node.slots.set_run_task_definitions(slot.slot_id, run_id, {WORKFLOW: definition})
        task_arn = _run_task(node, sessions, definition, run_id, slot)
    except Exception as exc:
        log.exception("session %s could not start", run_id)
        node.slots.release(slot.slot_id, run_id)
        node.layers.unpin(names, run_id)
        return _fail(node, run_id, f"could not start: {exc}", slot.slot_id)
    now = utcnow()
    node.store.record_task(run_id, WORKFLOW, task_arn)
    node.store.update_step(run_id, WORKFLOW, Status.STARTED, started_at=now)
    if not node.store.update_run(run_id, Status.STARTED, started_at=now, reason=None):
        stop_task(node, task_arn, "the session was canceled while it started")
        return Started(run_id, "skipped", "canceled while it started", slot.slot_id, task_arn)
    log.info("session %s started in %s: %s", run_id, slot.slot_id, task_arn)
    return Started(run_id, "started", "", slot.slot_id, task_arn)


def _write_parameters(node: Node, slot: Slot, run_id: str, ssm_client: Any) -> None:
    """The slot's run id and a fresh token: ECS puts them in the task's environment when it starts."""
    from pennflow.aws import client as aws_client

    ssm = ssm_client or aws_client("ssm")
    tasks = node.task_definitions.settings
    for leaf, value, kind in (
        (RUN_ID_PARAMETER, run_id, "String"),
        (TOKEN_PARAMETER, secrets.token_urlsafe(32), "SecureString"),
    ):
        ssm.put_parameter(
            Name=tasks.slot_parameter(slot.slot_id, leaf), Value=value, Type=kind, Overwrite=True
        )


def _ensure_definition(node: Node, slot: Slot, fam: str, request: dict[str, Any]) -> str:
    known = slot.task_definitions.get(fam)
    if known:
        return known
    try:
        found = node.ecs.describe_task_definition(taskDefinition=fam)["taskDefinition"]
        arn = found["taskDefinitionArn"] if found.get("status", "ACTIVE") == "ACTIVE" else None
    except Exception as exc:
        if error_code(exc) != "ClientException":
            raise
        arn = None
    if arn is None:
        tags = [{"key": SLOT_TAG, "value": slot.slot_id}, {"key": SESSION_TAG, "value": "definition"}]
        node_name = node.task_definitions.settings.node_name
        if node_name:
            tags.append({"key": NODE_TAG, "value": node_name})
        arn = node.ecs.register_task_definition(family=fam, tags=tags, **request)["taskDefinition"][
            "taskDefinitionArn"
        ]
    node.slots.remember_task_definition(slot.slot_id, fam, arn)
    return arn


def _run_task(node: Node, sessions: SessionSettings, definition: str, run_id: str, slot: Slot) -> str:
    config = node.config
    tags = [{"key": SESSION_TAG, "value": run_id}, {"key": SLOT_TAG, "value": slot.slot_id}]
    if node.task_definitions.settings.node_name:
        tags.append({"key": NODE_TAG, "value": node.task_definitions.settings.node_name})
    response = node.ecs.run_task(
        cluster=config.cluster_arn,
        taskDefinition=definition,
        count=1,
        launchType="FARGATE",
        platformVersion="LATEST",  # ECS Exec needs Fargate platform 1.4.0 or later
        networkConfiguration={
            "awsvpcConfiguration": {
                "subnets": list(config.subnets),
                "securityGroups": [sessions.security_group],
                "assignPublicIp": "DISABLED",
            }
        },
        enableExecuteCommand=True,
        group=GROUP,
        startedBy=run_id,
        tags=tags,
    )
    tasks = response.get("tasks") or []
    if not tasks:
        reasons = "; ".join(f.get("reason", "?") for f in response.get("failures", [])) or "no task"
        raise RuntimeError(f"RunTask started no task: {reasons}")
    return tasks[0]["taskArn"]


def _fail(node: Node, run_id: str, reason: str, slot_id: str | None = None) -> Started:
    now = utcnow()
    node.store.update_step(run_id, WORKFLOW, Status.FAILED, finished_at=now, reason=reason)
    node.store.update_run(run_id, Status.FAILED, finished_at=now, reason=reason)
    log.warning("session %s failed to start: %s", run_id, reason)
    return Started(run_id, "failed", reason, slot_id)


# ------------------------------------------------------------------ stop and end


def session_task(node: Node, run_id: str) -> str | None:
    """The session's task ARN (recorded on its step when it started)."""
    arns = node.store.step_tasks(run_id).get(WORKFLOW, [])
    return arns[-1] if arns else None


def stop_session(run_id: str, node: Node) -> str:
    """Ask ECS to stop the session's task; the STOPPED event ends the run and frees the slot."""
    run = node.store.get_run(run_id)
    if run is None or run.workflow != WORKFLOW:
        return f"ignored: {run_id} is not a notebook session of this node"
    if run.status is Status.NOT_STARTED:
        node.store.update_run(run_id, Status.CANCELED, finished_at=utcnow(), reason=STOPPED_BY_REQUEST)
        return f"session {run_id}: stopped before it started"
    task = session_task(node, run_id)
    if run.status.is_terminal or task is None:
        return f"session {run_id}: already {run.status.value}"
    node.store.update_run_when(run_id, {Status.STARTED}, reason="stopping: the working area is being kept")
    stop_task(node, task, STOPPED_BY_REQUEST)
    return f"session {run_id}: stop requested ({task})"


def stop_task(node: Node, task_arn: str, reason: str) -> None:
    try:
        node.ecs.stop_task(cluster=node.config.cluster_arn, task=task_arn, reason=reason)
    except Exception as exc:
        if error_code(exc) not in ("InvalidParameterException", "ResourceNotFoundException"):
            raise


def session_stopped(task: Mapping[str, Any], node: Node) -> str:
    """A session's task STOPPED (EventBridge ``ECS Task State Change`` detail): end the run."""
    from pennflow.node.lifecycle import release_when_idle
    from pennflow.node.run_cost import record_run_cost

    run_id = task.get("startedBy") or ""
    run = node.store.get_run(run_id) if run_id else None
    if run is None or run.workflow != WORKFLOW:
        return f"ignored: task {task.get('taskArn')} is not a session of this node"
    status, exit_code, reason = _outcome(task)
    if run.status is Status.CANCELING:  # `pennflow cancel` of a session: CANCELED, as a local one
        status, reason = Status.CANCELED, "canceled"
    now = utcnow()
    if not run.status.is_terminal:
        node.store.update_step(run_id, WORKFLOW, status, finished_at=now, exit_code=exit_code, reason=reason)
        node.store.update_run(run_id, status, finished_at=now, exit_code=exit_code, reason=reason)
    run = node.store.get_run(run_id) or run
    record_run_cost(node, run, node.store.list_steps(run_id), session_workflow(run), now=now)
    node.layers.unpin([layer["name"] for layer in run.layers if layer.get("name")], run_id)
    released = release_when_idle(run_id, node, tasks_all_stopped=True)
    return f"session {run_id}: {run.status.value} ({reason})" + ("" if released else "; slot kept")


def _outcome(task: Mapping[str, Any]) -> tuple[Status, int | None, str]:
    container = next((c for c in task.get("containers", []) if c.get("name") == CONTAINER), {})
    code = container.get("exitCode")
    why = task.get("stoppedReason") or container.get("reason") or ""
    if task.get("stopCode") == "UserInitiated" or why == STOPPED_BY_REQUEST:
        return Status.SUCCEEDED, code, "stopped"
    if code == 0:
        return Status.SUCCEEDED, 0, "the server shut down (idle timeout, or shut down from Jupyter)"
    return Status.FAILED, code, f"the notebook server stopped: {why or f'exit code {code}'}"
