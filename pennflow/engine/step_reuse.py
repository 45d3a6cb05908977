"""Each step's key and output hash in a local run, and the reuse of an earlier attempt's step.

Every run records, when a step succeeds, its key (``pennflow.data.step_keys``) and the hash of its
OUTPUT_DIR. A resumed run is given the steps of the attempt it continues: a step whose key matches
one that SUCCEEDED there, and whose folder still hashes to what was recorded, is reused instead of
run. Keys are computed when a step is about to start, once its dependencies have ended, since they
cover the dependencies' outputs. Data sources always run again: the input is read afresh (a
download skips the files it verified), and the steps after it are reused when it wrote the same bytes.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pennflow.data.step_keys import command_identity, folder_hash, step_key
from pennflow.engine.run_plan import RunPlan
from pennflow.workflow.definition import Processor, ProcessorType
from pennflow.workflow.runs import Status, StepRecord


class StepReuse:
    def __init__(
        self,
        plan: RunPlan,
        *,
        definition_dir: Path,
        use_docker: bool,
        run_input: Any,
        previous: Mapping[str, StepRecord] | None = None,
        previous_attempt: int | None = None,
    ):
        self.plan = plan
        self.definition_dir = definition_dir
        self.use_docker = use_docker
        self.run_input = run_input
        self.previous = dict(previous or {})
        self.previous_attempt = previous_attempt
        self._keys: dict[str, str] = {}
        self._outputs: dict[str, str | None] = {}
        self._lock = threading.Lock()

    def key(self, processor: Processor) -> str:
        """The step's key; its dependencies have ended (they succeeded, or it would not start)."""
        with self._lock:
            if processor.id not in self._keys:
                upstream = {
                    dep: (self._keys.get(dep), self._outputs.get(dep)) for dep in processor.dependencies
                }
                self._keys[processor.id] = step_key(
                    processor,
                    params=self.plan.params.get(processor.id, processor.default_params),
                    runs=self._runs(processor),
                    layers=self._pins(processor),
                    upstream=upstream,
                    run_input=self.run_input,
                )
            return self._keys[processor.id]

    def kept_outputs(self) -> frozenset[str]:
        """The processors whose OUTPUT_DIR an earlier attempt left SUCCEEDED: a resume may reuse them,
        so nothing may empty them before ``reusable`` has looked."""
        return frozenset(pid for pid, step in self.previous.items() if step.status is Status.SUCCEEDED)

    def reusable(self, processor: Processor, output_dir: Path) -> StepRecord | None:
        """The earlier step whose output this one may keep, or None when it must run."""
        if processor.type is ProcessorType.DATA_SOURCE:
            return None  # the input is read again: what was computed from unchanged bytes is reused
        before = self.previous.get(processor.id)
        if before is None or before.status is not Status.SUCCEEDED or not before.step_key:
            return None
        if before.step_key != self.key(processor) or before.output_hash is None:
            return None
        if folder_hash(output_dir) != before.output_hash:  # changed or removed since it succeeded
            return None
        return before

    def succeeded(self, processor: Processor, output_dir: Path) -> dict[str, Any]:
        """The fields a SUCCEEDED step records; what its dependents' keys will cover."""
        key = self.key(processor)
        output = folder_hash(output_dir)
        with self._lock:
            self._outputs[processor.id] = output
        return {"step_key": key, "output_hash": output}

    def _runs(self, processor: Processor) -> Any:
        """What the step runs, as the launcher would choose it (``ProcessLauncher.spec``)."""
        if processor.is_builtin:
            return {"builtin": processor.type.value}
        if self.use_docker and processor.image:
            # As written: asking Docker for a digest would cost every run a `docker image inspect`,
            # so an image rebuilt under the same tag is not noticed (a digest reference is).
            return {"image": processor.image}
        if processor.command:
            return command_identity(processor.command, self.definition_dir)
        return {"image": processor.image, "source": processor.source_url, "tag": processor.tag}

    def _pins(self, processor: Processor) -> list[list[str | None]]:
        mounts = self.plan.layers.mounts
        pins = []
        for name in processor.layers:
            mount = mounts.get(name)
            entry = mount.run_entry() if mount is not None else {"name": name}
            pins.append([entry["name"], entry.get("version"), entry.get("checksum")])
        return pins
