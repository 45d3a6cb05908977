"""Workflow definitions (DESIGN §2): pydantic models, JSON/YAML loading, every fault listed.

A Pennsieve workflow-definition JSON is accepted unchanged (``pennsieve_shapes`` reads the shapes its
web app and API write); pennflow's own fields (image, command, cpu, memory, layers, retry,
timeoutSeconds, scatter, pennsieveToken) are optional additions. Every field is in ``fields.py``.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from pennflow.workflow.graph import find_cycle
from pennflow.workflow.limits import (
    FARGATE_MEMORY,
    LAMBDA_MEMORY,
    LAMBDA_TIMEOUT_SECONDS,
    MAX_DISPLAY_NAME,
    MAX_GPU_CPU,
    MAX_GPU_MEMORY,
    MAX_GPUS,
    MAX_NAME,
    MIN_EC2_CPU,
    MIN_EC2_MEMORY,
    NAME_RE,
    PARAM_RE,
    is_name,
    is_param_name,
    lambda_fallback,
)
from pennflow.workflow.loading import TextProblem, check_shape, parse_text, read_definition_text
from pennflow.workflow.pennsieve_shapes import normalize
from pennflow.workflow.typed_params import ParamSpec

__all__ = ["FARGATE_MEMORY", "MAX_NAME", "NAME_RE", "PARAM_RE"]

DEFAULT_TIMEOUT_SECONDS = 86_400

# Environment names the processor contract sets itself (DESIGN §3), Pennsieve's among them; a param
# may not shadow them. BATCH_INDEX is set per batch; PYTHONPATH carries the layers' packages.
RESERVED_PARAMS = frozenset(
    {"INPUT_DIR", "OUTPUT_DIR", "RUN_ID", "PROCESSOR_ID", "WORKFLOW_NAME", "DATASET_ID", "LAYERS_DIR"}
    | {"BATCH_INDEX", "PYTHONPATH", "INTEGRATION_ID", "SESSION_TOKEN", "REFRESH_TOKEN", "CALLBACK_TOKEN"}
    | {"PENNSIEVE_API_HOST", "PENNSIEVE_API_HOST2", "ENVIRONMENT", "REGION", "DEPLOYMENT_MODE"}
    | {"ORGANIZATION_ID", "EXECUTION_RUN_ID", "PENNSIEVE_API_KEY", "PENNSIEVE_API_SECRET"}
)
RESERVED_PARAM_PREFIXES = ("INPUT_DIR_", "LAYER_", "PENNFLOW_", "AWS_", "ECS_")
# A container image reference: [registry[:port]/]path[:tag][@sha256:digest], as Docker parses it.
IMAGE_RE = re.compile(
    r"^(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
    r"(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"
    r"(?:@sha256:[a-f0-9]{64})?$"
)
MAX_IMAGE = 255


class ProcessorType(StrEnum):
    DATA_SOURCE = "data-source"
    PROCESSOR = "processor"
    DATA_TARGET = "data-target"


class ComputeType(StrEnum):
    STANDARD = "standard"
    LAMBDA = "lambda"
    GPU = "gpu"


class TargetType(StrEnum):
    PENNSIEVE_DATASET = "Pennsieve Dataset"
    PENNSIEVE_PACKAGE_ASSET = "Pennsieve Package Asset"
    PERSISTENT_LAYER = "persistent-layer"
    S3 = "s3"


class SessionType(StrEnum):
    """Pennsieve's kinds of interactive session (its notebook launcher's ``sessionType``)."""

    JUPYTER = "jupyter"  # a Jupyter server with a Python kernel: Pennsieve's default
    PYTHON = "python"  # what Pennsieve's launcher also reads as a Python (Jupyter) session
    R = "r"  # an R notebook


PYTHON_SESSIONS = (SessionType.JUPYTER, SessionType.PYTHON)


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="ignore",
        frozen=True,
        use_enum_values=False,
        defer_build=True,
    )


class RetryPolicy(_Model):
    """Retries after a failed attempt; ``maxAttempts`` counts retries as in ASL's Retry."""

    max_attempts: int = Field(2, ge=0, le=10)
    interval_seconds: int = Field(30, ge=1, le=86_400)
    backoff_rate: float = Field(2.0, ge=1.0, le=10.0)


