"""Local engine overhead per processor vs bare process spawns of the same command (goal <= 20 ms).

Each case runs a generated workflow through ``pennflow.engine.local.run_workflow`` (SQLite store, logs,
output folders, a data source copying one small input file) whose processors all run ``true``, and,
in the same loop, spawns the same command as many times with ``subprocess`` in the same way (own
session, stdout to a log file, an environment of the same size): one after another for
``max_parallel 1``, all at once when every processor may run together. Figures are medians of
several repetitions, the two arms alternating; the engine's wall time includes the whole run (store,
data source, records), spread over its processors. The difference of the best times is shown too:
other work on the machine only ever adds time, so it is the steadier figure on a busy machine.

Run: python benchmarks/local_engine.py [--repeat N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pennflow.engine.home import HOME_ENV, PennflowHome  # noqa: E402
from pennflow.engine.local import run_workflow  # noqa: E402
from pennflow.workflow.contract import RunLayout, processor_environment  # noqa: E402
from pennflow.workflow.definition import Workflow, validate_definition  # noqa: E402
from pennflow.workflow.runs import Status  # noqa: E402

GOAL_MS = 20.0
WIDTH = 30
COMMAND = [shutil.which("true") or "/bin/true"]


def chain(n: int) -> Workflow:
    processors: list[dict] = [{"id": "input", "type": "data-source"}]
    for i in range(1, n + 1):
        processors.append({"id": f"p{i:02d}", "command": COMMAND, "dependsOn": [processors[-1]["id"]]})
    return validate_definition({"name": f"chain-{n}", "processors": processors})


def fan_out(n: int) -> Workflow:
    processors: list[dict] = [{"id": "input", "type": "data-source"}]
    processors += [{"id": f"p{i:02d}", "command": COMMAND, "dependsOn": ["input"]} for i in range(1, n + 1)]
    return validate_definition({"name": f"fan-out-{n}", "processors": processors})


def engine_seconds(workflow: Workflow, home: PennflowHome, input_dir: Path, max_parallel: int) -> float:
    start = time.perf_counter()
    run = run_workflow(
        workflow,
        definition_dir=input_dir.parent,
        input_dir=input_dir,
        max_parallel=max_parallel,
        home=home,
        docker=False,
    )
    elapsed = time.perf_counter() - start
    if run.status is not Status.SUCCEEDED:
        raise RuntimeError(f"{workflow.name}: run {run.run_id} {run.status.value}: {run.reason}")
    return elapsed


def spawn_seconds(count: int, together: bool, env: dict[str, str], folder: Path) -> float:
    """``count`` spawns of COMMAND as the engine starts them, sequentially or all at once."""
    start = time.perf_counter()
    running = []
    for i in range(count):
        with open(folder / f"spawn-{i}.log", "ab") as log:
            process = subprocess.Popen(
                COMMAND,
                cwd=folder,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if together:
            running.append(process)
        elif process.wait() != 0:
            raise RuntimeError(f"{COMMAND} exited {process.returncode}")
    if any(process.wait() != 0 for process in running):
        raise RuntimeError(f"{COMMAND} failed")
    return time.perf_counter() - start


def same_size_environment(workflow: Workflow, home: PennflowHome) -> dict[str, str]:
    """What the engine gives a processor: this environment, the contract variables, PATH first."""
    processor = workflow.processors[1]
    layout = RunLayout(home.run_dir("r-20250101-000000-abcdef"))
    contract = processor_environment(
        workflow,
        processor,
        run_id="r-20250101-000000-abcdef",
        layout=layout,
        layers_root=Path(layout.processor_dir(processor.id)) / "layers",
        params={},
        inherited_pythonpath=os.environ.get("PYTHONPATH"),
    )
    env = {**os.environ, **contract}
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH") or os.defpath])
    return env


def measure(
    label: str, workflow: Workflow, max_parallel: int, repeat: int, scratch: Path
) -> tuple[str, float]:
    home = PennflowHome.resolve(scratch / f"home-{workflow.name}-{max_parallel}")
    input_dir = scratch / "input"
    spawn_dir = scratch / f"spawns-{workflow.name}-{max_parallel}"
    spawn_dir.mkdir()
    env = same_size_environment(workflow, home)
    count = len(workflow.processors) - 1  # the data source runs no process
    together = max_parallel >= count
    engine_seconds(workflow, home, input_dir, max_parallel)  # warm: imports, store schema
    engine, bare = [], []
    for _ in range(repeat):
        engine.append(engine_seconds(workflow, home, input_dir, max_parallel) / count * 1000)
        bare.append(spawn_seconds(count, together, env, spawn_dir) / count * 1000)
    engine_ms, bare_ms = statistics.median(engine), statistics.median(bare)
    overhead = engine_ms - bare_ms
    line = (
        f"{label:22} {max_parallel:12d} {engine_ms:10.1f} {bare_ms:9.1f} {overhead:12.1f}"
        f" {min(engine) - min(bare):12.1f}   (engine {min(engine):.1f}-{max(engine):.1f})"
    )
    return line, overhead


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=11, help="repetitions per case (median shown)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pennflow-bench-") as tmp:
        scratch = Path(tmp)
        os.environ[HOME_ENV] = str(scratch / "home")  # nothing may touch the user's own home
        (scratch / "input").mkdir()
        (scratch / "input" / "sample.txt").write_text("x\n")
        cases = [
            (f"chain of {WIDTH}", chain(WIDTH), 1),
            (f"fan-out of {WIDTH}", fan_out(WIDTH), 1),
            (f"fan-out of {WIDTH}", fan_out(WIDTH), WIDTH),
        ]
        print(f"== local engine vs bare spawns of {COMMAND[0]}: ms per processor, median of {args.repeat} ==")
        print(
            f"{'workflow':22} {'max_parallel':>12} {'engine ms':>10} {'spawn ms':>9} {'overhead ms':>12}"
            f" {'best-best ms':>12}"
        )
        worst = 0.0
        for label, workflow, max_parallel in cases:
            line, overhead = measure(label, workflow, max_parallel, args.repeat, scratch)
            worst = max(worst, overhead)
            print(line, flush=True)
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"machine: {os.cpu_count()} cores, load average {load} (other work on the machine skews figures)")
    print(
        f"goal overhead <= {GOAL_MS:g} ms per processor: worst {worst:.1f} ms, {'met' if worst <= GOAL_MS else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
