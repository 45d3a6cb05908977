"""A run's content key: the same key means the same computation on the same bytes.

An analysis wrapper that keys a job on its input locations and parameters (the Allen Institute's
does: dispatch inputs + analysis parameters, looked up before running) re-runs nothing when the
code behind an unchanged tag moved, and re-runs everything when an input was renamed but not
changed. The key here covers, as one sha256 over canonical JSON:

- the workflow definition hash (structure, images as written, resources, retry);
- each processor's image resolved to a digest (``resolve_image``): ECR through DescribeImages,
  otherwise the local Docker engine's RepoDigests (or image id); a reference that cannot be
  resolved is keyed as written and the plan warns, since a tag can move;
- each processor's params after run-level overrides;
- each layer's name, published version and content checksum;
- the inputs: every file's Pennsieve id, path, size and checksum, sorted (from the manifest).

``plan_run`` returns the key with what went into it (``RunPlan``), for ``dryRun`` and for finding
a duplicate of a succeeded run (``find_duplicate``).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pennflow.aws import client as aws_client
from pennflow.aws import error_code
from pennflow.data.datasource import InputSummary
from pennflow.stores.base import RunStore
from pennflow.workflow.definition import Workflow
from pennflow.workflow.runs import RunRecord

KEY_VERSION = 1
DOCKER_TIMEOUT_SECONDS = 15
ECR_IMAGE = re.compile(
    r"^(?P<registry>\d{12})\.dkr\.ecr(-fips)?\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(\.cn)?/"
    r"(?P<repository>[a-z0-9._/-]+)(:(?P<tag>[\w][\w.-]{0,127}))?$"
)

ImageSource = Literal["pinned", "ecr", "docker", "docker-id", "builtin", "command", "unresolved"]


class ResolvedImage(BaseModel):
    """What a processor runs, as keyed: a content digest when one could be found."""

    model_config = ConfigDict(frozen=True)

    reference: str
    digest: str | None = None
    source: ImageSource
    detail: str | None = Field(None, description="why it could not be resolved")

    @property
    def identity(self) -> str:
        return self.digest or self.reference


class LayerPin(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    version: int | str
    checksum: str | None = None


class PlannedProcessor(BaseModel):
    id: str
    type: str
    image: ResolvedImage
    params: dict[str, str]


class RunPlan(BaseModel):
    """The content key and everything it covers (a dry run returns this and starts nothing)."""

    content_key: str
    key_version: int = KEY_VERSION
    workflow: str
    definition_hash: str
    processors: list[PlannedProcessor]
    layers: list[LayerPin]
    inputs: InputSummary | None
    warnings: list[str]


# -- images --------------------------------------------------------------------------------------


def resolve_image(image: str, *, ecr_client: Any = None, docker: str = "docker") -> ResolvedImage:
    """The image's digest: pinned in the reference, from ECR, or from the local Docker engine."""
    if "@sha256:" in image:
        return ResolvedImage(reference=image, digest=image.split("@", 1)[1], source="pinned")
    ecr = ECR_IMAGE.match(image)
    if ecr:
        return _ecr_digest(image, ecr, ecr_client)
    return _docker_digest(image, docker)


def _ecr_digest(image: str, match: re.Match[str], ecr_client: Any) -> ResolvedImage:
    tag = match.group("tag") or "latest"
    try:
        ecr = ecr_client or aws_client("ecr", match.group("region"))
        details = ecr.describe_images(
            registryId=match.group("registry"),
            repositoryName=match.group("repository"),
            imageIds=[{"imageTag": tag}],
        )["imageDetails"]
    except Exception as exc:  # no credentials, no permission, no such image: keyed as written
        why = error_code(exc) or type(exc).__name__
        return ResolvedImage(reference=image, source="unresolved", detail=f"ecr:DescribeImages failed: {why}")
    if not details or not details[0].get("imageDigest"):
        return ResolvedImage(reference=image, source="unresolved", detail="ECR returned no digest")
    return ResolvedImage(reference=image, digest=details[0]["imageDigest"], source="ecr")


def _docker_digest(image: str, docker: str) -> ResolvedImage:
    executable = shutil.which(docker)
    if executable is None:
        return ResolvedImage(reference=image, source="unresolved", detail="no docker client to ask")
    try:
        done = subprocess.run(
            [executable, "image", "inspect", "--format", "{{json .RepoDigests}}|{{.Id}}", image],
            capture_output=True,
            text=True,
            timeout=DOCKER_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return ResolvedImage(
            reference=image, source="unresolved", detail=f"docker image inspect: {type(exc).__name__}"
        )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["failed"])[-1][:200]
        return ResolvedImage(reference=image, source="unresolved", detail=f"docker image inspect: {last}")
    digests_json, _, image_id = done.stdout.strip().partition("|")
    try:
        repo_digests = json.loads(digests_json) or []
    except ValueError:
        repo_digests = []
    repository = _repository(image)
    matching = [d for d in repo_digests if d.split("@", 1)[0] in {repository, f"docker.io/{repository}"}]
    chosen = matching or (repo_digests if len(repo_digests) == 1 else [])
    if chosen:
        return ResolvedImage(reference=image, digest=chosen[0].split("@", 1)[1], source="docker")
    if image_id.startswith("sha256:"):  # built locally, never pushed: the image id is its content
        return ResolvedImage(reference=image, digest=image_id, source="docker-id")
    return ResolvedImage(reference=image, source="unresolved", detail="docker reports no digest")


