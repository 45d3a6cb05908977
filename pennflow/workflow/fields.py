"""Every field of the workflow format, in one table: its type, default, which system defines it and what
pennflow does with it. The unknown-field check, ``validate``'s notes, ``pennflow schema`` and the
format reference all read this table, so they cannot disagree.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Owner = Literal["Pennsieve", "pennflow", "Pennsieve + pennflow"]

STRING: dict[str, Any] = {"type": "string"}
NUMBER_OR_TEXT: dict[str, Any] = {"type": ["integer", "string"], "pattern": r"^\s*[0-9]+\s*$"}
PARAMS: dict[str, Any] = {"type": "object", "additionalProperties": {"type": "string"}}
OPEN_OBJECT: dict[str, Any] = {"type": "object"}


@dataclass(frozen=True)
class FieldSpec:
    """One field. ``note`` set means pennflow does not act on it, and ``validate`` says so when present."""

    name: str
    schema: dict[str, Any]
    default: str
    owner: Owner
    action: str
    note: str | None = None
    children: tuple[FieldSpec, ...] | None = None  # a nested mapping whose keys are checked too
    item_children: tuple[FieldSpec, ...] | None = None  # a list of mappings whose keys are checked
    aliases: tuple[str, ...] = field(default=())


RETRY_FIELDS = (
    FieldSpec(
        "maxAttempts",
        {"type": "integer", "minimum": 0, "maximum": 10},
        "2",
        "pennflow",
        "retries after a failed attempt (ASL Retry MaxAttempts)",
    ),
    FieldSpec(
        "intervalSeconds", {"type": "integer", "minimum": 1}, "30", "pennflow", "wait before the first retry"
    ),
    FieldSpec(
        "backoffRate",
        {"type": "number", "minimum": 1, "maximum": 10},
        "2",
        "pennflow",
        "multiplier of the wait per retry",
    ),
)

SCATTER_FIELDS = (
    FieldSpec("over", {"enum": ["files"]}, "files", "pennflow", "what to split the input by"),
    FieldSpec(
        "batchSize", {"type": "integer", "minimum": 1, "maximum": 10000}, "1", "pennflow", "files per task"
    ),
)

DEPENDENCY_FIELDS = (
    FieldSpec(
        "sourceUrl",
        STRING,
        "-",
        "Pennsieve",
        "names the processor with this sourceUrl (the create dialog's form of dependsOn)",
    ),
    FieldSpec("id", STRING, "-", "pennflow", "names the processor with this id"),
)

PROCESSOR_FIELDS = (
    FieldSpec(
        "id",
        STRING,
        "derived from sourceUrl (or type)",
        "Pennsieve",
        "names the processor; kept as its label, and a resource-safe id (lower-case, digits, '-', "
        "at most 64) is derived from it for state names, folders and variables",
    ),
    FieldSpec(
        "label",
        {"type": "string", "maxLength": 255},
        "-",
        "pennflow",
        "the id as the author gave it, when a resource-safe id was derived (written by pennflow)",
    ),
    FieldSpec(
        "type",
        {"enum": ["data-source", "processor", "data-target"]},
        "processor",
        "Pennsieve",
        "data-source and data-target run built-ins; processor runs the image",
    ),
    FieldSpec(
        "sourceUrl",
        STRING,
        "-",
        "Pennsieve",
        "the processor's repository (any URL git accepts, or a path), built at tag: locally by "
        "`pennflow run` (see below), on a node by its processor registry",
    ),
    FieldSpec("tag", STRING, "-", "Pennsieve", "the version of sourceUrl to run"),
    FieldSpec(
        "computeType",
        {"enum": ["standard", "lambda", "gpu", None]},
        "standard",
        "Pennsieve",
        "standard runs on Fargate; lambda runs on Fargate too, its memory (Lambda MB) mapped to "
        "the smallest Fargate pair that fits, its timeoutSeconds 900 by default and refused over 900 "
        "(Lambda's 15 minutes); null means standard; gpu runs on the node's GPU instances (ECS on EC2, "
        "pennflow.gpu in cdk.json) and locally with `docker run --gpus all`",
    ),
    FieldSpec(
        "gpus",
        {"type": "integer", "minimum": 1, "maximum": 8},
        "1 when computeType is gpu",
        "pennflow",
        "GPUs a computeType gpu processor gets (ECS resourceRequirements); app.yml's resources.gpus when unset",
    ),
    FieldSpec(
        "dependsOn",
        {
            "type": ["array", "null"],
            "items": {
                "anyOf": [
                    STRING,
                    {
                        "type": "object",
                        "properties": {"sourceUrl": STRING, "id": STRING},
                        "additionalProperties": False,
                    },
                ]
            },
        },
        "[]",
        "Pennsieve",
        "the processors whose output this one reads; entries are ids or {sourceUrl: ...}; "
        "a processor with none starts with an empty INPUT_DIR",
        item_children=DEPENDENCY_FIELDS,
    ),
    FieldSpec(
        "defaultParams",
        PARAMS,
        "{}",
        "Pennsieve",
        "string values; each becomes an environment variable (run params override them)",
    ),
    FieldSpec(
        "resolvedParams",
        PARAMS,
        "{}",
        "Pennsieve",
        "the API's resolved params; keys missing from defaultParams are added to them",
    ),
    FieldSpec(
        "paramSchema",
        {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "name": STRING,
                    "type": {"enum": ["string", "number", "integer", "boolean"]},
                    "description": STRING,
                    "default": {"type": ["string", "number", "integer", "boolean"]},
                    "required": {"type": "boolean"},
                    "enum": {"type": "array"},
                },
                "required": ["name"],
            },
        },
        "[]",
        "Pennsieve",
        "typed params ({name, type, description, default}): a run's values are checked against their "
        "types before anything starts, and defaults apply; values still reach the processor as strings",
    ),
    FieldSpec(
        "runtimeConfig",
        OPEN_OBJECT,
        "{}",
        "Pennsieve",
        "its cpu, memory, interactive and sessionType are used when the processor sets none; the rest is "
        "Pennsieve's",
    ),
    FieldSpec(
        "targetType",
        {"enum": ["Pennsieve Dataset", "Pennsieve Package Asset", "persistent-layer", "s3"]},
        "-",
        "Pennsieve",
        "what a data target publishes to",
    ),
    FieldSpec(
        "position",
        OPEN_OBJECT,
        "-",
        "Pennsieve",
        "the builder's canvas position",
        note="ignored (layout only)",
    ),
    FieldSpec(
        "interactive",
        {"type": "boolean"},
        "false",
        "Pennsieve",
        "a notebook session: `pennflow run` starts a Jupyter server on the processor's INPUT_DIR and "
        "layers, its working area is its OUTPUT_DIR; only a data target may depend on it",
    ),
    FieldSpec(
        "sessionType",
        {"enum": ["jupyter", "python", "r"]},
        "jupyter",
        "Pennsieve",
        "the session's kind: 'jupyter' (or 'python') is a Python kernel; 'r' is refused (no R sessions); "
        "implies interactive",
    ),
    FieldSpec("image", STRING, "-", "pennflow", "the container image to run (instead of sourceUrl + tag)"),
    FieldSpec(
        "command",
        {"type": "array", "items": STRING},
        "-",
        "pennflow",
        "the command to run (locally without a container runtime, or the image's command)",
    ),
    FieldSpec(
        "cpu",
        NUMBER_OR_TEXT,
        "1024",
        "Pennsieve + pennflow",
        "Fargate cpu units; a number written as text is read as the number",
    ),
    FieldSpec(
        "memory",
        NUMBER_OR_TEXT,
        "2048",
        "Pennsieve + pennflow",
        "MiB; a valid Fargate pair with cpu (Lambda MB when computeType is lambda; any size that fits the "
        "node's GPU instances when computeType is gpu)",
    ),
    FieldSpec(
        "layers",
        {"type": "array", "items": STRING},
        "[]",
        "pennflow",
        "layers mounted read-only; python-env layers join PYTHONPATH",
    ),
    FieldSpec(
        "pennsieveToken",
        {"type": "boolean"},
        "true for processors",
        "pennflow",
        "whether the processor gets a SESSION_TOKEN for the run (false turns it off)",
    ),
    FieldSpec("retry", OPEN_OBJECT, "-", "pennflow", "retries after failure", children=RETRY_FIELDS),
    FieldSpec("timeoutSeconds", {"type": "integer", "minimum": 1}, "86400", "pennflow", "per attempt"),
    FieldSpec(
        "scatter", OPEN_OBJECT, "-", "pennflow", "one task per batch of input files", children=SCATTER_FIELDS
    ),
)

WORKFLOW_FIELDS = (
    FieldSpec(
        "name",
        {"type": "string", "minLength": 1, "maxLength": 255},
        "required",
        "Pennsieve",
        "kept as the display name; a resource-safe name (lower-case, digits, '-', at most 64) is "
        "derived from it for the state machine, the registry and folders",
    ),
    FieldSpec(
        "displayName",
        {"type": "string", "maxLength": 255},
        "-",
        "pennflow",
        "the name as the author gave it, when a resource name was derived (written by pennflow)",
    ),
    FieldSpec("summary", STRING, "-", "Pennsieve", "shown in listings"),
    FieldSpec("description", STRING, "-", "Pennsieve", "shown in listings"),
    FieldSpec(
        "organizationId",
        STRING,
        "-",
        "Pennsieve",
        "given to processors as ORGANIZATION_ID (the node's organization when absent)",
    ),
    FieldSpec("processors", {"type": "array"}, "required", "Pennsieve", "the DAG"),
    FieldSpec(
        "dag",
        {"type": "array"},
        "-",
        "Pennsieve",
        "the API's name for processors (GET /definitions returns it); read as processors",
    ),
    FieldSpec(
        "uuid",
        STRING,
        "-",
        "Pennsieve",
        "the definition's id in Pennsieve",
        note="ignored (pennflow registers workflows by name)",
    ),
    FieldSpec(
        "isActive",
        {"type": "boolean"},
        "true",
        "Pennsieve",
        "archived or not in Pennsieve",
        note="ignored (an archived definition still runs here)",
    ),
    FieldSpec(
        "visibility",
        STRING,
        "-",
        "Pennsieve",
        "who sees the definition in Pennsieve",
        note="ignored (the node's IAM policy decides who runs it)",
    ),
    FieldSpec("createdAt", STRING, "-", "Pennsieve", "audit field", note="ignored (audit field)"),
    FieldSpec("updatedAt", STRING, "-", "Pennsieve", "audit field", note="ignored (audit field)"),
    FieldSpec(
        "createdBy",
        {"type": ["string", "integer"]},
        "-",
        "Pennsieve",
        "audit field",
        note="ignored (audit field)",
    ),
    FieldSpec(
        "userId", {"type": ["string", "integer"]}, "-", "Pennsieve", "the owner", note="ignored (audit field)"
    ),
)


@dataclass(frozen=True)
class FieldProblem:
    path: tuple[str | int, ...]
    message: str


def check_fields(
    data: Mapping[str, Any], specs: tuple[FieldSpec, ...], path: tuple[str | int, ...] = ()
) -> tuple[list[FieldProblem], list[FieldProblem]]:
    """(unknown-field faults, notes for fields pennflow ignores), at every depth the table describes."""
    faults: list[FieldProblem] = []
    notes: list[FieldProblem] = []
    known = {spec.name: spec for spec in specs}
    for key, value in data.items():
        spec = known.get(key) if isinstance(key, str) else None
        where = (*path, key)
        if spec is None:
            faults.append(FieldProblem(where, unknown_message(key, known)))
            continue
        if spec.note and spec.children is None:
            notes.append(FieldProblem(where, spec.note))
        if spec.children is not None and isinstance(value, Mapping):
            if spec.note:
                notes.append(FieldProblem(where, spec.note))
                nested_faults, _ = check_fields(value, spec.children, where)
                faults.extend(nested_faults)
            else:
                nested_faults, nested_notes = check_fields(value, spec.children, where)
                faults.extend(nested_faults)
                notes.extend(nested_notes)
        if spec.item_children is not None and isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, Mapping):
                    nested_faults, _ = check_fields(item, spec.item_children, (*where, index))
                    faults.extend(nested_faults)
    return faults, notes


def unknown_message(key: Any, known: Mapping[str, FieldSpec]) -> str:
    close = difflib.get_close_matches(str(key), list(known), n=1, cutoff=0.6)
    if not close:
        lowered = {name.lower(): name for name in known}
        hit = lowered.get(str(key).lower())
        close = [hit] if hit else []
    hint = f"; did you mean {close[0]}?" if close else f"; known fields: {', '.join(known)}"
    return "unknown field" + hint


def json_schema() -> dict[str, Any]:
    """A JSON Schema (draft 2020-12) of the format as written, for editors and for checks."""
    processor = _object_schema(PROCESSOR_FIELDS)
    workflow = _object_schema(WORKFLOW_FIELDS)
    workflow["properties"]["processors"] = {"type": "array", "items": {"$ref": "#/$defs/processor"}}
    workflow["properties"]["dag"] = {"type": "array", "items": {"$ref": "#/$defs/processor"}}
    workflow["required"] = ["name"]
    workflow["anyOf"] = [{"required": ["processors"]}, {"required": ["dag"]}]
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://pennflow.org/schema/workflow.json",
        "title": "pennflow workflow definition (a superset of Pennsieve's)",
        **workflow,
        "$defs": {"processor": processor},
    }


def _object_schema(specs: tuple[FieldSpec, ...]) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    for spec in specs:
        prop = dict(spec.schema)
        if spec.children is not None:
            prop = {**_object_schema(spec.children), "type": "object"}
        prop["description"] = f"{spec.action} [{spec.owner}; default {spec.default}]"
        properties[spec.name] = prop
    return {"type": "object", "properties": properties, "additionalProperties": False}
