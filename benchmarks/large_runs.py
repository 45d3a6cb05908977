"""The local engine on large runs: the scheduler's cost per processor as runs grow, the threads a
wide run opens, and what the terminal output costs.

* scheduler: chains and fan-outs of 1,000 and 5,000 processors whose attempts succeed at once (no
  process is started, everything else is real: store, records, folders, logs): ms per processor,
  and the 5,000 figure over the 1,000 one (1.0 = linear; a scan of the waiting set would give ~5).
* threads: the most threads alive at any change of any step, for a 5,000-wide fan-out with
  ``max_parallel`` 2 and 8 (sampled in the reporter, so every change is seen): the workers grow
  with ``max_parallel``, nothing grows with the width.
* output: a 400-wide fan-out of ``/bin/true`` with ``max_parallel`` 2, with no reporter, the plain
  lines (not a terminal) and the live table (a 40-line terminal), each ending with the table
  ``pennflow run`` prints: wall and CPU time (the engine's and its processes'), medians side by
  side, and the CPU the output itself took in every thread (the reporter's calls, the live
  table's redraws, the final table) as a share of the run's. On a busy machine whole runs vary by
  more than the output costs, so the share is measured, not taken from a difference of runs.

Run: python benchmarks/large_runs.py [--repeat N]
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pennflow.engine.home import PennflowHome  # noqa: E402
from pennflow.engine.local import run_workflow  # noqa: E402
from pennflow.engine.outcomes import Attempt  # noqa: E402
from pennflow.engine.processes import ProcessLauncher  # noqa: E402
from pennflow.engine.progress import RUN_SUMMARY_ROWS, LiveProgress, PlainProgress, steps_table  # noqa: E402
from pennflow.stores.sqlite import SqliteRunStore  # noqa: E402
from pennflow.workflow.definition import Workflow, validate_definition  # noqa: E402
from pennflow.workflow.runs import Status  # noqa: E402

TRUE = shutil.which("true", path="/bin:/usr/bin") or "/bin/true"
GOAL_OUTPUT_PERCENT = 5.0


def workflow(shape: str, n: int) -> Workflow:
    processors: list[dict] = [{"id": "src", "type": "data-source"}]
    for i in range(n):
        after = "src" if shape == "fan-out" or i == 0 else f"p{i - 1:05d}"
        processors.append({"id": f"p{i:05d}", "command": [TRUE], "dependsOn": [after]})
    return validate_definition({"name": f"{shape}-{n}", "processors": processors})


class PeakThreads:
    def __init__(self) -> None:
        self.peak = threading.active_count()

    def run_started(self, run, steps) -> None:
        pass

    def step_updated(self, step) -> None:
        self.peak = max(self.peak, threading.active_count())

    def run_finished(self, run, steps) -> None:
        pass


def cpu_seconds() -> float:
    """This process's CPU time and its children's (the processors)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_seconds(flow: Workflow, scratch: Path, max_parallel: int, reporter=None) -> float:
    return timed_run(flow, scratch, max_parallel, reporter)[0]


def timed_run(flow: Workflow, scratch: Path, max_parallel: int, reporter=None) -> tuple[float, float]:
    """Wall and CPU seconds of one run, the final table included when there is a reporter."""
    home = PennflowHome(Path(tempfile.mkdtemp(prefix="home-", dir=scratch)))
    cpu, start = cpu_seconds(), time.perf_counter()
    record = run_workflow(
        flow,
        definition_dir=scratch,
        input_dir=scratch / "input",
        max_parallel=max_parallel,
        home=home,
        reporter=reporter,
        docker=False,
    )
    if record.status is not Status.SUCCEEDED:
        raise RuntimeError(f"{flow.name}: {record.status.value}: {record.reason}")
    if reporter is not None:  # what `pennflow run` prints at the end
        with SqliteRunStore(home.db_path) as store:
            steps = store.list_steps(record.run_id)
        reporter.final_table(steps, flow.name)
    elapsed, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    shutil.rmtree(home.root, ignore_errors=True)
    return elapsed, cpu


