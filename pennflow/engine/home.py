"""Where local state lives: ``PENNFLOW_HOME`` (default ``~/.pennflow``), laid out as DESIGN §7 says.

$PENNFLOW_HOME/pennflow.db                              the SQLite run store
$PENNFLOW_HOME/runs/<run_id>/<processor_id>/output/     each processor's results (DESIGN §4)
$PENNFLOW_HOME/runs/<run_id>/<processor_id>/processor.log
$PENNFLOW_HOME/layers/<name>/                           layers
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

HOME_ENV = "PENNFLOW_HOME"
DEFAULT_HOME = "~/.pennflow"
LOG_NAME = "processor.log"


@dataclass(frozen=True)
class PennflowHome:
    root: Path

    @classmethod
    def resolve(cls, home: str | os.PathLike[str] | None = None) -> PennflowHome:
        """An explicit folder, else ``$PENNFLOW_HOME``, else ``~/.pennflow``."""
        chosen = home if home is not None else os.environ.get(HOME_ENV) or DEFAULT_HOME
        return cls(Path(chosen).expanduser().absolute())

    @property
    def db_path(self) -> Path:
        return self.root / "pennflow.db"

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    @property
    def layers_dir(self) -> Path:
        return self.root / "layers"

    def run_dir(self, run_id: str) -> Path:
        return self.runs_dir / run_id

    def layer_dir(self, name: str) -> Path:
        return self.layers_dir / name

    def log_path(self, run_id: str, processor_id: str) -> Path:
        return self.run_dir(run_id) / processor_id / LOG_NAME
