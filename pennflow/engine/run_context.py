"""What every part of one local run shares: its plan, folders, logs, records and stop switch."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pennflow.engine.cancel import RunStop
from pennflow.engine.home import PennflowHome
from pennflow.engine.lease import EngineLeaseKeeper, NoLease
from pennflow.engine.outcomes import StepLogs
from pennflow.engine.records import RunRecords
from pennflow.engine.run_layers import LayerViews
from pennflow.engine.run_plan import RunPlan
from pennflow.engine.step_reuse import StepReuse
from pennflow.workflow.contract import RunLayout, build_union, builds_union
from pennflow.workflow.definition import Processor, Workflow

if TYPE_CHECKING:
    from pennflow.processors.local import VenvLaunch


@dataclass(frozen=True)
class RunContext:
    plan: RunPlan
    run_id: str
    home: PennflowHome
    definition_dir: Path  # a processor's command runs here
    use_docker: bool
    kill_grace: float  # seconds between SIGTERM and SIGKILL
    records: RunRecords
    stop: RunStop
    logs: StepLogs
    views: LayerViews
    run_dir: Path
    layout: RunLayout
    lease: EngineLeaseKeeper | NoLease  # lists each attempt's process group while it runs
    reuse: StepReuse | None = None  # step keys and output hashes; a resume's reusable steps
    rerun_of: str | None = None  # the run this one repeats (recorded on the run)
    # sourceUrl processors that run from a virtual environment (no container runtime): source_processors
    venv_launches: Mapping[str, VenvLaunch] = field(default_factory=dict)
    _outputs: dict[str, Path] = field(default_factory=dict, compare=False, repr=False)
    # computeType gpu processors that get the machine's GPUs (`--gpus all`): engine.gpus
    gpu_processors: frozenset[str] = frozenset()

    @classmethod
    def create(
        cls,
        plan: RunPlan,
        *,
        run_id: str,
        home: PennflowHome,
        definition_dir: Path,
        records: RunRecords,
        use_docker: bool,
        kill_grace: float,
        lease: EngineLeaseKeeper | NoLease | None = None,
        reuse: StepReuse | None = None,
        rerun_of: str | None = None,
        venv_launches: Mapping[str, VenvLaunch] | None = None,
        gpu_processors: frozenset[str] = frozenset(),
    ) -> RunContext:
        run_dir = home.run_dir(run_id)
        layout = RunLayout(run_dir)
        return cls(
            plan=plan,
            run_id=run_id,
            home=home,
            definition_dir=definition_dir,
            use_docker=use_docker,
            kill_grace=kill_grace,
            records=records,
            stop=RunStop(records),
            logs=records.logs,
            views=LayerViews(plan.layers, layout),
            run_dir=run_dir,
            layout=layout,
            lease=lease or NoLease(),
            reuse=reuse,
            rerun_of=rerun_of,
            venv_launches=venv_launches or {},
            gpu_processors=gpu_processors,
        )

    @property
    def workflow(self) -> Workflow:
        return self.plan.workflow

    def output_dir(self, pid: str) -> Path:
        """Asked a few times per processor: made once (a path costs more than its lookup)."""
        path = self._outputs.get(pid)
        if path is None:
            path = self._outputs[pid] = Path(self.layout.output_dir(pid))
        return path

    def input_dir(self, processor: Processor) -> Path:
        """The processor's INPUT_DIR (the run folder for one without dependencies)."""
        return Path(self.layout.input_dir(processor) or self.run_dir)

    def prepare_union(self, processor: Processor) -> None:
        """Fan-in: INPUT_DIR is the union of the dependencies' outputs (raises FanInClash)."""
        if builds_union(processor):  # a root processor's INPUT_DIR: an empty folder
            sources = {dep: self.output_dir(dep) for dep in processor.dependencies}
            union = Path(self.layout.union_dir(processor.id))
            if union.exists():
                shutil.rmtree(union)
            build_union(sources, union)


def fresh_dir(path: Path) -> None:
    """An empty folder at ``path``. An existing one is emptied in place: the run's sandbox binds each
    OUTPUT_DIR when it starts (``engine.run_sandbox``), and a new folder would not be the bound one."""
    try:  # the usual case, a new run's folder: one mkdir, no look-ups before it
        os.mkdir(path)
        return
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.mkdir(path)
        return
    except FileExistsError:
        pass
    if path.is_dir() and not path.is_symlink():
        for entry in os.scandir(path):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
        return
    if path.is_symlink() or path.exists():
        path.unlink()
    path.mkdir(parents=True)


def has_files(folder: Path) -> bool:
    """Whether any file is in ``folder`` or below it (asked after every attempt: no pathlib walk)."""
    for root, _dirs, files in os.walk(folder):
        if any(os.path.isfile(os.path.join(root, name)) for name in files):
            return True
    return False
