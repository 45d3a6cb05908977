"""The API's side of computeType gpu: the node's GPU capacity, and refusing what it cannot run.

Used when a workflow is registered (POST /workflows, and ``pennflow run --remote``, which registers
first) and when a run pins sourceUrl processors whose app.yml makes them gpu.
"""

from __future__ import annotations

import os

from pennflow.api.errors import InvalidRequest, field_error
from pennflow.node.gpu import GpuCapacity, registration_problems
from pennflow.workflow.definition import Workflow


def node_gpu_capacity() -> GpuCapacity:
    """The node's GPU capacity provider and instance types, as the stack set them in the environment."""
    return GpuCapacity.from_env(os.environ)


def refuse_without_gpu_capacity(workflow: Workflow, gpu: GpuCapacity) -> None:
    """422 naming each computeType gpu processor this node cannot run, and the setting that would."""
    problems = registration_problems(workflow, gpu)
    if problems:
        raise InvalidRequest(
            "; ".join(f"processor {pid!r}: {why}" for pid, why in problems.items()),
            fields=[field_error(f"processors.{pid}.computeType", why) for pid, why in problems.items()],
            code="no_gpu_capacity",
        )