class Scatter(_Model):
    over: Literal["files"] = "files"
    batch_size: int = Field(1, ge=1, le=10_000)


class Processor(_Model):
    id: str = Field(max_length=MAX_NAME, pattern=NAME_RE.pattern)
    label: str | None = Field(None, max_length=MAX_DISPLAY_NAME)  # the id as given, when one was derived
    type: ProcessorType = ProcessorType.PROCESSOR
    source_url: str | None = None
    tag: str | None = None
    image: str | None = None
    command: list[str] | None = None
    compute_type: ComputeType = ComputeType.STANDARD
    # GPUs a computeType gpu processor gets (ECS resourceRequirements); None there means 1.
    gpus: int | None = Field(None, ge=1, le=MAX_GPUS)
    depends_on: list[str] | None = None
    default_params: dict[str, str] = Field(default_factory=dict)
    param_schema: list[ParamSpec] = Field(default_factory=list)  # typed params (Pennsieve's paramSchema)
    cpu: int = 1024
    memory: int = 2048
    layers: list[str] = Field(default_factory=list)
    retry: RetryPolicy | None = None
    timeout_seconds: int = Field(DEFAULT_TIMEOUT_SECONDS, ge=1, le=31_536_000)
    scatter: Scatter | None = None
    target_type: TargetType | None = None
    pennsieve_token: bool | None = None
    # A notebook session (Pennsieve's interactive processors): its working area is its OUTPUT_DIR.
    # Left out of a dump at their defaults, so every other workflow keeps its definition hash.
    interactive: bool = Field(False, exclude_if=lambda value: value is False)
    session_type: SessionType | None = Field(None, exclude_if=lambda value: value is None)

    @property
    def session_kind(self) -> SessionType | None:
        """The session an interactive processor starts (Pennsieve's default: jupyter); None otherwise."""
        return (self.session_type or SessionType.JUPYTER) if self.interactive else None

    @property
    def display_name(self) -> str:
        return self.label or self.id

    @property
    def gets_token(self) -> bool:
        """Processors get a SESSION_TOKEN unless they say ``pennsieveToken: false``; built-ins never."""
        if self.is_builtin:
            return False
        return self.pennsieve_token is not False

    @property
    def gpu_count(self) -> int:
        if self.compute_type is not ComputeType.GPU:
            return 0
        return self.gpus or 1

    @property
    def dependencies(self) -> tuple[str, ...]:
        return tuple(self.depends_on or ())

    @property
    def is_builtin(self) -> bool:
        return self.type is not ProcessorType.PROCESSOR


