"""``pennflow rerun RUN``: a new run of what an earlier local run was given.

The local store records a run's workflow by name and definition hash, its resolved params and its
layer versions, but not the definition itself nor its input folder. So every run keeps, in its own
folder, what it was given (``request.json``: the definition, the folder its commands run in, the
input folder or dataset, the ``--param`` overrides, the layers and ``--publish``); a rerun reads it
back, checks the definition is the one the run recorded, and starts a new run with it, recorded
``rerun_of`` the original. Layers are given by name, so a rerun gets their current READY versions,
as the node's rerun does.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from pennflow.engine.home import PennflowHome
from pennflow.engine.run_checks import RunInputs
from pennflow.workflow.definition import Workflow, validate_definition

REQUEST_NAME = "request.json"


class RerunRefused(Exception):
    """The run cannot be repeated here (no request kept, or one that no longer reads)."""


class RunRequest(BaseModel):
    definition: dict[str, Any]
    definition_dir: str
    input_dir: str | None = None
    dataset_id: str | None = None
    package_ids: list[str] = Field(default_factory=list)
    params: dict[str, str] = Field(default_factory=dict)
    layers: list[str] = Field(default_factory=list)
    publish: bool = False


def request_path(run_dir: Path) -> Path:
    return run_dir / REQUEST_NAME


def save_request(
    run_dir: Path,
    workflow: Workflow,
    definition_dir: str | os.PathLike[str],
    inputs: RunInputs,
    params: Mapping[str, str] | None,
    layers: Sequence[str],
) -> None:
    request = RunRequest(
        definition=workflow.model_dump(mode="json", by_alias=True, exclude_none=True),
        definition_dir=str(Path(definition_dir).absolute()),
        input_dir=str(inputs.input_dir) if inputs.input_dir is not None else None,
        dataset_id=inputs.dataset_id,
        package_ids=list(inputs.package_ids),
        params=dict(params or {}),
        layers=list(layers),
        publish=inputs.publish,
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    request_path(run_dir).write_text(request.model_dump_json(indent=2))


def load_request(home: PennflowHome, run_id: str, definition_hash: str) -> tuple[RunRequest, Workflow]:
    """What run ``run_id`` was given, and its workflow; RerunRefused says why not."""
    path = request_path(home.run_dir(run_id))
    try:
        request = RunRequest.model_validate(json.loads(path.read_text()))
    except FileNotFoundError:
        raise RerunRefused(
            f"run {run_id} kept no record of what it was given ({path} is missing: it ran before reruns "
            "were recorded, or its folder was removed); start it again with `pennflow run`"
        ) from None
    except (OSError, ValueError, ValidationError) as exc:
        raise RerunRefused(f"cannot read {path}: {exc}") from None
    workflow = validate_definition(request.definition, str(path))
    if workflow.definition_hash() != definition_hash:
        raise RerunRefused(
            f"{path} holds definition {workflow.definition_hash()[:12]}, but run {run_id} recorded "
            f"{definition_hash[:12]}: the record was changed; start the run again with `pennflow run`"
        )
    return request, workflow


def rerun_arguments(request: RunRequest) -> dict[str, Any]:
    """The keyword arguments of ``run_workflow`` that repeat ``request``."""
    return {
        "definition_dir": request.definition_dir,
        "input_dir": request.input_dir,
        "dataset_id": request.dataset_id,
        "package_ids": request.package_ids,
        "params": request.params,
        "layers": request.layers,
        "publish": request.publish,
    }
