"""The node's processor registry, the part that needs no AWS: records, ids, and pinning a run's images.

A processor is a repository at a tag. Registering it records it BUILDING and starts a build (the
node's CodeBuild project clones the tag, builds the Dockerfile, pushes to the node's ECR repository);
the build's end makes it READY, with the image digest and the manifest's defaults, or FAILED, with
the build log's tail. A run whose sourceUrl processor is not READY is refused (never queued behind
a build: a build can take many minutes and fail, and a refused request says why at once); a READY
one runs its image by digest (``pin_images``), so the run's record, content key and provenance name
the exact image, whatever the tag does later.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from pennflow.processors.checkout import SourceRef
from pennflow.processors.manifest import AppManifest, apply_manifest
from pennflow.workflow.definition import ComputeType, Workflow, runs_on_lambda
from pennflow.workflow.gpu import GPU_SETTING
from pennflow.workflow.pennsieve_shapes import resource_name

MAX_LOG_TAIL = 4000  # characters of the build log kept on a FAILED record
DIGEST_PREFIX = "sha256:"


class ProcessorStatus(StrEnum):
    BUILDING = "BUILDING"
    READY = "READY"
    FAILED = "FAILED"


def utcnow() -> datetime:
    return datetime.now(UTC)


def processor_key(source: SourceRef) -> str:
    """The table's key (``<url>#<tag>``), with ``.git`` and a final '/' not mattering."""
    url = source.url.strip().rstrip("/")
    return f"{url.removesuffix('.git')}#{source.tag}"


def processor_id(source: SourceRef) -> str:
    """A short, resource-safe id: the repository's name and tag, and 8 hex digits of the key."""
    key = processor_key(source)
    name = key.split("#", 1)[0].rsplit("/", 1)[-1].rsplit(":", 1)[-1]
    digest = hashlib.sha256(key.encode()).hexdigest()[:8]
    return f"{resource_name(f'{name}-{source.tag}', 'processor', 55)}-{digest}"


class ProcessorRecord(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    processor_key: str
    id: str
    source_url: str
    tag: str
    status: ProcessorStatus
    token_secret_arn: str | None = None  # a private repository's token, in Secrets Manager
    build_id: str | None = None
    image_uri: str | None = None  # the node's ECR repository the build pushed to
    image_digest: str | None = None  # sha256:...
    # The same image with the Lambda bootstrap (computeType lambda), or why the build could not make it.
    lambda_image_digest: str | None = None
    lambda_problem: str | None = None
    manifest: dict[str, Any] = Field(default_factory=dict)  # app.yml as read (AppManifest.document)
    error: str | None = None  # why it FAILED: the build log's tail, or the manifest's faults
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)

    @property
    def source(self) -> SourceRef:
        return SourceRef(self.source_url, self.tag)

    @property
    def pinned_image(self) -> str | None:
        """``<repository uri>@sha256:...``: what a run executes."""
        if self.status is not ProcessorStatus.READY or not self.image_uri or not self.image_digest:
            return None
        return f"{self.image_uri}@{self.image_digest}"

    @property
    def pinned_lambda_image(self) -> str | None:
        """``<repository uri>@sha256:...`` of the Lambda variant: what a lambda processor's function runs."""
        if self.pinned_image is None or not self.lambda_image_digest:
            return None
        return f"{self.image_uri}@{self.lambda_image_digest}"

    def pins(self) -> tuple[str | None, str | None]:
        return self.pinned_image, self.pinned_lambda_image

    def app_manifest(self) -> AppManifest:
        return AppManifest.model_validate(self.manifest)

    @classmethod
    def new(cls, source: SourceRef, token_secret_arn: str | None = None) -> ProcessorRecord:
        return cls(
            processor_key=processor_key(source),
            id=processor_id(source),
            source_url=source.url,
            tag=source.tag,
            status=ProcessorStatus.BUILDING,
            token_secret_arn=token_secret_arn,
        )


class ProcessorLookup(Protocol):
    def find(self, source: SourceRef) -> ProcessorRecord | None: ...

    def newest_ready(self, url: str) -> ProcessorRecord | None:
        """The READY tag of ``url`` built last: what a processor without a tag runs (as Pennsieve does)."""