class Workflow(_Model):
    name: str = Field(max_length=MAX_NAME, pattern=NAME_RE.pattern)
    display_name: str | None = Field(None, max_length=MAX_DISPLAY_NAME)  # the name as given, if derived
    summary: str | None = None
    description: str | None = None
    organization_id: str | None = None
    processors: list[Processor]
    # What validate tells the author about fields read liberally or ignored; not part of the hash.
    notes: tuple[str, ...] = Field(default=(), exclude=True)

    @property
    def title(self) -> str:
        return self.display_name or self.name

    def processor(self, processor_id: str) -> Processor:
        for processor in self.processors:
            if processor.id == processor_id:
                return processor
        raise KeyError(processor_id)

    def canonical_json(self) -> str:
        # A field added later is left out while unset, so a definition that does not use it keeps its hash.
        unset = {i: {"gpus"} for i, p in enumerate(self.processors) if p.gpus is None}
        data = self.model_dump(mode="json", by_alias=True, exclude={"processors": unset} if unset else None)
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    def definition_hash(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()


@dataclass(frozen=True)
class Fault:
    """One problem in a definition: where (processor id and field) and what."""

    processor: str | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"processor {self.processor!r}" if self.processor else "workflow"
        return f"{where}, field {self.field!r}: {self.message}"


class DefinitionError(Exception):
    def __init__(self, faults: list[Fault], source: str = "definition"):
        self.faults = faults
        self.source = source
        super().__init__(f"{source}: {len(faults)} fault(s)\n" + "\n".join(f"- {f}" for f in faults))


# ---------------------------------------------------------------- parsing


def load_definition(path: str | Path) -> Workflow:
    path = Path(path)
    try:
        text = read_definition_text(path)
    except TextProblem as exc:
        raise DefinitionError([Fault(None, "file", str(exc))], str(path)) from None
    fmt = "json" if path.suffix.lower() == ".json" else "yaml"
    return parse_definition(text, fmt, source=str(path))


def parse_definition(
    text: str, fmt: Literal["json", "yaml"] = "yaml", source: str = "definition"
) -> Workflow:
    data = _parse_text(text, fmt, source)
    return validate_definition(data, source)


def _parse_text(text: str, fmt: str, source: str) -> Any:
    try:
        return parse_text(text, "json" if fmt == "json" else "yaml")
    except TextProblem as exc:
        raise DefinitionError([Fault(None, "file", str(exc))], source) from None


def validate_definition(data: Any, source: str = "definition") -> Workflow:
    """Validate parsed JSON/YAML; raises DefinitionError listing every fault found."""
    if not isinstance(data, dict):
        raise DefinitionError(
            [Fault(None, "file", "the top level must be a mapping with 'processors'")], source
        )
    try:
        check_shape(data)
    except TextProblem as exc:
        raise DefinitionError([Fault(None, "file", str(exc))], source) from None
    shaped = normalize(data)
    data = shaped.data
    faults: list[Fault] = [Fault(p, f, m) for p, f, m in shaped.faults]
    raw_processors = data.get("processors")
    if not isinstance(raw_processors, list):
        faults.append(Fault(None, "processors", "required: a list of processors"))
        raw_processors = []
    elif not raw_processors:
        faults.append(Fault(None, "processors", "the workflow has no processors"))

    header = {k: v for k, v in data.items() if k in _Header.model_fields or k in _HEADER_ALIASES}
    try:
        _Header.model_validate(header)
    except ValidationError as exc:
        faults.extend(Fault(None, _loc(err["loc"]), _message(err)) for err in exc.errors())

    processors: list[Processor] = []
    for index, raw in enumerate(raw_processors):
        label = _label(raw, index)
        if not isinstance(raw, dict):
            faults.append(Fault(label, "processors", "each processor must be a mapping"))
            continue
        processor, field_faults = _validate_processor(raw, label)
        faults.extend(field_faults)
        if processor is not None:
            processors.append(processor)

    faults.extend(_graph_faults(raw_processors))
    if faults:
        raise DefinitionError(_dedupe(faults), source)
    return Workflow.model_validate({**data, "processors": processors, "notes": tuple(shaped.notes)})


def _validate_processor(raw: dict, label: str) -> tuple[Processor | None, list[Fault]]:
    """Field faults, then the cross-field checks on the fields that were valid.

    A processor with a bad field is validated again without it (defaults stand in), so one bad
    field never hides the faults of the others.
    """
    try:
        processor = Processor.model_validate(raw)
        return processor, _processor_faults(processor)
    except ValidationError as exc:
        errors = exc.errors()
    faults = [Fault(label, _loc(err["loc"]), _message(err)) for err in errors]
    bad = {err["loc"][0] for err in errors if err["loc"]}
    aliases = {name: info.alias or name for name, info in Processor.model_fields.items()}
    bad |= {aliases.get(field, field) for field in list(bad)}
    lenient = {k: v for k, v in raw.items() if k not in bad}
    lenient.setdefault("id", "placeholder")
    try:
        partial = Processor.model_validate(lenient)
    except ValidationError:
        return None, faults
    faults.extend(
        Fault(label, f.field, f.message)
        for f in _processor_faults(partial)
        if f.field.split(".")[0] not in bad
    )
    if "defaultParams" in bad:
        faults.extend(_param_name_faults(label, raw.get("type"), raw.get("defaultParams")))
    return None, faults


class _Header(_Model):
    name: str = Field(max_length=MAX_NAME, pattern=NAME_RE.pattern)
    display_name: str | None = Field(None, max_length=MAX_DISPLAY_NAME)
    summary: str | None = None
    description: str | None = None
    organization_id: str | None = None


_HEADER_ALIASES = frozenset(info.alias or name for name, info in _Header.model_fields.items())


def _label(raw: Any, index: int) -> str:
    if isinstance(raw, dict) and isinstance(raw.get("id"), str) and raw["id"]:
        return raw["id"]
    return f"#{index + 1}"


def _loc(loc: tuple) -> str:
    return ".".join(str(part) for part in loc) or "file"


def _message(err: dict) -> str:
    kind, msg = err["type"], err["msg"]
    if kind == "string_pattern_mismatch":
        return f"{err['input']!r} must be lower-case letters, digits and '-', starting with a letter or digit"
    if kind == "value_error":
        return msg.removeprefix("Value error, ")
    if kind == "enum":
        return f"{err['input']!r} is not one of {msg.split('be ', 1)[-1]}"
    if kind == "missing":
        return "required"
    if kind == "string_type" and len(err["loc"]) >= 2 and err["loc"][-2] == "defaultParams":
        value = err["input"]
        return f"param values must be strings, got {type(value).__name__} {value!r}: quote it"
    return msg


def _processor_faults(p: Processor) -> list[Fault]:
    faults: list[Fault] = []
    if p.type is ProcessorType.DATA_SOURCE and p.depends_on:
        faults.append(Fault(p.id, "dependsOn", "a data source has no dependencies; remove dependsOn"))
    if p.compute_type is ComputeType.LAMBDA and p.timeout_seconds > LAMBDA_TIMEOUT_SECONDS:
        faults.append(
            Fault(
                p.id,
                "timeoutSeconds",
                f"{p.timeout_seconds} is over Lambda's {LAMBDA_TIMEOUT_SECONDS} seconds (15 minutes): a lambda "
                "processor must finish within it; use computeType standard for longer work",
            )
        )
    if p.gpus is not None and p.compute_type is not ComputeType.GPU:
        faults.append(Fault(p.id, "gpus", "only a computeType gpu processor gets GPUs; set computeType: gpu"))
    if p.compute_type is ComputeType.GPU and p.is_builtin:
        faults.append(
            Fault(p.id, "computeType", "a data source or target runs on Fargate: gpu is for processors")
        )
    if p.image is not None and (len(p.image) > MAX_IMAGE or not IMAGE_RE.fullmatch(p.image)):
        faults.append(Fault(p.id, "image", f"{p.image!r} is not a container image reference"))
    faults.extend(_session_faults(p))
    if p.type is ProcessorType.PROCESSOR and not (p.image or p.source_url or p.command or p.interactive):
        faults.append(Fault(p.id, "image", "a processor needs an image, a sourceUrl (with tag) or a command"))
    if p.type is ProcessorType.DATA_TARGET:
        if p.target_type is None:
            faults.append(Fault(p.id, "targetType", f"required for a data target: one of {_targets()}"))
        elif p.target_type is TargetType.PERSISTENT_LAYER:
            layer = p.default_params.get("layerName")  # absent: the run supplies it (Pennsieve does)
            if layer and not is_name(layer):
                faults.append(Fault(p.id, "defaultParams.layerName", f"{layer!r} is not a valid layer name"))
    if p.compute_type is ComputeType.GPU:
        faults.extend(_gpu_size_faults(p))
    elif p.cpu not in FARGATE_MEMORY:
        faults.append(
            Fault(p.id, "cpu", f"{p.cpu} is not a Fargate cpu value: one of {sorted(FARGATE_MEMORY)}")
        )
    elif p.memory not in FARGATE_MEMORY[p.cpu] and not runs_on_lambda(p):
        allowed = FARGATE_MEMORY[p.cpu]
        faults.append(
            Fault(
                p.id,
                "memory",
                f"{p.memory} MiB is not valid with cpu {p.cpu}: {allowed[0]}-{allowed[-1]} MiB",
            )
        )
    faults.extend(_param_name_faults(p.id, p.type, p.default_params))
    faults.extend(_param_schema_faults(p))
    for layer in p.layers:
        if not is_name(layer):
            faults.append(Fault(p.id, "layers", f"{layer!r} is not a valid layer name"))
    if p.scatter and p.type is not ProcessorType.PROCESSOR:
        faults.append(Fault(p.id, "scatter", "only processors can scatter"))
    if runs_on_lambda(p):
        low, high = LAMBDA_MEMORY
        if not low <= p.memory <= high:
            faults.append(
                Fault(p.id, "memory", f"{p.memory} MB is not a Lambda memory size ({low}-{high} MB)")
            )
    return faults


def _session_faults(p: Processor) -> list[Fault]:
    """An interactive processor is one notebook session: a server the user works in until it stops."""
    faults: list[Fault] = []
    if p.session_type is not None and not p.interactive:
        faults.append(
            Fault(
                p.id,
                "sessionType",
                "set on a processor that is not interactive: set interactive: true or remove it",
            )
        )
    if not p.interactive:
        return faults
    if p.type is not ProcessorType.PROCESSOR:
        faults.append(
            Fault(p.id, "interactive", f"a {p.type.value} cannot be interactive: only a processor can")
        )
    if p.session_type is SessionType.R:
        faults.append(
            Fault(
                p.id,
                "sessionType",
                "'r' sessions are not supported: a pennflow session is a Jupyter server with a Python kernel "
                "(sessionType 'jupyter')",
            )
        )
    if p.scatter is not None:
        faults.append(
            Fault(p.id, "scatter", "an interactive processor is one notebook session: it cannot scatter")
        )
    if p.command is not None:
        faults.append(
            Fault(
                p.id,
                "command",
                "an interactive processor runs pennflow's notebook server: it takes no command",
            )
        )
    if p.retry is not None:
        faults.append(Fault(p.id, "retry", "a notebook session is not retried: remove retry"))
    return faults


def _gpu_size_faults(p: Processor) -> list[Fault]:
    """An EC2 task takes any cpu and memory; whether they fit the node's GPU instances is the node's
    check at registration (``workflow.gpu.fit_problem``)."""
    faults = []
    if not MIN_EC2_CPU <= p.cpu <= MAX_GPU_CPU:
        faults.append(Fault(p.id, "cpu", f"{p.cpu} cpu units: a gpu task takes {MIN_EC2_CPU}-{MAX_GPU_CPU}"))
    if not MIN_EC2_MEMORY <= p.memory <= MAX_GPU_MEMORY:
        faults.append(
            Fault(p.id, "memory", f"{p.memory} MiB: a gpu task takes {MIN_EC2_MEMORY}-{MAX_GPU_MEMORY} MiB")
        )
    return faults


def runs_on_lambda(p: Processor) -> bool:
    """A ``computeType: lambda`` processor runs as a Lambda function of the node (its memory is the
    function's) unless ``limits.lambda_fallback`` says why it must run as a Fargate task."""
    return (
        p.compute_type is ComputeType.LAMBDA
        and p.type is ProcessorType.PROCESSOR
        and lambda_fallback(p.layers, p.dependencies) is None
    )


def _param_name_faults(pid: str, kind: Any, params: Any) -> list[Fault]:
    faults: list[Fault] = []
    for key in params if isinstance(params, dict) else ():
        if key == "layerName" and kind in (ProcessorType.DATA_TARGET, ProcessorType.DATA_TARGET.value):
            continue
        if not is_param_name(key):
            faults.append(Fault(pid, f"defaultParams.{key}", "not a valid environment variable name"))
        elif key in RESERVED_PARAMS or key.startswith(RESERVED_PARAM_PREFIXES):
            faults.append(Fault(pid, f"defaultParams.{key}", "reserved by the processor contract"))
    return faults


def _param_schema_faults(p: Processor) -> list[Fault]:
    """A declared param may not shadow the contract, and its default must be valid for its type."""
    faults = _param_name_faults(p.id, p.type, {spec.name: "" for spec in p.param_schema})
    faults = [
        Fault(f.processor, f.field.replace("defaultParams.", "paramSchema.", 1), f.message) for f in faults
    ]
    for spec in p.param_schema:
        for value, where in ((spec.default, "default"), (p.default_params.get(spec.name), "defaultParams")):
            why = spec.problem(value) if value is not None else None
            if why:
                faults.append(Fault(p.id, f"paramSchema.{spec.name}", f"{where}: {why} ({spec.type.value})"))
    return faults


def _targets() -> str:
    return ", ".join(repr(t.value) for t in TargetType)


def _graph_faults(raw_processors: list[Any]) -> list[Fault]:
    """Graph checks on the raw entries, so they run even when other fields are invalid."""
    faults: list[Fault] = []
    nodes: dict[str, list[str]] = {}
    kinds: dict[str, Any] = {}
    sessions: list[str] = []
    for index, raw in enumerate(raw_processors):
        if not isinstance(raw, dict) or not isinstance(raw.get("id"), str):
            if isinstance(raw, dict):
                faults.append(Fault(_label(raw, index), "id", "required: a string id"))
            continue
        pid = raw["id"]
        if pid in nodes:
            faults.append(Fault(pid, "id", f"duplicate id (processor #{index + 1})"))
            continue
        deps = raw.get("dependsOn")
        nodes[pid] = [d for d in deps if isinstance(d, str)] if isinstance(deps, list) else []
        kinds[pid] = raw.get("type", ProcessorType.PROCESSOR.value)
        if raw.get("interactive") is True:
            sessions.append(pid)
        # A processor with no dependencies starts with an empty INPUT_DIR (Pennsieve's layer-populate
        # workflows do); a data target with none would have nothing to publish.
        if kinds[pid] == ProcessorType.DATA_TARGET.value and not deps:
            faults.append(Fault(pid, "dependsOn", "required: list the processors whose output it publishes"))
    for pid, deps in nodes.items():
        seen: set[str] = set()
        for dep in deps:
            if dep == pid:
                faults.append(Fault(pid, "dependsOn", "a processor cannot depend on itself"))
            elif dep not in nodes:
                faults.append(Fault(pid, "dependsOn", f"unknown processor {dep!r}"))
            elif dep in seen:
                faults.append(Fault(pid, "dependsOn", f"{dep!r} is listed twice"))
            elif kinds[dep] == ProcessorType.DATA_TARGET.value:
                faults.append(Fault(pid, "dependsOn", f"{dep!r} is a data target, which has no output"))
            elif dep in sessions and kinds[pid] != ProcessorType.DATA_TARGET.value:
                faults.append(
                    Fault(
                        pid,
                        "dependsOn",
                        f"{dep!r} is interactive (a notebook session): it has no output until the user stops "
                        "it, so no processor can wait on it; only a data target may depend on it (it publishes "
                        "the session's working area)",
                    )
                )
            seen.add(dep)
    if len(sessions) > 1:
        faults.append(
            Fault(
                sessions[1],
                "interactive",
                f"a run is at most one notebook session, and {', '.join(map(repr, sessions))} are interactive",
            )
        )
    graph = {pid: [d for d in deps if d in nodes and d != pid] for pid, deps in nodes.items()}
    cycle = find_cycle(graph)
    if cycle:
        faults.append(
            Fault(cycle[0], "dependsOn", "cycle: " + " -> ".join(cycle) + " (each depends on the next)")
        )
    return faults


def _dedupe(faults: list[Fault]) -> list[Fault]:
    return list(dict.fromkeys(faults))
