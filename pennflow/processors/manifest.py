"""A processor repository's app manifest (``app.yml`` at the repository's root), as Pennsieve reads it.

The shape Pennsieve's processors publish::

    schemaVersion: '1.0'
    name: Thumbnail Generator
    description: ...
    applicationType: processor
    categories: [Visualization]
    runtime:
      computeTypes: [standard]        # standard | lambda | gpu
    resources:
      cpu: 4096                       # Fargate cpu units
      memory: 30720                   # MiB
      gpus: 1                         # pennflow's: GPUs of a gpu processor (1 when unset)
    parameters:
      - name: THUMBNAIL_SIZE
        type: number                  # string | number | integer | boolean
        description: width and height of thumbnail
        default: 256

Keys the manifest may grow are ignored; the ones read are checked, and every fault is listed with
its place (``parameters[0].type``). A repository without ``app.yml`` gets the default manifest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pennflow.workflow.definition import ComputeType, Processor
from pennflow.workflow.limits import MAX_GPUS
from pennflow.workflow.typed_params import ParamSpec, merge_specs

MANIFEST_NAME = "app.yml"
MAX_MANIFEST_BYTES = 256 * 1024


class ManifestError(ValueError):
    """``app.yml`` cannot be read; ``faults`` lists each problem as ``place: message``."""

    def __init__(self, faults: list[str], source: str = MANIFEST_NAME):
        self.faults = faults
        super().__init__(f"{source}: " + "; ".join(faults))


class _Part(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


class Runtime(_Part):
    compute_types: tuple[ComputeType, ...] = Field(
        (ComputeType.STANDARD,), alias="computeTypes", min_length=1
    )


class Resources(_Part):
    cpu: int | None = Field(None, ge=256)
    memory: int | None = Field(None, ge=128)
    # pennflow's addition: Pennsieve's app.yml says only computeTypes [gpu] (1 GPU here when unset).
    gpus: int | None = Field(None, ge=1, le=MAX_GPUS)

    @field_validator("cpu", "memory", "gpus", mode="before")
    @classmethod
    def _number_as_text(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().isdigit():
            return int(value.strip())
        return value


class AppManifest(_Part):
    schema_version: str = Field("1.0", alias="schemaVersion")
    name: str | None = None
    description: str | None = None
    application_type: str = Field("processor", alias="applicationType")
    categories: tuple[str, ...] = ()
    runtime: Runtime = Runtime()
    resources: Resources = Resources()
    parameters: tuple[ParamSpec, ...] = ()

    @field_validator("schema_version", mode="before")
    @classmethod
    def _version_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int | float) else value

    @field_validator("parameters")
    @classmethod
    def _unique_names(cls, value: tuple[ParamSpec, ...]) -> tuple[ParamSpec, ...]:
        names = [spec.name for spec in value]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"parameter names must be unique: {', '.join(twice)} declared twice")
        return value

    def default_problems(self) -> list[str]:
        """A declared default that is not valid for its own type."""
        problems = []
        for index, spec in enumerate(self.parameters):
            why = spec.problem(spec.default) if spec.default is not None else None
            if why:
                problems.append(f"parameters[{index}].default: {why} ({spec.type.value})")
        return problems

    def document(self) -> dict[str, Any]:
        """What a registry record keeps (JSON-safe, the manifest's own key names)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def parse_manifest(text: str, source: str = MANIFEST_NAME) -> AppManifest:
    if len(text.encode()) > MAX_MANIFEST_BYTES:
        raise ManifestError([f"larger than {MAX_MANIFEST_BYTES // 1024} KiB"], source)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise ManifestError(
            [f"{where}not valid YAML ({getattr(exc, 'problem', None) or exc})"], source
        ) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ManifestError(["the top level must be a mapping"], source)
    try:
        manifest = AppManifest.model_validate(data)
    except ValidationError as exc:
        raise ManifestError([_fault(err) for err in exc.errors()], source) from None
    problems = manifest.default_problems()
    if problems:
        raise ManifestError(problems, source)
    return manifest


def read_manifest(checkout: Path) -> AppManifest:
    """The checkout's ``app.yml``, or the default manifest when it has none."""
    path = checkout / MANIFEST_NAME
    if not path.is_file():
        return AppManifest()
    return parse_manifest(path.read_text(encoding="utf-8", errors="replace"), MANIFEST_NAME)


def apply_manifest(processor: Processor, manifest: AppManifest) -> Processor:
    """The processor with the manifest's typed params (the definition's own declarations win) and its
    resources where the definition sets none; ValueError for a computeType the manifest does not allow."""
    allowed = manifest.runtime.compute_types
    update: dict[str, Any] = {"param_schema": list(merge_specs(manifest.parameters, processor.param_schema))}
    if "compute_type" not in processor.model_fields_set:
        update["compute_type"] = allowed[0]
    elif processor.compute_type not in allowed:
        raise ValueError(
            f"computeType {processor.compute_type.value!r} is not one app.yml allows "
            f"({', '.join(kind.value for kind in allowed)})"
        )
    for key in ("cpu", "memory", "gpus"):
        value = getattr(manifest.resources, key)
        if value is not None and key not in processor.model_fields_set:
            update[key] = value
    if update.get("compute_type", processor.compute_type) is not ComputeType.GPU:
        update.pop("gpus", None)  # GPUs only for a processor that runs as gpu
    return processor.model_copy(update=update)


def _fault(err: Any) -> str:
    place = ""
    for part in err["loc"]:
        place += f"[{part}]" if isinstance(part, int) else (f".{part}" if place else str(part))
    message = err["msg"].removeprefix("Value error, ")
    if err["type"] == "enum":
        message = f"{err['input']!r} is not one of {err['msg'].split('be ', 1)[-1]}"
    elif err["type"] == "string_pattern_mismatch":
        message = f"{err['input']!r} is not a valid environment variable name"
    return f"{place or 'file'}: {message}"
