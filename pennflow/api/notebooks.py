"""The notebook-session routes of the REST API (a Powertools ``Router``, included under ``/notebooks``).

A session is a run (``pennflow.node.notebooks``): POST creates it NOT_STARTED and hands it to the
notebooks function, which starts its task; it appears in ``GET /runs`` like any run. Only the
principals of the node's ``notebookPrincipals`` setting may start, read or stop one; on a node
without the ``interactive`` setting every route answers 409 naming it.

Imported only by the AWS side (it imports Powertools at module level).
"""

from __future__ import annotations

import json
import os
from functools import cache
from typing import Annotated, Any, Protocol

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.depends import Depends
from aws_lambda_powertools.event_handler.openapi.params import Path
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic.alias_generators import to_camel

from pennflow import aws
from pennflow.api.errors import ApiError, Conflict, InvalidRequest, NotFound, field_error
from pennflow.api.layers import layer_registry
from pennflow.api.models import RUN_ID_PATTERN, ErrorBody
from pennflow.api.openapi_docs import errors, ok
from pennflow.layers.models import LayerName, LayerRecord, LayerStatus
from pennflow.layers.registry import LayerRegistry
from pennflow.node import notebook_runs as sessions
from pennflow.notebooks.environments import for_notebooks, misfit_reason
from pennflow.stores.base import RunStore
from pennflow.workflow.limits import FARGATE_MEMORY
from pennflow.workflow.runs import Status, new_run_id

ENV_FUNCTION = "NOTEBOOKS_FUNCTION_NAME"
ENV_PRINCIPALS = "NOTEBOOK_PRINCIPALS"
ENV_PYTHON = "NOTEBOOK_PYTHON"
ENV_IDLE = "NOTEBOOK_IDLE_MINUTES"
ENV_CLUSTER = "CLUSTER_ARN"
ENV_PARAMETERS = "SLOT_PARAMETER_PREFIX"
MAX_SESSION_LAYERS = 20

router = Router()
FORBIDDEN = {
    403: {
        "description": "The caller is not one of the node's notebookPrincipals",
        "content": {"application/json": {"model": ErrorBody}},
    }
}

RunId = Annotated[str, Path(pattern=RUN_ID_PATTERN, description="The session's run id.")]


# ------------------------------------------------------------------ ports


class Forbidden(ApiError):
    status, code = 403, "forbidden"


@cache
def session_settings() -> dict[str, Any]:
    """The node's notebook settings, as the stack put them in the API's environment."""
    principals = [p for p in os.environ.get(ENV_PRINCIPALS, "").split(",") if p]
    return {
        "function": os.environ.get(ENV_FUNCTION) or None,
        "principals": principals,
        "python": os.environ.get(ENV_PYTHON, "3.12"),
        "idle_minutes": int(os.environ.get(ENV_IDLE, "60")),
        "cluster": os.environ.get(ENV_CLUSTER, ""),
        "parameters": os.environ.get(ENV_PARAMETERS, ""),
    }


class SessionHandoff(Protocol):
    def send(self, action: str, run_id: str) -> None: ...


class AsyncSessions:
    """Hands ``{"action", "runId"}`` to the notebooks function (asynchronous: the API answers at once)."""

    def __init__(self, function_name: str):
        self.function_name = function_name

    def send(self, action: str, run_id: str) -> None:
        payload = json.dumps({"action": action, "runId": run_id}).encode()
        aws.client("lambda").invoke(FunctionName=self.function_name, InvocationType="Event", Payload=payload)


@cache
def session_handoff() -> SessionHandoff:
    return AsyncSessions(session_settings()["function"] or "")


@cache
def session_store() -> Any:
    from pennflow.stores.dynamodb import DynamoRunStore

    return DynamoRunStore(os.environ["RUNS_TABLE"])


@cache
def session_tasks() -> Any:
    """ECS, to describe a session's task (its container's runtime id is the connect target)."""
    return aws.client("ecs")


Settings = Annotated[dict, Depends(session_settings)]
Handoff = Annotated[SessionHandoff, Depends(session_handoff)]
Store = Annotated[Any, Depends(session_store)]  # a DynamoRunStore: it also lists a step's tasks
Layers = Annotated[LayerRegistry, Depends(layer_registry)]
Tasks = Annotated[Any, Depends(session_tasks)]


