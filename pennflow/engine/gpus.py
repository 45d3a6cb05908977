"""``computeType: gpu`` on this machine: whether it has a GPU, and how each gpu processor runs.

A gpu processor with an image runs in a container with ``--gpus all`` (Docker with the NVIDIA
container toolkit, or Podman with its CDI hook) when the machine has an NVIDIA GPU: ``nvidia-smi -L``
lists one, or, without nvidia-smi, an ``/dev/nvidiaN`` device exists. Otherwise the run is refused
before it starts, naming the processor and why, unless ``--allow-cpu`` is given: then it runs as a
standard processor (on the CPU) and the run says so in one line. A gpu processor that would run as
a command or from a virtual environment (no container runtime) sees no GPU in the sandbox, so it
too needs ``--allow-cpu``.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from pennflow.engine.run_checks import InvalidRunInput
from pennflow.workflow.definition import ComputeType, Processor

logger = logging.getLogger(__name__)

NVIDIA_SMI_TIMEOUT_SECONDS = 10
DEVICE_DIR = Path("/dev")
_DEVICE_RE = re.compile(r"^nvidia\d+$")


@dataclass(frozen=True)
class LocalGpus:
    count: int
    how: str  # what was seen: "nvidia-smi -L lists 2", "/dev/nvidia0", or why none was

    @property
    def present(self) -> bool:
        return self.count > 0


def detect_gpus(device_dir: Path = DEVICE_DIR) -> LocalGpus:
    """NVIDIA GPUs of this machine: ``nvidia-smi -L`` when installed, else its device files."""
    smi = shutil.which("nvidia-smi")
    if smi is not None:
        try:
            done = subprocess.run(
                [smi, "-L"],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=NVIDIA_SMI_TIMEOUT_SECONDS,
                check=False,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            return LocalGpus(0, f"nvidia-smi -L failed ({exc})")
        listed = [line for line in done.stdout.splitlines() if line.startswith("GPU ")]
        if done.returncode == 0 and listed:
            return LocalGpus(len(listed), f"nvidia-smi -L lists {len(listed)}")
        return LocalGpus(0, f"nvidia-smi -L lists no GPU (exit code {done.returncode})")
    try:
        devices = sorted(p.name for p in device_dir.iterdir() if _DEVICE_RE.match(p.name))
    except OSError:
        devices = []
    if devices:
        return LocalGpus(len(devices), ", ".join(f"{device_dir}/{name}" for name in devices))
    return LocalGpus(0, f"no nvidia-smi and no {device_dir}/nvidia* device")


@cache
def machine_gpus() -> LocalGpus:
    """Checked once per process."""
    return detect_gpus()


def gpu_placement(
    processors: Iterable[Processor], *, use_containers: bool, allow_cpu: bool, gpus: LocalGpus | None = None
) -> frozenset[str]:
    """The ids of the gpu processors that get ``--gpus all``; raises InvalidRunInput naming each one
    this machine cannot give a GPU (unless ``allow_cpu``: those run on the CPU, said in one line)."""
    wanted = [p for p in processors if p.compute_type is ComputeType.GPU]
    if not wanted:
        return frozenset()
    found = gpus if gpus is not None else machine_gpus()
    placed, problems = set(), []
    for processor in wanted:
        if not (use_containers and processor.image):
            problems.append(
                f"processor {processor.id!r} is computeType gpu and runs here without a container "
                "(no container runtime, or no image), where it gets no GPU"
            )
        elif not found.present:
            problems.append(
                f"processor {processor.id!r} is computeType gpu and this machine has no GPU ({found.how})"
            )
        else:
            placed.add(processor.id)
    if problems and not allow_cpu:
        raise InvalidRunInput(
            [
                *problems,
                "run it on a node with GPU capacity (pennflow.gpu.enabled), or pass --allow-cpu to run it "
                "here on the CPU",
            ]
        )
    for problem in problems:
        logger.warning("%s: --allow-cpu, so it runs on the CPU", problem)
    return frozenset(placed)
