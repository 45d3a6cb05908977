"""The processor contract of DESIGN §3, in one place for the local engine and the compute node.

Both sides build a processor's environment and its run folders with these functions, which is
what lets a pipeline run unchanged from laptop to cloud.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath, PurePosixPath

from pennflow.workflow.definition import Processor, ProcessorType, TargetType, Workflow
from pennflow.workflow.limits import is_name
from pennflow.workflow.typed_params import ParamProblem, declared_defaults, param_value_problems

# Mount points inside an ECS task: the run's own access point and the layers it requested.
RUN_MOUNT = PurePosixPath("/mnt/run")
LAYERS_MOUNT = PurePosixPath("/mnt/layers")
# A python-env layer keeps its packages in Pennsieve's layout, <layer>/lib/python3.<minor>/site-packages
# (what pennflow's builder writes), or in the Lambda-layer layout <layer>/python (what pennflow wrote
# before). PYTHONPATH names both, for every minor version a processor may run, so layers built either
# way are interchangeable; the path is fixed (no look into the layer), the same locally and on ECS.
LAYER_PYTHON_SUBDIR = "python"
SITE_PACKAGES_MINORS = tuple(range(14, 8, -1))  # Python 3.14 ... 3.9


def layer_site_dirs(layer_dir: PurePath) -> list[PurePath]:
    return [layer_dir / LAYER_PYTHON_SUBDIR] + [
        layer_dir / "lib" / f"python3.{minor}" / "site-packages" for minor in SITE_PACKAGES_MINORS
    ]


def env_name(name: str) -> str:
    """``band-power`` -> ``BAND_POWER`` (ids and layer names are lower-case, digits and '-')."""
    return name.upper().replace("-", "_")


def state_key(processor_id: str) -> str:
    """A JSONPath-safe key for a processor in the execution input (ids never contain '_')."""
    key = processor_id.replace("-", "_")
    return f"_{key}" if key[0].isdigit() else key


@dataclass(frozen=True)
class RunLayout:
    """``<root>/<processor_id>/output/`` per processor (DESIGN §4); root is the run's folder."""

    root: PurePath

    def processor_dir(self, processor_id: str) -> PurePath:
        return self.root / processor_id

    def output_dir(self, processor_id: str) -> PurePath:
        return self.processor_dir(processor_id) / "output"

    def union_dir(self, processor_id: str) -> PurePath:
        """Fan-in: the union of the dependencies' outputs."""
        return self.processor_dir(processor_id) / "input"

    def batch_dir(self, processor_id: str, index: int) -> PurePath:
        return self.processor_dir(processor_id) / "batches" / f"{index:05d}"

    def input_dir(self, processor: Processor) -> PurePath | None:
        deps = processor.dependencies
        if not deps:
            # A processor with no dependencies starts with an empty INPUT_DIR; a data source has none.
            return self.union_dir(processor.id) if builds_union(processor) else None
        if len(deps) == 1:
            return self.output_dir(deps[0])
        return self.union_dir(processor.id)


def builds_union(processor: Processor) -> bool:
    """Whether INPUT_DIR is built before the processor starts: a fan-in union, or empty for a root."""
    deps = processor.dependencies
    return len(deps) > 1 or (not deps and processor.type is ProcessorType.PROCESSOR)


def static_environment(
    workflow: Workflow, processor: Processor, layout: RunLayout, layers_root: PurePath
) -> dict[str, str]:
    """Everything in the environment that does not depend on the run (ids, paths, layers).

    ``LAYERS_DIR`` is a constant of the node, so on AWS it lives in the task definition.
    """
    env = {"PROCESSOR_ID": processor.id, "WORKFLOW_NAME": workflow.name}
    input_dir = layout.input_dir(processor)
    if input_dir is not None:
        env["INPUT_DIR"] = str(input_dir)
    if len(processor.dependencies) > 1:
        for dep in processor.dependencies:
            env[f"INPUT_DIR_{env_name(dep)}"] = str(layout.output_dir(dep))
    env["OUTPUT_DIR"] = str(layout.output_dir(processor.id))
    for layer in processor.layers:
        env[f"LAYER_{env_name(layer)}_DIR"] = str(layers_root / layer)
    return env


def python_path(processor: Processor, layers_root: PurePath, inherited: str | None = None) -> str | None:
    """Each requested layer's package folders (either layout, see ``layer_site_dirs``), then any inherited path."""
    return layers_python_path(processor.layers, layers_root, inherited)


def layers_python_path(
    layers: Sequence[str], layers_root: PurePath, inherited: str | None = None
) -> str | None:
    parts = [str(path) for layer in layers for path in layer_site_dirs(layers_root / layer)]
    if inherited:
        parts.append(inherited)
    return os.pathsep.join(parts) if parts else None


