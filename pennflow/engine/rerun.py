"""``pennflow rerun RUN``: a new run of what an earlier local run was given.

The local store records a run's workflow by name and definition hash, its resolved params and its
layer versions, but not the definition itself nor its input folder; the run's folder keeps what it
was started with (``engine.run_spec``, the file ``pennflow resume`` reads too). A rerun reads it
back, checks the definition is the one the run recorded, and starts a new run with it, recorded
``rerun_of`` the original. Layers are given by name, so a rerun gets their current READY versions,
as the node's rerun does.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from pennflow.engine.home import PennflowHome
from pennflow.engine.run_spec import RunSpec, load_spec, spec_path
from pennflow.workflow.definition import Workflow


class RerunRefused(Exception):
    """The run cannot be repeated here (no spec kept, or one that no longer reads)."""


def load_request(home: PennflowHome, run_id: str, definition_hash: str) -> tuple[RunSpec, Workflow]:
    """What run ``run_id`` was given, and its workflow; RerunRefused says why not."""
    path = spec_path(home, run_id)
    spec = load_spec(home, run_id)
    if spec is None:
        raise RerunRefused(
            f"run {run_id} kept no readable record of what it was given ({path} is missing or unreadable: "
            "it ran before reruns were recorded, or its folder was removed); start it again with `pennflow run`"
        )
    try:
        workflow = spec.workflow()
    except ValidationError as exc:
        raise RerunRefused(f"cannot read the definition in {path}: {exc.error_count()} error(s)") from None
    if workflow.definition_hash() != definition_hash:
        raise RerunRefused(
            f"{path} holds definition {workflow.definition_hash()[:12]}, but run {run_id} recorded "
            f"{definition_hash[:12]}: the record was changed; start the run again with `pennflow run`"
        )
    return spec, workflow


def rerun_arguments(spec: RunSpec) -> dict[str, Any]:
    """The keyword arguments of ``run_workflow`` that repeat ``spec`` (the CLI's own options aside)."""
    return {
        "definition_dir": spec.definition_dir,
        "input_dir": spec.input_dir,
        "dataset_id": spec.dataset_id,
        "package_ids": spec.package_ids,
        "params": spec.overrides,
        "layers": spec.run_layers,
        "publish": spec.publish,
        "allow_cpu": spec.allow_cpu,
    }