class ProcessorsNotReady(Exception):
    """Processors of a run that cannot run yet: ``problems`` maps each processor id to why."""

    def __init__(self, problems: Mapping[str, str]):
        self.problems = dict(problems)
        super().__init__("; ".join(f"processor {pid!r}: {why}" for pid, why in self.problems.items()))


def sourced_processors(workflow: Workflow) -> list[Any]:
    return [p for p in workflow.processors if p.source_url and not p.image and not p.is_builtin]


def pin_images(
    workflow: Workflow, lookup: ProcessorLookup, *, gpu_enabled: bool = False
) -> tuple[Workflow, dict[str, str]]:
    """The workflow with each sourceUrl processor's image pinned by digest and its manifest applied,
    and the pins (processor id -> image); ProcessorsNotReady names every one that cannot run."""
    problems: dict[str, str] = {}
    pins: dict[str, str] = {}
    processors = []
    for processor in workflow.processors:
        if processor not in sourced_processors(workflow):
            processors.append(processor)
            continue
        if processor.tag:
            source = SourceRef(processor.source_url or "", processor.tag)
            record = lookup.find(source)
        else:
            record = lookup.newest_ready(processor.source_url or "")
            source = record.source if record else SourceRef(processor.source_url or "", "(newest READY tag)")
        why = not_ready_reason(record, source)
        if why is None and record is not None:
            try:
                processor = apply_manifest(processor, record.app_manifest())
            except ValueError as exc:
                why = str(exc)
        if why is None and processor.compute_type is ComputeType.GPU and not gpu_enabled:
            why = f"computeType gpu needs GPU capacity on this node: set {GPU_SETTING} true in cdk.json"
        if (
            why is None
            and record is not None
            and runs_on_lambda(processor)
            and not record.pinned_lambda_image
        ):
            why = (
                f"{source} has no Lambda image for computeType lambda: {record.lambda_problem or 'not built'}"
            )
        if why is not None or record is None:
            problems[processor.id] = why or "not registered"
            continue
        pinned = record.pinned_lambda_image if runs_on_lambda(processor) else record.pinned_image
        pins[processor.id] = pinned or ""
        processors.append(processor.model_copy(update={"image": pins[processor.id]}))
    if problems:
        raise ProcessorsNotReady(problems)
    return workflow.model_copy(update={"processors": processors}), pins


def not_ready_reason(record: ProcessorRecord | None, source: SourceRef) -> str | None:
    if record is None:
        return f"{source} is not registered on this node: POST /processors (or register the workflow again)"
    if record.status is ProcessorStatus.BUILDING:
        return f"{source} is still building (build {record.build_id}); run it once it is READY"
    if record.status is ProcessorStatus.FAILED:
        return f"{source} failed to build: {(record.error or 'no reason recorded').splitlines()[-1][:300]}"
    if record.pinned_image is None:
        return f"{source} is READY but has no image digest recorded"
    return None


def with_pinned_images(workflow: Workflow, images: Mapping[str, str]) -> Workflow:
    """The registered workflow with the images a run pinned (its record's ``images``) set again."""
    if not images:
        return workflow
    processors = [
        p.model_copy(update={"image": images[p.id]}) if p.id in images else p for p in workflow.processors
    ]
    return workflow.model_copy(update={"processors": processors})


def pinned_workflow(
    workflow: Workflow, images: Mapping[str, str], lookup: ProcessorLookup | None
) -> Workflow:
    """The workflow as the run pinned it: each image by digest and, when the registry still holds the
    record that built that digest, its manifest's resources and typed params (the run's task sizes)."""
    pinned = with_pinned_images(workflow, images)
    if lookup is None or not images:
        return pinned
    processors = []
    for processor in pinned.processors:
        record = None
        if processor.id in images and processor.source_url:
            url = processor.source_url
            record = lookup.find(SourceRef(url, processor.tag)) if processor.tag else lookup.newest_ready(url)
        if record is not None and images[processor.id] in record.pins():
            # A computeType the manifest refuses was refused when the run was accepted.
            with contextlib.suppress(ValueError):
                processor = apply_manifest(processor, record.app_manifest())
        processors.append(processor)
    return pinned.model_copy(update={"processors": processors})
