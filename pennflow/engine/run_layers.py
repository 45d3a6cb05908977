"""The layers of one local run: the versions it pins for its whole life, and each processor's view.

The run pins each requested layer's current version when it starts (a re-populate meanwhile never
changes what it reads) and releases them when it ends. A processor sees only its own layers,
read-only, through a view in its processor folder (``pennflow.layers.sandbox``), laid out once and
shared by its batches and retries.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pennflow.engine.home import PennflowHome
from pennflow.engine.run_checks import is_layer_target
from pennflow.layers.models import LayersUnavailable
from pennflow.layers.mounts import LayerMount
from pennflow.layers.sandbox import LayersView, SandboxMode, detect_mode
from pennflow.workflow.contract import RunLayout
from pennflow.workflow.definition import Processor, Workflow

if TYPE_CHECKING:  # imported by a run that mounts or populates layers (builds, registries)
    from pennflow.layers.service import LocalLayers

VIEW_DIR = "layers"  # a processor's LAYERS_DIR, in its processor folder
# The LAYERS_DIR of every processor of a run that has no layers (when it needs no view of its own):
# one empty read-only folder in the run folder (not a processor id: ids start with a letter or digit).
NO_LAYERS_DIR = ".no-layers"


@dataclass(frozen=True)
class RunLayers:
    """The layers of one run: the pinned versions it holds until it ends, and the service that
    populates persistent-layer targets (None when the run neither mounts nor populates layers)."""

    home: PennflowHome
    service: LocalLayers | None
    mounts: dict[str, LayerMount]
    mode: SandboxMode  # probed once per run: views and wrappers of every processor use it

    def of(self, processor: Processor) -> list[LayerMount]:
        return [self.mounts[name] for name in processor.layers]

    def view(self, root: Path, processor: Processor) -> LayersView:
        return LayersView.create(root, self.of(processor), hidden=self.home.layers_dir, mode=self.mode)

    def close(self, run_id: str) -> None:
        if self.service is None:
            return
        try:
            if self.mounts:
                self.service.release(self.mounts, run_id)
        finally:
            self.service.close()


def requested_layers(run_layers: Iterable[str], processors: Iterable[Processor]) -> dict[str, str]:
    """Each layer the run mounts -> who asked for it first (for the error messages)."""
    requested = {name: "--layer" for name in run_layers}
    for processor in processors:
        for name in processor.layers:
            requested.setdefault(name, f"processor {processor.id!r}")
    return requested


def mount_layers(
    home: PennflowHome, run_id: str, requested: dict[str, str], workflow: Workflow, problems: list[str]
) -> RunLayers:
    """Pin the requested layers for the run; a layer that cannot be mounted becomes a problem."""
    service = None
    mounts: list[LayerMount] = []
    if requested or any(is_layer_target(p) for p in workflow.processors):
        from pennflow.layers.service import LocalLayers

        service = LocalLayers.open(home)
        try:
            mounts = service.mount(requested, run_id)
        except LayersUnavailable as exc:
            problems += [_attributed(problem, requested) for problem in exc.problems]
        except BaseException:
            service.close()
            raise
    # Without mounts and without a layers folder to hide there is nothing to sandbox: skip the probe.
    mode = detect_mode() if mounts or home.layers_dir.is_dir() else SandboxMode.PERMISSIONS
    return RunLayers(home, service, {m.name: m for m in mounts}, mode)


def _attributed(problem: str, requested: dict[str, str]) -> str:
    """``layer 'x' not found`` -> ``layer 'x' (from --layer) not found``."""
    for name, by in requested.items():
        for prefix in (f"layer {name!r}", f"layer name {name!r}"):
            if problem.startswith(prefix):
                return f"{prefix} (from {by}){problem[len(prefix) :]}"
    return problem


class LayerViews:
    """Each processor's LAYERS_DIR for one run, created on first use and removed when the run ends.

    A processor without layers whose view would be an empty folder and nothing else (permissions
    mode, or in the run's one sandbox, which hides pennflow's layers folder itself) gets the run's
    one empty view (``NO_LAYERS_DIR``) instead of a folder of its own: a folder fewer per processor,
    the costliest part of a short processor's record on disk. In namespace mode outside the run's
    sandbox a view also hides the layers folder (its fstab): each processor keeps its own there."""

    def __init__(self, layers: RunLayers, layout: RunLayout):
        self._layers = layers
        self._layout = layout
        self._views: dict[str, LayersView] = {}
        self._lock = threading.Lock()
        self._in_run_sandbox = False
        self._empty: LayersView | None = None

    def in_run_sandbox(self) -> None:
        """The run's processors run in its one sandbox (``engine.run_sandbox``), which hides the layers
        folder and binds each view's layers: a view without layers needs no fstab (namespace mode)."""
        self._in_run_sandbox = True

    def of(self, processor: Processor) -> LayersView:
        with self._lock:
            view = self._views.get(processor.id)
            if view is None:
                if not processor.layers and (
                    self._in_run_sandbox or self._layers.mode is SandboxMode.PERMISSIONS
                ):
                    view = self._views[processor.id] = self._empty_view()
                else:
                    root = Path(self._layout.processor_dir(processor.id)) / VIEW_DIR
                    view = self._views[processor.id] = self._layers.view(root, processor)
            return view

    def _empty_view(self) -> LayersView:
        """The run's one empty view, made read-only (an unsandboxed processor cannot fill it)."""
        if self._empty is None:
            root = Path(self._layout.root) / NO_LAYERS_DIR
            root.mkdir(parents=True, exist_ok=True)
            root.chmod(0o555)
            # Permissions mode: nothing to mount or hide in it (wrap_command runs the command as is).
            self._empty = LayersView(root, (), self._layers.home.layers_dir, SandboxMode.PERMISSIONS)
        return self._empty

    def remove_all(self) -> None:
        """The views point at versions the run is about to release (an empty one without an fstab
        points nowhere: it stays, as the processor's folder does)."""
        with self._lock:
            for view in self._views.values():
                if view.mounts or view.mode is SandboxMode.NAMESPACE:
                    with contextlib.suppress(OSError):
                        view.remove()
