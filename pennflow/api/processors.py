"""The processors routes of the REST API (a Powertools ``Router``, included under ``/processors``):
register a repository@tag (its build starts at once, 202), list them, get one.

Workflow registration registers its sourceUrl processors the same way (``register_sources``), and a
run start pins their images by digest (``pin_run_images``), refusing one that is not READY with 409
naming the processor and why. Imported only by the AWS side (Powertools at module level).
"""

from __future__ import annotations

import os
from datetime import datetime
from functools import cache
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.depends import Depends
from aws_lambda_powertools.event_handler.openapi.params import Path
from pydantic import BaseModel, ConfigDict, StringConstraints, field_validator
from pydantic.alias_generators import to_camel

from pennflow.api.errors import Conflict, InvalidRequest, NotFound, Unavailable, field_error
from pennflow.api.openapi_docs import errors, ok
from pennflow.processors.checkout import SourceRef
from pennflow.processors.registry import (
    ProcessorRecord,
    ProcessorsNotReady,
    ProcessorStatus,
    pin_images,
    sourced_processors,
)
from pennflow.workflow.definition import Workflow

# A git URL (https, ssh, git@host:path) and a tag or branch name (git check-ref-format's rules, roughly).
SOURCE_URL_PATTERN = r"^(https://|ssh://|git://|git@)[^\s]{1,2040}$"
TAG_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._/+-]{0,254}$"
SECRET_ARN_PATTERN = r"^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:[A-Za-z0-9/_+=.@-]{1,512}$"
PROCESSOR_ID_PATTERN = r"^[a-z0-9][a-z0-9-]{0,63}$"

IdParam = Annotated[
    str, Path(pattern=PROCESSOR_ID_PATTERN, description="The processor id (GET /processors).")
]


@cache
def configured_processors() -> Any | None:
    """The node's registry (``node.processor_builds.NodeProcessors``), None when it has none."""
    from pennflow.node.processor_builds import NodeProcessors

    return NodeProcessors.from_env(os.environ)


def node_processors() -> Any:
    found = configured_processors()
    if found is None:
        raise Unavailable("this node has no processor registry (redeploy it with the processors construct)")
    return found


Registry = Annotated[Any, Depends(node_processors)]


class _Request(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class _View(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class RegisterProcessor(_Request):
    source_url: Annotated[str, StringConstraints(pattern=SOURCE_URL_PATTERN)]
    tag: Annotated[str, StringConstraints(pattern=TAG_PATTERN)]
    token_secret_arn: Annotated[str, StringConstraints(pattern=SECRET_ARN_PATTERN)] | None = None

    @field_validator("tag")
    @classmethod
    def _git_ref(cls, value: str) -> str:
        if ".." in value or "//" in value or value.endswith((".", "/", ".lock")):
            raise ValueError(
                "not a git tag name ('..', '//' and a final '.', '/' or '.lock' are not allowed)"
            )
        return value


class ProcessorView(_View):
    id: str
    source_url: str
    tag: str
    status: ProcessorStatus
    build_id: str | None
    image: str | None  # <repository>@sha256:..., what runs (READY only)
    image_digest: str | None
    private: bool
    manifest: dict[str, Any]
    error: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, record: ProcessorRecord) -> ProcessorView:
        return cls(
            id=record.id,
            source_url=record.source_url,
            tag=record.tag,
            status=record.status,
            build_id=record.build_id,
            image=record.pinned_image,
            image_digest=record.image_digest,
            private=record.token_secret_arn is not None,
            manifest=record.manifest,
            error=record.error,
            created_at=record.created_at,
            updated_at=record.updated_at,
        )


class ProcessorList(_View):
    processors: list[ProcessorView]


router = Router()


@router.post(
    "/",
    summary="Register a processor (a repository at a tag): its build starts",
    description="Records the repository@tag BUILDING and starts the node's build (clone, docker build, push to "
    "the node's ECR repository); 202. A tag registered before answers 200 with its record (READY or "
    "BUILDING: a tag is a version, so it is built once); a FAILED one builds again. A private repository "
    "needs tokenSecretArn: a Secrets Manager secret holding a token, read by the build only.",
    tags=["processors"],
    responses={
        **ok(ProcessorView, "Already registered"),
        **ok(ProcessorView, "Build started", 202),
        **errors(409, 413, 415, 422, 503),
    },
)
def register(body: RegisterProcessor, processors: Registry) -> Response[ProcessorView]:
    from pennflow.node.processor_builds import ProcessorConflict

    try:
        record, started = processors.register(SourceRef(body.source_url, body.tag), body.token_secret_arn)
    except ProcessorConflict as exc:
        raise Conflict(
            str(exc), fields=[field_error("sourceUrl", str(exc))], code="processor_conflict"
        ) from None
    return Response(202 if started else 200, "application/json", ProcessorView.of(record))


@router.get(
    "/", summary="List processors", tags=["processors"], responses={**ok(ProcessorList), **errors(422)}
)
def list_processors(processors: Registry) -> ProcessorList:
    return ProcessorList(processors=[ProcessorView.of(record) for record in processors.registry.list()])


@router.get(
    "/<processor_id>",
    summary="A processor: its status, image digest, manifest, or why its build failed",
    tags=["processors"],
    responses={**ok(ProcessorView), **errors(404, 422, 503)},
)
def get_processor(processor_id: IdParam, processors: Registry) -> ProcessorView:
    record = processors.registry.get(processor_id)
    if record is None:
        raise NotFound(
            f"no processor {processor_id!r}", fields=[field_error("processor_id", "not registered", "path")]
        )
    return ProcessorView.of(record)


# ------------------------------------------------------------------ used by workflows and runs


def register_sources(workflow: Workflow, processors: Any | None) -> list[ProcessorRecord]:
    """Registers each sourceUrl processor of the workflow (no build for a tag already registered)."""
    sourced = sourced_processors(workflow)
    if not sourced:
        return []
    if processors is None:
        pid = sourced[0].id
        raise InvalidRequest(
            f"processor {pid!r} names a sourceUrl, and this node has no processor registry to build it",
            fields=[field_error(f"processors.{pid}.sourceUrl", "no processor registry on this node")],
            code="no_processor_registry",
        )
    # Without a tag (Pennsieve's create dialog sends none) there is nothing to build: a run takes the
    # newest READY tag registered for the URL.
    return [
        processors.register(SourceRef(processor.source_url or "", processor.tag))[0]
        for processor in sourced
        if processor.tag
    ]


def pin_run_images(workflow: Workflow, processors: Any | None) -> tuple[Workflow, dict[str, str]]:
    """The workflow as the run executes it (images by digest, manifests applied), or 409 naming each
    processor that is not READY (the run is refused, not queued behind a build)."""
    if not sourced_processors(workflow):
        return workflow, {}
    from pennflow.api.gpu import node_gpu_capacity, refuse_without_gpu_capacity

    gpu = node_gpu_capacity()
    try:
        pinned = pin_images(workflow, processors or _NoRegistry(), gpu_enabled=gpu.enabled)
    except ProcessorsNotReady as exc:
        fields = [field_error(f"processors.{pid}", why) for pid, why in exc.problems.items()]
        raise Conflict(str(exc), fields=fields, code="processor_not_ready") from None
    # app.yml may make a processor gpu (its first computeType): its size must fit this node's instances.
    refuse_without_gpu_capacity(pinned[0], gpu)
    return pinned


class _NoRegistry:
    def find(self, source: SourceRef) -> None:
        return None

    def newest_ready(self, url: str) -> None:
        return None