class Reporting:
    """A reporter, the console it writes to (the final table goes there too), and the CPU time its
    own work took in every thread: its calls, the live table's redraws, the final table."""

    def __init__(self, kind: str, flow: Workflow):
        self.cpu = 0.0
        self._lock = threading.Lock()
        if kind == "plain":
            self.console = Console(file=open(os.devnull, "w"), width=100)  # noqa: SIM115
            self._reporter: LiveProgress | PlainProgress = PlainProgress(self.console, flow)
        else:
            self.console = Console(file=io.StringIO(), force_terminal=True, width=100, height=40)
            self._reporter = live = LiveProgress(self.console, flow)
            redraw = live._live.refresh
            live._live.refresh = lambda: self.timed(redraw)  # type: ignore[method-assign]

    def timed(self, work, *args) -> None:
        start = time.thread_time()
        try:
            work(*args)
        finally:
            with self._lock:
                self.cpu += time.thread_time() - start

    def run_started(self, run, steps) -> None:
        self.timed(self._reporter.run_started, run, steps)

    def step_updated(self, step) -> None:
        self.timed(self._reporter.step_updated, step)

    def run_finished(self, run, steps) -> None:
        self.timed(self._reporter.run_finished, run, steps)

    def final_table(self, steps, title: str) -> None:
        self.timed(self.console.print, steps_table(steps, title=title, rows=RUN_SUMMARY_ROWS))


def instant_attempts() -> None:
    def instant(self, processor, attempt, spec, batch=None) -> Attempt:
        (self.ctx.output_dir(processor.id) / "done").write_text("")
        return Attempt(True, exit_code=0)

    ProcessLauncher.run = instant  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per output case (median shown)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pennflow-large-") as tmp:
        scratch = Path(tmp)
        (scratch / "input").mkdir()
        (scratch / "input" / "sample.txt").write_text("x\n")

        print("== output: 400-wide fan-out of /bin/true, max_parallel 2: medians, s ==")
        flow = workflow("fan-out", 400)
        run_seconds(flow, scratch, 2)  # warm
        runs: dict[str, list[tuple[float, float]]] = {"silent": [], "plain": [], "live": []}
        reporters: dict[str, list[float]] = {"plain": [], "live": []}
        for _ in range(args.repeat):  # alternating: a busy spell hits every case alike
            runs["silent"].append(timed_run(flow, scratch, 2))
            for kind in reporters:
                reporting = Reporting(kind, flow)
                runs[kind].append(timed_run(flow, scratch, 2, reporting))
                reporters[kind].append(reporting.cpu)
        wall = {kind: statistics.median(r[0] for r in values) for kind, values in runs.items()}
        cpu = {kind: statistics.median(r[1] for r in values) for kind, values in runs.items()}
        print(f"{'output':8} {'wall':>7} {'cpu':>7} {'its own cpu':>12} {'share of the run':>17}")
        worst = 0.0
        for kind in runs:
            own = statistics.median(reporters[kind]) if kind in reporters else 0.0
            share = own / cpu[kind] * 100
            worst = max(worst, share)
            print(f"{kind:8} {wall[kind]:7.2f} {cpu[kind]:7.2f} {own:12.3f} {share:16.1f}%")

        instant_attempts()
        print("== scheduler: attempts succeed at once, ms per processor ==")
        print(f"{'shape':8} {'1,000':>8} {'5,000':>8} {'5k/1k':>6}")
        for shape in ("chain", "fan-out"):
            per = {}
            for n in (1000, 5000):
                per[n] = run_seconds(workflow(shape, n), scratch, 2) / n * 1000
            print(f"{shape:8} {per[1000]:8.2f} {per[5000]:8.2f} {per[5000] / per[1000]:6.2f}")

        peaks = {}
        for max_parallel in (2, 8):
            before = threading.active_count()
            peak = PeakThreads()
            run_workflow(
                workflow("fan-out", 5000),
                definition_dir=scratch,
                input_dir=scratch / "input",
                max_parallel=max_parallel,
                home=PennflowHome(scratch / f"threads-home-{max_parallel}"),
                reporter=peak,
                docker=False,
            )
            peaks[max_parallel] = peak.peak - before
        print(
            "== threads: 5,000-wide fan-out: at most "
            + ", ".join(f"{n} at max_parallel {mp}" for mp, n in peaks.items())
            + " besides the caller's (the workers, and a fixed few: the cancel watcher, the lease"
            " heartbeat, the folder threads) =="
        )
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"machine: {os.cpu_count()} cores, load average {load}")
    verdict = "met" if worst <= GOAL_OUTPUT_PERCENT else "NOT met"
    print(
        f"goal terminal output <= {GOAL_OUTPUT_PERCENT:g}% of a large run's CPU: worst {worst:+.1f}%, {verdict}"
    )


if __name__ == "__main__":
    main()
