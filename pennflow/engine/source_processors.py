"""Processors given as ``sourceUrl@tag`` in a local run: resolved before the run is planned.

Each one is cloned, its ``app.yml`` read and its image built (``pennflow.processors.local``); the
run then sees the processor with the image set (the container path of ``processes``) or, without a
container runtime, a ``VenvLaunch`` that ``venv_spec`` turns into the attempt's process. Every
problem (git, manifest, build, a Dockerfile that is not plain) refuses the run before it starts.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from pennflow.engine.home import PennflowHome
from pennflow.engine.launchers import LaunchSpec, container_command_name
from pennflow.engine.run_checks import InvalidRunInput
from pennflow.workflow.definition import Workflow

if TYPE_CHECKING:  # imported by a run that has sourceUrl processors (git, manifests, venvs)
    from pennflow.processors.local import LocalSource, VenvLaunch

logger = logging.getLogger(__name__)

CACHE_DIR = "processors"  # under PENNFLOW_HOME: checkouts, staged files, virtual environments


def resolve_sources(
    workflow: Workflow, home: PennflowHome, definition_dir: Path, use_docker: bool
) -> tuple[Workflow, dict[str, VenvLaunch]]:
    """The workflow with each sourceUrl processor resolved, and the ones that run from a venv."""
    # An image or a command given beside the sourceUrl is how the definition asks to run it here. An
    # interactive processor's sourceUrl names Pennsieve's notebook environment: here the session runs
    # this installation's Jupyter.
    sourced = [
        p
        for p in workflow.processors
        if p.source_url and not p.image and not p.command and not p.is_builtin and not p.interactive
    ]
    if not sourced:
        return workflow, {}
    from pennflow.processors.local import SourceProblem, resolve

    resolved: dict[str, LocalSource] = {}
    problems: list[str] = []
    for processor in sourced:
        try:
            resolved[processor.id] = resolve(
                processor,
                definition_dir=definition_dir,
                cache_root=home.root / CACHE_DIR,
                use_docker=use_docker,
                container=container_command_name(),
            )
        except SourceProblem as exc:
            problems.append(str(exc))
    if problems:
        raise InvalidRunInput(problems)
    for source in resolved.values():
        for note in source.notes:
            logger.warning(note)
    processors = [resolved[p.id].processor if p.id in resolved else p for p in workflow.processors]
    launches = {pid: source.venv for pid, source in resolved.items() if source.venv is not None}
    return workflow.model_copy(update={"processors": processors}), launches


def source_pins(workflow: Workflow, launches: Mapping[str, VenvLaunch]) -> dict[str, str]:
    """What each sourceUrl processor ran as, for the run's record: its built image, or its venv."""
    pins = {p.id: p.image for p in workflow.processors if p.source_url and p.image}
    pins.update({pid: launch.pin for pid, launch in launches.items()})
    return pins


def venv_spec(
    launch: VenvLaunch, contract_env: Mapping[str, str], inherited: Mapping[str, str]
) -> LaunchSpec:
    """The attempt's process: the Dockerfile's ENV under the contract's, the venv first on PATH.

    A PYTHONPATH from both (the layers' folders and the Dockerfile's) keeps both, the layers first.
    """
    env = {**inherited, **launch.env, **contract_env}
    paths = [contract_env.get("PYTHONPATH"), launch.env.get("PYTHONPATH")]
    joined = os.pathsep.join(path for path in paths if path)
    if joined:
        env["PYTHONPATH"] = joined
    env["VIRTUAL_ENV"] = str(launch.venv)
    env["PATH"] = os.pathsep.join([str(launch.venv / "bin"), env.get("PATH") or os.defpath])
    env.pop("PYTHONHOME", None)
    return LaunchSpec(list(launch.argv), env, launch.cwd)
