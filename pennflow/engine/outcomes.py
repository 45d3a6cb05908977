"""How one attempt, and one processor, ended; and the step log both write to."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pennflow.engine.home import PennflowHome
from pennflow.workflow.definition import Processor
from pennflow.workflow.runs import Status, utcnow

NO_OUTPUT = "wrote no output files"


@dataclass(frozen=True)
class Attempt:
    """How one attempt ended."""

    ok: bool
    reason: str | None = None
    exit_code: int | None = None
    retryable: bool = True
    canceled: bool = False


@dataclass(frozen=True)
class Outcome:
    """How a processor ended."""

    status: Status
    reason: str | None = None
    exit_code: int | None = None
    reused: bool = False  # SUCCEEDED with the output of an earlier attempt of the run, not run again


@dataclass(frozen=True)
class StepLogs:
    """Each processor's ``processor.log`` of one run (every attempt and batch appends to it)."""

    home: PennflowHome
    run_id: str
    _paths: dict[str, Path] = field(default_factory=dict, compare=False, repr=False)

    def path(self, pid: str) -> Path:
        """Asked a few times per attempt: made once."""
        path = self._paths.get(pid)
        if path is None:
            path = self._paths[pid] = self.home.log_path(self.run_id, pid)
        return path

    def append(self, pid: str, text: str) -> None:
        path = self.path(pid)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as log:
            log.write(text)


def attempt_header(processor: Processor, attempt: int, what: str, batch: int | None = None) -> str:
    """The log line that opens an attempt: when, which processor (and batch), attempt n of total."""
    total = 1 + (processor.retry.max_attempts if processor.retry else 0)
    where = f" batch {batch}" if batch is not None else ""
    stamp = utcnow().strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"==== {stamp} {processor.id}{where} attempt {attempt}/{total}: {what}\n"