# ------------------------------------------------------------------ bodies


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class SessionRequest(_Model):
    """What ``pennflow notebook start --remote`` sends."""

    layers: list[LayerName] = Field(
        default_factory=list, max_length=MAX_SESSION_LAYERS, description="Layers mounted read-only."
    )
    dataset_id: str | None = Field(None, min_length=1, max_length=128)
    package_ids: list[str] = Field(default_factory=list, max_length=100)
    cpu: int = Field(sessions.DEFAULT_CPU, description="Fargate CPU units (1024 = 1 vCPU).")
    memory: int = Field(sessions.DEFAULT_MEMORY, description="MiB; a valid Fargate size for the cpu.")

    @field_validator("layers")
    @classmethod
    def _once_each(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))

    @field_validator("cpu")
    @classmethod
    def _fargate_cpu(cls, value: int) -> int:
        if value not in FARGATE_MEMORY:
            raise ValueError(f"Fargate offers cpu {', '.join(map(str, FARGATE_MEMORY))}")
        return value

    @field_validator("memory")
    @classmethod
    def _fargate_memory(cls, value: int, info: ValidationInfo) -> int:
        cpu = info.data.get("cpu")
        sizes = FARGATE_MEMORY.get(cpu) if cpu else None
        if sizes and value not in sizes:
            raise ValueError(
                f"{value} MiB does not fit cpu {cpu}: Fargate offers {sizes[0]}-{sizes[-1]} MiB in steps of "
                f"{sizes[1] - sizes[0]} for it"
            )
        return value

    @model_validator(mode="after")
    def _packages_need_a_dataset(self) -> SessionRequest:
        if self.package_ids and not self.dataset_id:
            raise ValueError("packageIds needs datasetId")
        return self


class SessionAccepted(_Model):
    run_id: str
    status: Status
    workflow: str = sessions.WORKFLOW
    layers: list[str]
    python_version: str
    idle_minutes: int
    connect: str = Field(description="The command that opens the session once its task runs.")


class ConnectInfo(_Model):
    """What ``pennflow notebook connect`` needs: no secret (the token is an SSM SecureString that only
    the notebook users' policy may read)."""

    target: str = Field(description="SSM target ecs:<cluster>_<task id>_<container runtime id>.")
    document: str = sessions.PORT_FORWARDING_DOCUMENT
    port: int = sessions.PORT
    token_parameter: str = Field(description="The SSM parameter holding the server's token.")


class SessionView(_Model):
    run_id: str
    status: Status
    reason: str | None = None
    layers: list[str]
    cpu: int
    memory: int
    task_arn: str | None = None
    task_status: str | None = None
    cluster: str | None = None
    connect: ConnectInfo | None = Field(None, description="Set while the server's container runs.")
    cost: dict[str, Any] | None = None


class NotebookLayer(_Model):
    name: str
    type: str
    version: int
    python_version: str | None = None


class NotebookLayers(_Model):
    python_version: str = Field(description="The Python of the node's notebook image.")
    layers: list[NotebookLayer]


# ------------------------------------------------------------------ checks


def require_sessions(settings: dict[str, Any], caller: str | None) -> None:
    """409 on a node without the interactive setting; 403 for a caller not in notebookPrincipals."""
    if not settings["function"]:
        raise Conflict(
            "this node has no notebook sessions: set interactive true (and notebookPrincipals) in the "
            "node's settings, the pennflow object of cdk.json's context, and deploy again",
            code="notebooks_disabled",
        )
    if not caller_allowed(caller, settings["principals"]):
        raise Forbidden(
            f"{caller or 'the caller'} is not one of the node's notebookPrincipals: ask the node's owner to "
            "add your role or user to that setting",
            code="not_a_notebook_user",
        )


def caller_allowed(caller: str | None, principals: list[str]) -> bool:
    """Is the signed caller one of ``principals`` (role or user ARNs)? An assumed-role session
    (``arn:aws:sts::<account>:assumed-role/<name>/<session>``) is its role; IAM paths are not in
    that ARN, so a role is matched by account and name."""
    if not caller:
        return False
    return _identity(caller) in {_identity(p) for p in principals}


def _identity(arn: str) -> tuple[str, str, str]:
    parts = arn.split(":", 5)
    if len(parts) < 6:
        return ("", "", arn)
    account, resource = parts[4], parts[5]
    kind, _, rest = resource.partition("/")
    if kind == "assumed-role":
        return (account, "role", rest.split("/", 1)[0])
    return (account, kind, rest.rsplit("/", 1)[-1])


def check_layers(names: list[str], registry: LayerRegistry, python_version: str) -> None:
    """Every layer exists, is published, and fits the session's Python (Pennsieve's rule)."""
    problems = []
    for index, name in enumerate(names):
        record: LayerRecord | None = registry.get(name)
        if record is None:
            problems.append((index, f"no layer {name!r} on this node"))
        elif record.status is not LayerStatus.READY and record.version == 0:
            problems.append((index, f"layer {name!r} has no published version yet ({record.status.value})"))
        else:
            reason = misfit_reason(record, python_version)
            if reason:
                problems.append((index, reason))
    if problems:
        raise InvalidRequest(
            "; ".join(message for _, message in problems),
            fields=[field_error(f"layers.{index}", message) for index, message in problems],
            code="layer_not_for_notebooks",
        )


# ------------------------------------------------------------------ routes


