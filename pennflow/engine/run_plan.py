"""A local run's plan: every check made and every layer pinned before the first processor starts."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pennflow.engine.home import PennflowHome
from pennflow.engine.run_checks import (
    InvalidRunInput,
    RunInputs,
    input_problems,
    needs_pennsieve,
    pennsieve_problem,
    publish_problems,
    target_layer_problems,
)
from pennflow.engine.run_layers import RunLayers, mount_layers, requested_layers
from pennflow.workflow.contract import UnknownParameter, run_parameters, typed_param_problems
from pennflow.workflow.definition import Processor, Workflow


@dataclass(frozen=True)
class RunPlan:
    workflow: Workflow
    processors: dict[str, Processor]  # with the run-level layers added
    params: dict[str, dict[str, str]]
    layers: RunLayers
    inputs: RunInputs
    max_parallel: int


def plan_run(
    workflow: Workflow,
    home: PennflowHome,
    run_id: str,
    inputs: RunInputs,
    overrides: Mapping[str, str] | None,
    run_layers: Sequence[str],
    max_parallel: int | None,
) -> RunPlan:
    """The plan, or InvalidRunInput with every problem found (the pinned layers released again)."""
    problems: list[str] = []
    params: dict[str, dict[str, str]] = {}
    try:
        params = run_parameters(workflow, overrides)
    except UnknownParameter as exc:
        problems.append(f"--param: {exc}")
    problems += [f"--param: {problem}" for problem in typed_param_problems(workflow, params)]
    run_layers = tuple(dict.fromkeys(run_layers))
    processors = {
        p.id: p.model_copy(update={"layers": list(dict.fromkeys([*run_layers, *p.layers]))})
        for p in workflow.processors
    }
    problems += target_layer_problems(workflow, params)
    pennsieve = pennsieve_problem() if needs_pennsieve(workflow, inputs) else None
    problems += input_problems(workflow, inputs, pennsieve)
    problems += publish_problems(workflow, params, inputs, pennsieve)
    if max_parallel is not None and max_parallel < 1:
        problems.append(f"--max-parallel: must be at least 1, got {max_parallel}")
    layers = mount_layers(home, run_id, requested_layers(run_layers, workflow.processors), workflow, problems)
    if problems:
        layers.close(run_id)
        raise InvalidRunInput(problems)
    return RunPlan(workflow, processors, params, layers, inputs, max_parallel or os.cpu_count() or 1)
