"""What a local run was started with, kept in its folder so that ``pennflow resume`` can start it again.

``runs/<run_id>/run-spec.json``: the definition as run, its folder, the input, the overrides and
options. A processor id never holds a dot, so the file cannot be a processor's folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pennflow.engine.home import PennflowHome
from pennflow.workflow.definition import Workflow

SPEC_NAME = "run-spec.json"


class RunSpec(BaseModel):
    model_config = ConfigDict(extra="ignore")

    definition: dict[str, Any]  # the workflow as run (by alias, as a definition file writes it)
    definition_dir: str
    input_dir: str | None = None
    dataset_id: str | None = None
    package_ids: list[str] = Field(default_factory=list)
    overrides: dict[str, str] = Field(default_factory=dict)  # the --param values, as given
    run_layers: list[str] = Field(default_factory=list)
    max_parallel: int | None = None
    docker: bool | None = None
    publish: bool = False
    allow_cpu: bool = False  # computeType gpu processors run on the CPU where no GPU is (engine.gpus)

    def workflow(self) -> Workflow:
        """The definition as run (validated when the run started); ValidationError when it no longer loads."""
        return Workflow.model_validate(self.definition)


def spec_path(home: PennflowHome, run_id: str) -> Path:
    return home.run_dir(run_id) / SPEC_NAME


def save_spec(home: PennflowHome, run_id: str, spec: RunSpec) -> None:
    path = spec_path(home, run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(spec.model_dump_json(indent=2), encoding="utf-8")
    temporary.replace(path)  # never half a spec


def load_spec(home: PennflowHome, run_id: str) -> RunSpec | None:
    """The run's spec; None when it has none (a run from before resume existed, or its folder was removed)."""
    path = spec_path(home, run_id)
    try:
        return RunSpec.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, ValidationError):  # missing or unreadable: nothing to resume from
        return None