def _repository(image: str) -> str:
    """``host/repo:tag`` -> ``host/repo`` (a ':' after the last '/' is a tag, before it a port)."""
    name, slash, last = image.rpartition("/")
    return f"{name}{slash}{last.split(':', 1)[0]}"


def image_tag(image: str) -> str | None:
    last = image.rpartition("/")[2]
    return last.split(":", 1)[1] if ":" in last else None


# -- the key -------------------------------------------------------------------------------------


def plan_run(
    workflow: Workflow,
    *,
    params: Mapping[str, Mapping[str, str]],
    inputs: InputSummary | None = None,
    layers: Sequence[LayerPin] = (),
    images: Mapping[str, str] | None = None,
    resolver: Callable[[str], ResolvedImage] = resolve_image,
) -> RunPlan:
    """The run's content key and what went into it.

    ``params`` are each processor's params after overrides (``pennflow.workflow.contract.run_parameters``);
    ``images`` maps processor ids to image references when the definition gives a sourceUrl@tag
    that a registry resolved; ``inputs`` is the manifest summary (``pennflow.data.datasource.summarize``),
    None for a workflow without a data source.
    """
    images = images or {}
    resolved: dict[str, ResolvedImage] = {}
    processors = []
    warnings: list[str] = []
    for processor in workflow.processors:
        image = _processor_image(processor, images, resolver, resolved)
        processors.append(
            PlannedProcessor(
                id=processor.id,
                type=processor.type.value,
                image=image,
                params=dict(sorted(params.get(processor.id, processor.default_params).items())),
            )
        )
        warning = _image_warning(processor.id, image)
        if warning:
            warnings.append(warning)
    pins = sorted(layers, key=lambda pin: pin.name)
    warnings += [
        f"layer {pin.name!r} version {pin.version} has no checksum: keyed by its version only"
        for pin in pins
        if not pin.checksum
    ]
    if inputs is not None and inputs.without_checksum:
        warnings.append(
            f"{inputs.without_checksum} input file(s) have no checksum in Pennsieve: keyed by id, path and size only"
        )
    material = {
        "keyVersion": KEY_VERSION,
        "definition": workflow.definition_hash(),
        "processors": {p.id: {"image": p.image.identity, "params": p.params} for p in processors},
        "layers": [[pin.name, str(pin.version), pin.checksum] for pin in pins],
        "inputs": _inputs_material(inputs),
    }
    canonical = json.dumps(material, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return RunPlan(
        content_key=hashlib.sha256(canonical.encode()).hexdigest(),
        workflow=workflow.name,
        definition_hash=workflow.definition_hash(),
        processors=processors,
        layers=pins,
        inputs=inputs,
        warnings=warnings,
    )


def _processor_image(
    processor: Any,
    images: Mapping[str, str],
    resolver: Callable[[str], ResolvedImage],
    cache: dict[str, ResolvedImage],
) -> ResolvedImage:
    if processor.is_builtin:
        return ResolvedImage(reference="builtin", source="builtin")
    reference = images.get(processor.id) or processor.image
    if reference:
        if reference not in cache:
            cache[reference] = resolver(reference)
        return cache[reference]
    if processor.command:
        return ResolvedImage(reference="command:" + json.dumps(processor.command), source="command")
    if processor.source_url:
        return ResolvedImage(
            reference=f"{processor.source_url}@{processor.tag or ''}",
            source="unresolved",
            detail="sourceUrl@tag not resolved to an image",
        )
    return ResolvedImage(reference="", source="unresolved", detail="no image")


def _image_warning(processor_id: str, image: ResolvedImage) -> str | None:
    if image.source == "command":
        return f"{processor_id}: runs a local command; the code it runs is not part of the key"
    if image.source != "unresolved":
        return None
    tag = image_tag(image.reference) if "@" not in image.reference else None
    mutable = f"its tag {tag!r} can move" if tag else "an untagged reference means 'latest', which moves"
    return (
        f"{processor_id}: image {image.reference} was not resolved to a digest ({image.detail}); "
        f"{mutable}, so a rebuilt image would get the same content key"
    )


def _inputs_material(inputs: InputSummary | None) -> dict[str, Any] | None:
    if inputs is None:
        return None
    rows = sorted(inputs.entries, key=lambda f: (f.file_id, f.path, f.size, f.checksum or ""))
    files = [[f.file_id, f.path, f.size, f.checksum] for f in rows]
    return {"dataset": inputs.dataset_id, "files": files}


# -- duplicates ----------------------------------------------------------------------------------


def find_duplicate(store: RunStore, key: str) -> RunRecord | None:
    """The newest SUCCEEDED run with this content key, or None (each store has its own index)."""
    return store.find_succeeded_by_content_key(key)
