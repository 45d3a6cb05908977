"""The names and records of a notebook session, shared by the API and the node's runtime.

Light on purpose: the API imports it on every cold start (``pennflow.node.notebooks`` holds the
runtime, which needs the lifecycle and the task definitions).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pennflow.node.slots import SLOT_TAG
from pennflow.workflow.contract import RUN_MOUNT
from pennflow.workflow.runs import RunRecord, StepRecord

__all__ = ["SLOT_TAG"]

WORKFLOW = "notebook"  # the run's workflow and its one step, as a local session's
CONTAINER = "notebook"
PORT = 8888  # inside the task, on 127.0.0.1: forwarded by SSM, never exposed
GROUP = "pennflow-notebook"  # RunTask's group: how the session events rule picks the tasks out
SESSION_TAG = "pennflow:notebook"  # value: the run id; the notebook users' IAM policy keys on it
ROLE_KIND = "notebook"  # the slot's notebook task role: <node>_<region>_<slot>-notebook
TOKEN_PARAMETER = "notebook-token"
WORKSPACE = RUN_MOUNT / "notebook" / "workspace"
SCRATCH = "/tmp/pennflow-session"  # the task's ephemeral storage: gone when the task stops
STOPPED_BY_REQUEST = "stopped by request"
# SSM's document for port forwarding to a target (here the session's container, by ECS Exec's agent).
PORT_FORWARDING_DOCUMENT = "AWS-StartPortForwardingSession"
DEFAULT_CPU = 1024
DEFAULT_MEMORY = 4096


@dataclass(frozen=True)
class SessionSize:
    cpu: int = DEFAULT_CPU
    memory: int = DEFAULT_MEMORY

    @classmethod
    def of(cls, run: RunRecord) -> SessionSize:
        asked = run.params.get(WORKFLOW, {})
        return cls(int(asked.get("cpu", DEFAULT_CPU)), int(asked.get("memory", DEFAULT_MEMORY)))


def new_session(run_id: str, *, layers: Sequence[str], size: SessionSize) -> tuple[RunRecord, StepRecord]:
    """The run and step records of a session the API accepted (NOT_STARTED until its task runs)."""
    run = RunRecord(
        run_id=run_id,
        workflow=WORKFLOW,
        definition_hash=WORKFLOW,
        layers=[{"name": name} for name in layers],
        params={WORKFLOW: {"cpu": str(size.cpu), "memory": str(size.memory)}},
        origin="api",
    )
    return run, StepRecord(run_id=run_id, processor_id=WORKFLOW)


def connect_target(cluster_arn: str, task: Mapping[str, Any]) -> str | None:
    """SSM's target for a container of a task: ``ecs:<cluster>_<task id>_<container runtime id>``
    (the form the AWS CLI's ``ecs execute-command`` builds); None until the container runs."""
    container = next((c for c in task.get("containers", []) if c.get("name") == CONTAINER), {})
    runtime = container.get("runtimeId")
    if not runtime:
        return None
    cluster = cluster_arn.rsplit("/", 1)[-1]
    return f"ecs:{cluster}_{task['taskArn'].rsplit('/', 1)[-1]}_{runtime}"
