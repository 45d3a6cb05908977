"""What a local run is given, and the checks made before anything runs.

Every problem is collected (not only the first) and names the option or processor at fault: the
inputs (``--input``, ``--dataset``, ``--package``), each data target's ``--publish`` settings and
a persistent-layer target's ``layerName``. Pennsieve and the data targets' module are imported only
when a check needs them, so a run without ``--dataset``/``--publish`` never loads their clients.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pennflow.layers.models import InvalidLayerName, check_layer_name
from pennflow.workflow.definition import Processor, ProcessorType, TargetType, Workflow


class InvalidRunInput(ValueError):
    """The run cannot start: every problem found, each naming the option or processor at fault."""

    def __init__(self, problems: Sequence[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


@dataclass(frozen=True)
class RunInputs:
    """Where the data sources' files come from, and whether data targets publish."""

    input_dir: Path | None
    dataset_id: str | None
    package_ids: tuple[str, ...]
    publish: bool
    results_bucket: str | None


def is_layer_target(processor: Processor) -> bool:
    return processor.target_type is TargetType.PERSISTENT_LAYER


def is_pennsieve_target(processor: Processor) -> bool:
    return processor.target_type in (TargetType.PENNSIEVE_DATASET, TargetType.PENNSIEVE_PACKAGE_ASSET)


def target_layer_problems(workflow: Workflow, params: dict[str, dict[str, str]]) -> list[str]:
    """A --param may override a persistent-layer target's layerName: check it before anything runs."""
    problems = []
    for processor in filter(is_layer_target, workflow.processors):
        name = params.get(processor.id, {}).get("layerName")
        if name is None:  # the params themselves were refused
            continue
        if not name:
            problems.append(
                f"processor {processor.id!r}: layerName: none given; pass it with the run "
                f"(--param layerName=NAME)"
            )
            continue
        try:
            check_layer_name(name)
        except InvalidLayerName as exc:
            problems.append(f"processor {processor.id!r}: layerName: {exc}")
    return problems


def needs_pennsieve(workflow: Workflow, inputs: RunInputs) -> bool:
    return inputs.dataset_id is not None or (
        inputs.publish and any(map(is_pennsieve_target, workflow.processors))
    )


def pennsieve_problem() -> str | None:
    """Why this machine cannot reach Pennsieve (no credentials, a malformed host), else None."""
    from pydantic import ValidationError

    from pennflow.pennsieve import CredentialsNotFound, PennsieveHosts, resolve_credentials

    try:
        resolve_credentials()
        PennsieveHosts.from_env()
    except CredentialsNotFound as exc:
        return str(exc)
    except ValidationError as exc:
        env = {"api": "PENNSIEVE_API_HOST", "api2": "PENNSIEVE_API2_HOST"}
        return "; ".join(f"{env.get(str(e['loc'][0]), e['loc'][0])}: {e['msg']}" for e in exc.errors())
    return None


def input_problems(workflow: Workflow, inputs: RunInputs, pennsieve_problem: str | None) -> list[str]:
    sources = [p.id for p in workflow.processors if p.type is ProcessorType.DATA_SOURCE]
    input_dir, dataset_id = inputs.input_dir, inputs.dataset_id
    if inputs.package_ids and dataset_id is None:
        return ["--package: needs --dataset"]
    if dataset_id is not None:
        if input_dir is not None:
            return ["--input and --dataset: give one or the other, not both"]
        if not sources:
            return ["--dataset: the workflow has no data source to receive it"]
        if not dataset_id.strip():
            return ["--dataset: must be a dataset id, got an empty string"]
        return [f"--dataset: {pennsieve_problem}"] if pennsieve_problem else []
    if input_dir is None:
        if sources:
            names = ", ".join(repr(s) for s in sources)
            return [
                f"--input: required, the workflow's data source {names} needs a folder of files "
                "(or --dataset ID for a Pennsieve dataset)"
            ]
        return []
    if not sources:
        return ["--input: the workflow has no data source to receive it"]
    folder = input_dir
    if not folder.is_dir():
        return [f"--input: {folder} is not a folder"]
    if not any(p.is_file() for p in folder.rglob("*")):
        return [f"--input: {folder} holds no files"]
    return []


def publish_problems(
    workflow: Workflow, params: dict[str, dict[str, str]], inputs: RunInputs, pennsieve_problem: str | None
) -> list[str]:
    """Each data target must be able to do what the run asks of it (copy, or copy and publish)."""
    targets = [p for p in workflow.processors if p.type is ProcessorType.DATA_TARGET]
    if inputs.publish and not targets:
        return ["--publish: the workflow has no data target"]
    if not targets:
        return []
    from pennflow.data.targets import PARAM_DATASET, TargetError, local_target_plan

    problems = []
    for target in targets:
        if is_layer_target(target):  # populates its layer whether or not the run publishes
            continue
        assert target.target_type is not None
        try:
            local_target_plan(
                target.target_type,
                publish_requested=inputs.publish,
                has_credentials=pennsieve_problem is None,
                results_bucket=inputs.results_bucket,
            )
        except TargetError as exc:
            detail = f" ({pennsieve_problem})" if is_pennsieve_target(target) and pennsieve_problem else ""
            problems.append(f"processor {target.id!r}: {exc}{detail}")
            continue
        target_params = params.get(target.id, target.default_params)
        has_dataset = target_params.get(PARAM_DATASET) or inputs.dataset_id
        if inputs.publish and is_pennsieve_target(target) and not has_dataset:
            problems.append(
                f"processor {target.id!r}: --publish to a {target.target_type.value} target needs a dataset: "
                f"set its defaultParams.{PARAM_DATASET} or start the run with --dataset"
            )
        if inputs.publish and target.target_type is TargetType.PENNSIEVE_PACKAGE_ASSET:
            from pennflow.data.package_asset import asset_settings

            try:
                asset_settings(target_params, inputs.package_ids)
            except TargetError as exc:
                problems.append(f"processor {target.id!r}: {exc}")
    return problems
