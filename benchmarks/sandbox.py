"""What the processor sandbox costs: a run of ``true`` processors with and without bwrap, side by side.

Two arms, alternating, each a chain of N processors run by ``run_workflow`` (``max_parallel 1``):
``PENNFLOW_SANDBOX=off`` (the environment allow-list only) and the bwrap sandbox. Also the bare cost of
one start: ``true`` spawned directly vs the same ``true`` through the sandbox's command. Figures are
medians of several repetitions; the difference of the best times is shown too, the steadier figure on
a busy machine. Prints nothing but a note where bwrap cannot run.

Run: python benchmarks/sandbox.py [--repeat N] [--quick]
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pennflow.engine.home import PennflowHome  # noqa: E402
from pennflow.engine.local import run_workflow  # noqa: E402
from pennflow.engine.sandbox import SANDBOX_ENV, SandboxView, detect, wrap_command  # noqa: E402
from pennflow.workflow.definition import Workflow, validate_definition  # noqa: E402
from pennflow.workflow.runs import Status  # noqa: E402

TRUE = shutil.which("true") or "/bin/true"


def chain(n: int) -> Workflow:
    processors: list[dict] = [{"id": "input", "type": "data-source"}]
    for i in range(1, n + 1):
        processors.append({"id": f"p{i:02d}", "command": [TRUE], "dependsOn": [processors[-1]["id"]]})
    return validate_definition({"name": f"chain-{n}", "processors": processors})


def run_seconds(workflow: Workflow, root: Path, sandboxed: bool) -> float:
    os.environ[SANDBOX_ENV] = "on" if sandboxed else "off"
    (root / "input").mkdir(parents=True, exist_ok=True)
    (root / "input" / "a.txt").write_text("a")
    start = time.perf_counter()
    run = run_workflow(
        workflow,
        definition_dir=root,
        input_dir=root / "input",
        max_parallel=1,
        home=PennflowHome(root / "home"),
        docker=False,
    )
    elapsed = time.perf_counter() - start
    if run.status is not Status.SUCCEEDED:
        raise RuntimeError(f"run {run.run_id} {run.status.value}: {run.reason}")
    return elapsed


def spawn_seconds(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, check=True, start_new_session=True
    )
    return time.perf_counter() - start


def line(label: str, bare: list[float], boxed: list[float], per: int) -> None:
    bare_ms, boxed_ms = statistics.median(bare) * 1000 / per, statistics.median(boxed) * 1000 / per
    best = (min(boxed) - min(bare)) * 1000 / per
    print(
        f"{label:<34} without {bare_ms:7.2f} ms   bwrap {boxed_ms:7.2f} ms   "
        f"ratio {boxed_ms / bare_ms:5.2f}x   +{best:5.2f} ms (best-time difference)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and processors")
    args = parser.parse_args()
    logging.getLogger("pennflow.engine.processes").setLevel(logging.ERROR)  # the unsandboxed arm's notice
    sandbox = detect({})
    if sandbox.bwrap is None:
        print(f"no sandbox here ({sandbox.why_not}): nothing to compare")
        return 0
    repeat, n = (3, 10) if args.quick else (args.repeat, 30)

    view = SandboxView(cwd=Path("/"), hidden=[], readable=[], writable=[])
    boxed_argv = wrap_command([TRUE], sandbox.bwrap, view)
    bare, boxed = [], []
    for _ in range(repeat * 5):
        bare.append(spawn_seconds([TRUE]))
        boxed.append(spawn_seconds(boxed_argv))
    line("one start of `true`", bare, boxed, 1)

    workflow = chain(n)
    bare, boxed = [], []
    with tempfile.TemporaryDirectory(prefix="pennflow-bench-sandbox-") as tmp:
        for i in range(repeat):
            bare.append(run_seconds(workflow, Path(tmp, f"off-{i}"), sandboxed=False))
            boxed.append(run_seconds(workflow, Path(tmp, f"on-{i}"), sandboxed=True))
    line(f"a run of {n} chained processors", bare, boxed, n)
    print("(per processor; the run includes store, data source and records)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