@router.post(
    "/",
    operation_id="startNotebook",
    summary="Start a notebook session",
    description="Creates the session's run (workflow notebook) and hands it to the node, which starts a "
    "Fargate task with the layers mounted read-only in a run slot (202). Layers must fit the notebook "
    "image's Python. Connect with `pennflow notebook connect RUN` once it is STARTED.",
    tags=["notebooks"],
    responses={**ok(SessionAccepted, "Session accepted", 202), **errors(400, 409, 415, 422), **FORBIDDEN},
)
def post_notebook(
    request: SessionRequest, settings: Settings, handoff: Handoff, store: Store, layers: Layers
) -> Response[SessionAccepted]:
    require_sessions(settings, _caller())
    if request.dataset_id:
        message = (
            "a node session does not download a dataset itself yet: populate a data layer from it "
            "(`pennflow layers populate NAME --dataset ID --remote`) and mount that layer"
        )
        raise InvalidRequest(
            message, fields=[field_error("datasetId", message)], code="dataset_not_supported"
        )
    check_layers(request.layers, layers, settings["python"])
    run_id = new_run_id()
    run, step = sessions.new_session(
        run_id, layers=request.layers, size=sessions.SessionSize(request.cpu, request.memory)
    )
    store.create_run(run, [step])
    handoff.send("start", run_id)
    accepted = SessionAccepted(
        run_id=run_id,
        status=Status.NOT_STARTED,
        layers=request.layers,
        python_version=settings["python"],
        idle_minutes=settings["idle_minutes"],
        connect=f"pennflow notebook connect {run_id}",
    )
    return Response(202, "application/json", accepted)


@router.get(
    "/layers",
    operation_id="listNotebookLayers",
    summary="The layers a notebook session can mount",
    description="Data layers, and python-env layers built for the notebook image's Python minor version.",
    tags=["notebooks"],
    responses={**ok(NotebookLayers), **errors(409, 422), **FORBIDDEN},
)
def get_notebook_layers(settings: Settings, layers: Layers) -> NotebookLayers:
    require_sessions(settings, _caller())
    fitting = for_notebooks(layers.list(), settings["python"])
    return NotebookLayers(
        python_version=settings["python"],
        layers=[
            NotebookLayer(name=r.name, type=r.type.value, version=r.version, python_version=r.python_version)
            for r in fitting
            if r.version > 0
        ],
    )


@router.get(
    "/<run_id>",
    operation_id="getNotebook",
    summary="A notebook session: status, task and what connecting needs (no secret)",
    tags=["notebooks"],
    responses={**ok(SessionView), **errors(404, 409, 422), **FORBIDDEN},
)
def get_notebook(run_id: RunId, settings: Settings, store: Store, tasks: Tasks) -> SessionView:
    require_sessions(settings, _caller())
    run = _session(store, run_id)
    size = sessions.SessionSize.of(run)
    arns = store.step_tasks(run_id).get(sessions.WORKFLOW, [])
    view = SessionView(
        run_id=run_id,
        status=run.status,
        reason=run.reason,
        layers=[layer["name"] for layer in run.layers if layer.get("name")],
        cpu=size.cpu,
        memory=size.memory,
        task_arn=arns[-1] if arns else None,
        cluster=settings["cluster"] or None,
        cost=run.cost,
    )
    if view.task_arn and run.status is Status.STARTED and settings["cluster"]:
        described = tasks.describe_tasks(
            cluster=settings["cluster"], tasks=[view.task_arn], include=["TAGS"]
        ).get("tasks", [])
        task = described[0] if described else {}
        view.task_status = task.get("lastStatus")
        target = sessions.connect_target(settings["cluster"], task) if task else None
        slot = _slot_of(task)
        if target and task.get("lastStatus") == "RUNNING" and slot:
            parameter = f"{settings['parameters']}{slot}/{sessions.TOKEN_PARAMETER}"
            view.connect = ConnectInfo(target=target, token_parameter=parameter)
    return view


@router.post(
    "/<run_id>/stop",
    operation_id="stopNotebook",
    summary="Stop a notebook session (its working area's files are kept for the retention period)",
    tags=["notebooks"],
    responses={**ok(SessionView, "Stop requested", 202), **errors(404, 409, 422), **FORBIDDEN},
)
def post_notebook_stop(
    run_id: RunId, settings: Settings, store: Store, handoff: Handoff
) -> Response[SessionView]:
    require_sessions(settings, _caller())
    run = _session(store, run_id)
    if run.status.is_terminal:
        raise Conflict(f"session {run_id!r} has already ended: {run.status.value}")
    handoff.send("stop", run_id)
    size = sessions.SessionSize.of(run)
    view = SessionView(
        run_id=run_id,
        status=run.status,
        reason="stop requested: the working area's files are kept",
        layers=[layer["name"] for layer in run.layers if layer.get("name")],
        cpu=size.cpu,
        memory=size.memory,
    )
    return Response(202, "application/json", view)


def _session(store: RunStore, run_id: str):
    run = store.get_run(run_id)
    if run is None or run.workflow != sessions.WORKFLOW:
        raise NotFound(
            f"no notebook session {run_id!r}", fields=[field_error("run_id", "no such session", "path")]
        )
    return run


def _slot_of(task: dict[str, Any]) -> str | None:
    tags = {tag.get("key"): tag.get("value") for tag in task.get("tags", [])}
    return tags.get(sessions.SLOT_TAG)


def _caller() -> str | None:
    identity = router.current_event.request_context.identity
    return identity.user_arn
