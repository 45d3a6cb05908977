"""What each local attempt used, from the kernel's account of the process, and what the run would
cost on a compute node.

An attempt's process is reaped with ``os.wait4``, whose rusage is that process's (and the children it
waited for): CPU time (user + system) and peak resident memory. ``resource.getrusage(RUSAGE_CHILDREN)``
deltas would mix attempts that run at once and cannot give one attempt's peak. An attempt in the run's
sandbox is reaped by the sandbox's launcher, whose ``wait4`` reports the same figures
(``engine.run_sandbox``). A container's process is the ``docker run`` client, whose usage is not the
container's: only its wall time is recorded.

The estimate prices each attempt's wall time at the processor's cpu/memory settings with the node's
formula (``pennflow.workflow.cost``): a figure to expect, labelled an estimate, not a bill.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from pennflow.data.step_keys import folder_bytes
from pennflow.engine.spawn import group_members
from pennflow.workflow import cost as C
from pennflow.workflow.contract import RunLayout
from pennflow.workflow.definition import ProcessorType, Workflow
from pennflow.workflow.runs import StepRecord

# Linux reports ru_maxrss in KiB, macOS in bytes.
MAXRSS_UNIT = 1 if sys.platform == "darwin" else 1024

_usage: weakref.WeakKeyDictionary[subprocess.Popen, Any] = weakref.WeakKeyDictionary()
_usage_lock = threading.Lock()


class AttemptUse(BaseModel):
    """One attempt (or one batch's attempt) as the step records keep it (camelCase)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    attempt: int
    batch: int | None = None
    seconds: float
    cpu_seconds: float | None = None  # user + system
    peak_rss_bytes: int | None = None
    exit_code: int | None = None


def reap(popen: subprocess.Popen) -> int:
    """``popen.wait()``, but the child is reaped with ``wait4`` so its rusage is kept for
    :func:`usage_of`. Popen's own wait then returns the code set here."""
    if popen.returncode is not None:
        return popen.returncode
    try:
        _pid, status, usage = os.wait4(popen.pid, 0)
    except ChildProcessError:  # reaped elsewhere already: Popen knows its code
        return popen.wait()
    popen.returncode = os.waitstatus_to_exitcode(status)
    with _usage_lock:
        _usage[popen] = usage
    return popen.returncode


def usage_of(popen: subprocess.Popen) -> tuple[float | None, int | None]:
    """(CPU seconds, peak RSS bytes) of a process :func:`reap` ended; (None, None) otherwise."""
    with _usage_lock:
        usage = _usage.pop(popen, None)
    if usage is None:
        return None, None
    return usage.ru_utime + usage.ru_stime, int(usage.ru_maxrss) * MAXRSS_UNIT


class _PeakSampler:
    """The attempt's peak memory, read from /proc every ``SAMPLE_SECONDS`` while it runs: the highest
    ``VmHWM`` (each process's own high-water RSS, after exec) of its process group. The kernel's
    ru_maxrss also counts the memory the process had before exec (with vfork, the engine's), so a
    peak not above the engine's is this one. The last < ``SAMPLE_SECONDS`` of a process's life may be
    missed. (In the run's sandbox the launcher's ``wait4`` reports the attempt's use instead.)"""

    def __init__(self, pgid: int):
        self.pgid = pgid
        self.peak: int | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        # The first sample reads the process alone: a scan of /proc for its group costs a few
        # milliseconds on a busy machine, more than a short attempt takes, and is left to later ones.
        self._read(self.pgid)
        while not self._done.wait(SAMPLE_SECONDS):
            for pid in group_members(self.pgid) or [self.pgid]:
                self._read(pid)

    def _read(self, pid: int) -> None:
        try:
            with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        self.peak = max(self.peak or 0, int(line.split()[1]) * 1024)
                        break
        except (OSError, ValueError, IndexError):
            return  # exited (a zombie has no memory) or no /proc here

    def stop(self) -> int | None:
        self._done.set()
        self._thread.join(timeout=1)
        return self.peak


SAMPLE_SECONDS = 0.2


def wait_and_record(process: Any, records: Any, processor_id: str, attempt: int, batch: int | None) -> int:
    """Wait for the attempt's process (its own wait: timeout, process group) and record its use."""
    started = time.monotonic()
    if hasattr(process.popen, "cpu_seconds"):  # in the run's sandbox: its launcher's wait4 tells
        code = process.wait()
        seconds = time.monotonic() - started
        cpu, peak = process.popen.cpu_seconds, process.popen.peak_rss_bytes
    elif getattr(process.spec, "container_name", None):
        code = process.wait()
        seconds = time.monotonic() - started
        cpu, peak = None, None  # the docker client's usage is not the container's: nothing to sample
    else:
        code, seconds, cpu, peak = _wait_sampled(process, started)
    use = use_entry(attempt, batch, round(seconds, 3), cpu, peak, code)
    records.add_resource_use(processor_id, use)
    return code


def use_entry(
    attempt: int, batch: int | None, seconds: float, cpu: float | None, peak: int | None, code: int
) -> dict[str, Any]:
    """``AttemptUse(...).model_dump(by_alias=True)``, without building the model: written once per
    attempt from figures this process measured (wait4's), not from input; read back as AttemptUse."""
    return {
        "attempt": attempt,
        "batch": batch,
        "seconds": seconds,
        "cpuSeconds": cpu,
        "peakRssBytes": peak,
        "exitCode": code,
    }


def _wait_sampled(process: Any, started: float) -> tuple[int, float, float | None, int | None]:
    """An unsandboxed process's exit code, seconds, CPU time and peak memory (sampled while it runs)."""
    import resource

    sampler = _PeakSampler(process.pid)
    code = process.wait()
    seconds = time.monotonic() - started
    sampled = sampler.stop()
    cpu, peak = usage_of(process.popen)
    engine_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * MAXRSS_UNIT
    if peak is not None and peak <= engine_peak:
        # Not above what the process inherited before exec: its own peak is the sampled one (the
        # last < SAMPLE_SECONDS of growth may be missed), unknown when no sample was taken.
        peak = sampled
    return code, seconds, cpu, peak


# ------------------------------------------------------------------ the estimate


def attempt_seconds(steps: Sequence[StepRecord]) -> dict[str, list[float]]:
    """Each processor's attempts' wall times; a step with no recorded use (a built-in data step)
    counts its span once."""
    seconds: dict[str, list[float]] = {}
    for step in steps:
        uses = [AttemptUse.model_validate(u) for u in step.resource_use]
        if uses:
            seconds[step.processor_id] = [u.seconds for u in uses]
        elif step.duration_seconds is not None:
            seconds[step.processor_id] = [step.duration_seconds]
    return seconds


def estimate_on_node(
    workflow: Workflow,
    steps: Sequence[StepRecord],
    run_dir: Path,
    *,
    region: str | None = None,
    overrides: C.PriceOverrides | None = None,
) -> C.RunCost:
    """What this local run would cost on a node at list prices: its attempts' times at the
    processors' cpu/memory, and its data sources' files through the NAT and on EFS."""
    layout = RunLayout(run_dir)
    dataset_bytes = sum(
        folder_bytes(Path(layout.output_dir(p.id)))
        for p in workflow.processors
        if p.type is ProcessorType.DATA_SOURCE
    )
    return C.estimate_workflow(
        workflow,
        C.price_table(region, overrides),
        seconds=attempt_seconds(steps),
        dataset_bytes=dataset_bytes,
    )


def format_bytes(size: int | None) -> str:
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def step_use(step: StepRecord) -> tuple[float | None, int | None]:
    """The step's CPU seconds (summed over attempts) and peak RSS (the largest), None when unknown."""
    uses = [AttemptUse.model_validate(u) for u in step.resource_use]
    cpus = [u.cpu_seconds for u in uses if u.cpu_seconds is not None]
    peaks = [u.peak_rss_bytes for u in uses if u.peak_rss_bytes is not None]
    return (sum(cpus) if cpus else None), (max(peaks) if peaks else None)