def run_parameters(
    workflow: Workflow, overrides: Mapping[str, str] | None = None
) -> dict[str, dict[str, str]]:
    """Each processor's params: its defaults, with run-level overrides applied to declared keys only.

    An override for a key no processor declares is an error, so a typo never goes unnoticed.
    Overrides may be ``KEY`` (every processor declaring it) or ``processor.KEY``.
    """
    overrides = dict(overrides or {})
    # Typed params' defaults apply, and a typed param without one may still be given by the run.
    params = {p.id: declared_defaults(p.param_schema, p.default_params) for p in workflow.processors}
    typed = {p.id: {spec.name for spec in p.param_schema} for p in workflow.processors}
    unknown = []
    for raw_key, value in overrides.items():
        target, _, key = raw_key.rpartition(".")
        hits = [
            pid
            for pid, declared in params.items()
            if (key in declared or key in typed[pid]) and (not target or pid == target)
        ]
        if not hits:
            unknown.append(raw_key)
        for pid in hits:
            params[pid][key] = value
    if unknown:
        raise UnknownParameter(unknown)
    return params


def typed_param_problems(workflow: Workflow, params: Mapping[str, Mapping[str, str]]) -> list[ParamProblem]:
    """Every typed param's value checked against its type (``typed_params``), for every processor."""
    problems: list[ParamProblem] = []
    for processor in workflow.processors:
        problems += param_value_problems(processor.id, processor.param_schema, params.get(processor.id, {}))
    return problems


def run_param_problems(workflow: Workflow, params: Mapping[str, Mapping[str, str]]) -> list[str]:
    """Params a run must supply itself, checked before anything runs (never after processors ran).

    A persistent-layer target whose definition leaves ``layerName`` empty takes it from the run,
    as Pennsieve's layer-populate workflows do.
    """
    problems = []
    for processor in workflow.processors:
        if processor.target_type is not TargetType.PERSISTENT_LAYER:
            continue
        name = params.get(processor.id, {}).get("layerName", "")
        if not name:
            problems.append(
                f"processor {processor.id!r}: layerName: none given; pass it with the run "
                f"(layerName=NAME or {processor.id}.layerName=NAME)"
            )
        elif not is_name(name):
            problems.append(f"processor {processor.id!r}: layerName: {name!r} is not a valid layer name")
    return problems


def parse_overrides(items: Sequence[str]) -> dict[str, str]:
    """``--param`` values (``KEY=VALUE`` or ``PROCESSOR.KEY=VALUE``) as run-level overrides."""
    overrides: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--param {item!r}: expected KEY=VALUE or PROCESSOR.KEY=VALUE")
        overrides[key.strip()] = value
    return overrides


class UnknownParameter(ValueError):
    def __init__(self, keys: Sequence[str]):
        self.keys = list(keys)
        super().__init__(
            "no processor declares param(s) "
            + ", ".join(repr(k) for k in self.keys)
            + " in defaultParams (use KEY or processor.KEY)"
        )


def processor_environment(
    workflow: Workflow,
    processor: Processor,
    *,
    run_id: str,
    layout: RunLayout,
    layers_root: PurePath,
    params: Mapping[str, str],
    dataset_id: str | None = None,
    inherited_pythonpath: str | None = None,
) -> dict[str, str]:
    """The full environment a processor starts with (local engine; prepare Lambda checks sizes)."""
    env = dict(params)
    env.update(static_environment(workflow, processor, layout, layers_root))
    env["RUN_ID"] = run_id
    env["DATASET_ID"] = dataset_id or ""
    env["LAYERS_DIR"] = str(layers_root)
    path = python_path(processor, layers_root, inherited_pythonpath)
    if path:
        env["PYTHONPATH"] = path
    return env


# ------------------------------------------------------------------ fan-in and scatter


class FanInClash(RuntimeError):
    """Two dependencies wrote the same relative path, so the union INPUT_DIR would be ambiguous."""


def build_union(sources: Mapping[str, Path], dest: Path) -> int:
    """Hard-link (or copy, across devices) every file of each source into ``dest``; returns the count."""
    owner: dict[Path, str] = {}
    plan: list[tuple[Path, Path]] = []
    for dep, root in sources.items():
        for path in sorted(p for p in Path(root).rglob("*") if p.is_file()):
            rel = path.relative_to(root)
            if rel in owner:
                raise FanInClash(f"fan-in clash: {rel} is written by both {owner[rel]!r} and {dep!r}")
            owner[rel] = dep
            plan.append((path, dest / rel))
    for src, dst in plan:
        dst.parent.mkdir(parents=True, exist_ok=True)
        _link_or_copy(src, dst)
    dest.mkdir(parents=True, exist_ok=True)
    return len(plan)


def list_input_files(input_dir: Path) -> list[str]:
    return sorted(p.relative_to(input_dir).as_posix() for p in input_dir.rglob("*") if p.is_file())


def make_batches(files: Sequence[str], batch_size: int) -> list[list[str]]:
    return [list(files[i : i + batch_size]) for i in range(0, len(files), batch_size)]


def stage_batch(input_dir: Path, files: Sequence[str], batch_dir: Path) -> None:
    """A batch's INPUT_DIR: links to just its files, keeping their relative paths."""
    for rel in files:
        dst = batch_dir / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        _link_or_copy(input_dir / rel, dst)
    batch_dir.mkdir(parents=True, exist_ok=True)


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
