"""The local engine's threads stay bounded by --max-parallel, however wide the run."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from pennflow.engine.home import PennflowHome
from pennflow.engine.local import run_workflow
from pennflow.engine.outcomes import Attempt
from pennflow.engine.processes import ProcessLauncher
from pennflow.workflow.definition import validate_definition
from pennflow.workflow.runs import Status

# Besides the workers: the caller, the cancel watcher, the lease's heartbeat, a spare for a timer.
OWN_THREADS = 4


def fan_out(width: int, command: list[str], scatter: bool = False) -> dict:
    processors: list[dict] = [{"id": "src", "type": "data-source"}]
    for i in range(width):
        processor = {"id": f"p{i:04d}", "command": command, "dependsOn": ["src"]}
        if scatter:
            processor["scatter"] = {"batchSize": 1}
        processors.append(processor)
    return {"name": f"wide-{width}", "processors": processors}


class PeakThreads:
    """A reporter that samples threading.active_count() at every change of every step."""

    def __init__(self) -> None:
        self.peak = threading.active_count()
        self.updates = 0

    def run_started(self, run, steps) -> None:
        pass

    def step_updated(self, step) -> None:
        self.updates += 1
        self.peak = max(self.peak, threading.active_count())

    def run_finished(self, run, steps) -> None:
        pass


@pytest.fixture
def input_dir(tmp_path: Path) -> Path:
    (tmp_path / "input").mkdir()
    for i in range(3):
        (tmp_path / "input" / f"f{i}.txt").write_text(str(i))
    return tmp_path / "input"


@pytest.mark.slow
def test_a_5000_wide_fan_out_with_max_parallel_2_runs_on_2_worker_threads(
    tmp_path, input_dir, monkeypatch
) -> None:
    # The processes are left out (each attempt succeeds at once) so that 5,000 processors take
    # seconds; the scheduler, the records and the store are the real ones.
    def instant_attempt(self, processor, attempt, spec, batch=None) -> Attempt:
        (self.ctx.output_dir(processor.id) / "done").write_text("")
        return Attempt(True, exit_code=0)

    monkeypatch.setattr(ProcessLauncher, "run", instant_attempt)
    before = threading.active_count()
    peak = PeakThreads()
    record = run_workflow(
        validate_definition(fan_out(5000, ["true"])),
        definition_dir=tmp_path,
        input_dir=input_dir,
        max_parallel=2,
        home=PennflowHome(tmp_path / "home"),
        reporter=peak,
        docker=False,
    )
    assert record.status is Status.SUCCEEDED, record.reason
    assert peak.updates >= 2 * 5000
    assert peak.peak - before <= 2 + OWN_THREADS


def test_real_processes_and_scattered_batches_stay_within_max_parallel_threads(tmp_path, input_dir) -> None:
    before = threading.active_count()
    peak = PeakThreads()
    record = run_workflow(
        validate_definition(fan_out(40, ["true"], scatter=True)),
        definition_dir=tmp_path,
        input_dir=input_dir,
        max_parallel=2,
        home=PennflowHome(tmp_path / "home"),
        reporter=peak,
        docker=False,
    )
    assert record.status is Status.SUCCEEDED, record.reason
    # Two processor workers, two batch workers: 40 scattered processors of 3 batches each.
    assert peak.peak - before <= 2 * 2 + OWN_THREADS
