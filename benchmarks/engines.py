"""``pennflow run`` against doit, luigi and snakemake on the same DAGs of ``/bin/true``, with a
shell-script floor: per-step overhead side by side, in one run.

Each workload (a chain of 30, a fan-out of 30, a random DAG of 200) is written once per tool, as
that tool's users would write it, every step running ``/bin/true`` and nothing else (pennflow gets a
data source in front, which copies one small file: every workflow starts with one). Every tool runs
one step at a time (doit ``-n 1``, luigi ``--workers 1``, snakemake ``--cores 1``, pennflow
``--max-parallel 1``), from its own command line in a fresh folder, so start-up is included; the
floor is ``sh`` running ``/bin/true`` once per step in topological order.

* ``wall ms``, ``cpu ms``: the whole command's wall time, and the CPU time (user + system) of the
  tool and of every process it started (medians). This process is a child subreaper (Linux): what a
  tool leaves to the system to reap (a sandbox's init, whose parent does not wait for it) is reaped
  here, so its CPU time counts too;
* ``wall/step``, ``cpu/step``: over the floor, divided by the steps (start-up spread over them);
* ``step wall``, ``step cpu``: what one more step costs, the slope between a one-step run and this
  workload, the floor's slope taken off: each repeat runs a one-step workflow just before the full
  one, and the median of the repeats' slopes is shown (the load of the moment is on both ends of
  each; medians of runs made minutes apart differ by more than 30 steps cost on a busy machine);
* ``vs doit``: the four over doit's (1.0 = as fast as doit; lower is faster).

``pennflow-tmpfs`` is the same ``pennflow run`` with ``PENNFLOW_HOME`` in ``/dev/shm``: pennflow
creates a few folders and a log per processor (the run's record on disk), the other tools none, and
the last line says what creating a folder costs on each. ``pennflow-nosandbox`` is the same run with
``PENNFLOW_SANDBOX=off``; ``pennflow-baseline`` (``--baseline DIR``) is ``pennflow run`` from another
checkout's ``pennflow`` package (an earlier commit, say), measured side by side in the same run.
The goal is judged on ``pennflow``.

Tools not installed are skipped with a note (``pip install -e '.[bench]'`` installs all three).

Run: python benchmarks/engines.py [--repeat N] [--tools pennflow,doit,...] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

TRUE = shutil.which("true", path="/bin:/usr/bin") or "/bin/true"
BIN = Path(sys.executable).parent
TOOLS = ("floor", "pennflow", "pennflow-tmpfs", "pennflow-nosandbox", "doit", "luigi", "snakemake")
PENNFLOWS = ("pennflow", "pennflow-tmpfs", "pennflow-nosandbox", "pennflow-baseline")
PR_SET_CHILD_SUBREAPER = 36
TMPFS = Path("/dev/shm")  # pennflow-tmpfs: the same run with PENNFLOW_HOME in memory, where there is one
GOAL = "pennflow's per-step overhead at most doit's on every workload"

Dag = dict[str, list[str]]  # step -> the steps it depends on, in topological order


# ------------------------------------------------------------------ workloads


def chain(n: int) -> Dag:
    return {f"s{i:03d}": ([f"s{i - 1:03d}"] if i else []) for i in range(n)}


def fan_out(n: int) -> Dag:
    return {f"s{i:03d}": [] for i in range(n)}


def random_dag(n: int, seed: int = 7) -> Dag:
    """Each step depends on 0-3 earlier ones (about one in ten on none): a fixed, reproducible shape."""
    rng = random.Random(seed)
    dag: Dag = {}
    for i in range(n):
        earlier = list(dag)
        width = 0 if not earlier or rng.random() < 0.1 else rng.randint(1, min(3, len(earlier)))
        dag[f"s{i:03d}"] = sorted(rng.sample(earlier, width))
    return dag


# ------------------------------------------------------------------ one tool each


def floor_command(dag: Dag, folder: Path) -> list[str]:
    script = folder / "steps.sh"
    script.write_text("set -e\n" + "".join(f"{TRUE}\n" for _ in dag))
    return ["sh", str(script)]


def pennflow_command(dag: Dag, folder: Path) -> list[str]:
    processors: list[dict] = [{"id": "src", "type": "data-source"}]
    for step, deps in dag.items():
        processors.append({"id": step, "command": [TRUE], "dependsOn": deps or ["src"]})
    (folder / "flow.json").write_text(json.dumps({"name": "bench", "processors": processors}))
    (folder / "input").mkdir()
    (folder / "input" / "sample.txt").write_text("x\n")
    return [
        str(BIN / "pennflow"),
        "run",
        "flow.json",
        "--input",
        "input",
        "--max-parallel",
        "1",
        "--no-containers",
    ]


def doit_command(dag: Dag, folder: Path) -> list[str]:
    lines = ["def task_bench():"]
    for step, deps in dag.items():
        task_dep = [f"bench:{dep}" for dep in deps]
        lines.append(f"    yield {{'name': {step!r}, 'actions': [[{TRUE!r}]], 'task_dep': {task_dep!r}}}")
    (folder / "dodo.py").write_text("\n".join(lines) + "\n")
    return [str(BIN / "doit"), "-n", "1", "--db-file", str(folder / ".doit.db")]


def luigi_command(dag: Dag, folder: Path) -> list[str]:
    lines = [
        "import subprocess",
        "import luigi",
        f"DONE = {str(folder / 'done')!r}",
        "",
        "class Step(luigi.Task):",
        "    name = luigi.Parameter()",
        "    deps = luigi.ListParameter(default=[])",
        "",
        "    def requires(self):",
        "        return [Step(name=d, deps=DAG[d]) for d in self.deps]",
        "",
        "    def output(self):",
        "        return luigi.LocalTarget(f'{DONE}/{self.name}')",
        "",
        "    def run(self):",
        f"        subprocess.run([{TRUE!r}], check=True)",
        "        with self.output().open('w') as out:",
        "            out.write('')",
        "",
        "class All(luigi.WrapperTask):",
        "    def requires(self):",
        "        return [Step(name=s, deps=DAG[s]) for s in DAG]",
        "",
        f"DAG = {dag!r}",
    ]
    (folder / "bench_flow.py").write_text("\n".join(lines) + "\n")
    return [
        str(BIN / "luigi"),
        "--module",
        "bench_flow",
        "All",
        "--local-scheduler",
        "--workers",
        "1",
        "--no-lock",
        "--log-level",
        "WARNING",
    ]


def snakemake_command(dag: Dag, folder: Path) -> list[str]:
    rules = ["rule all:", f"    input: {[f'done/{s}' for s in dag]!r}", ""]
    for step, deps in dag.items():
        rules += [
            f"rule {step}:",
            f"    input: {[f'done/{d}' for d in deps]!r}",
            f"    output: touch('done/{step}')",
            f"    shell: '{TRUE}'",
            "",
        ]
    (folder / "Snakefile").write_text("\n".join(rules))
    return [str(BIN / "snakemake"), "--cores", "1", "--quiet", "all"]


COMMANDS: dict[str, Callable[[Dag, Path], list[str]]] = {
    "floor": floor_command,
    "pennflow": pennflow_command,
    "pennflow-tmpfs": pennflow_command,
    "pennflow-nosandbox": pennflow_command,
    "pennflow-baseline": pennflow_command,
    "doit": doit_command,
    "luigi": luigi_command,
    "snakemake": snakemake_command,
}


BASELINE: Path | None = None  # --baseline: the folder holding another checkout's pennflow package


def installed(tool: str) -> bool:
    if tool == "pennflow-tmpfs":
        return TMPFS.is_dir() and os.access(TMPFS, os.W_OK) and installed("pennflow")
    if tool == "pennflow-nosandbox":
        return installed("pennflow")
    if tool == "pennflow-baseline":
        return BASELINE is not None and (BASELINE / "pennflow" / "cli").is_dir()
    return tool == "floor" or (BIN / tool).is_file()


def become_subreaper() -> bool:
    """Orphaned descendants of the tools come to this process, to be reaped (and counted) here."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


def reap_orphans() -> None:
    """Wait for every descendant the tool left behind (their CPU time then counts as children's)."""
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(tool: str, dag: Dag, scratch: Path, warm_up: bool = False) -> tuple[float, float]:
    """One run of ``tool`` on ``dag`` in a fresh folder (nothing cached, nothing up to date): its
    wall time, and the CPU time of the tool and of every process it waited for.

    A warm-up run may write bytecode: the other tools' modules were compiled when pip installed
    them, and pennflow's (an editable install in a checkout) should be too, or every measured run
    would compile them again. Measured runs write none (the workflow files are fresh each time).
    """
    folder = Path(tempfile.mkdtemp(prefix=f"{tool}-", dir=scratch))
    command = COMMANDS[tool](dag, folder)
    home = Path(tempfile.mkdtemp(prefix="home-", dir=TMPFS)) if tool == "pennflow-tmpfs" else folder / "home"
    env = {**os.environ, "PENNFLOW_HOME": str(home), "PYTHONDONTWRITEBYTECODE": "1"}
    if warm_up:
        del env["PYTHONDONTWRITEBYTECODE"]
    if tool == "pennflow-nosandbox":
        env["PENNFLOW_SANDBOX"] = "off"
    paths = [str(folder), env.get("PYTHONPATH")]
    if tool == "pennflow-baseline":
        assert BASELINE is not None
        command = [sys.executable, "-m", "pennflow.cli", *command[1:]]
        paths.insert(0, str(BASELINE))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, paths))
    cpu, start = children_cpu(), time.perf_counter()
    done = subprocess.run(
        command, cwd=folder, env=env, stdin=subprocess.DEVNULL, capture_output=True, check=False
    )
    wall = time.perf_counter() - start
    reap_orphans()
    cpu = children_cpu() - cpu
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).decode(errors="replace")[-2000:]
        raise RuntimeError(f"{tool} failed (exit {done.returncode}):\n{tail}")
    shutil.rmtree(folder, ignore_errors=True)
    shutil.rmtree(home, ignore_errors=True)
    return wall, cpu


def creation_ms(folder: Path, count: int = 200) -> float:
    """What creating one folder costs here (pennflow creates a few per processor; the others none)."""
    root = Path(tempfile.mkdtemp(prefix="mkdir-", dir=folder))
    start = time.perf_counter()
    for index in range(count):
        (root / str(index)).mkdir()
    elapsed = time.perf_counter() - start
    shutil.rmtree(root, ignore_errors=True)
    return elapsed / count * 1000


def medians(tool: str, dag: Dag, scratch: Path, repeat: int) -> tuple[float, float, float, float]:
    """Median wall and CPU time, and the least of each (other work on the machine only adds to them)."""
    runs = [measure(tool, dag, scratch) for _ in range(repeat)]
    walls, cpus = [r[0] for r in runs], [r[1] for r in runs]
    return statistics.median(walls), statistics.median(cpus), min(walls), min(cpus)


def main() -> None:
    global BASELINE
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per tool and workload (median shown)")
    parser.add_argument(
        "--tools", default=",".join(TOOLS[1:]), help="comma-separated, of: " + ", ".join(TOOLS[1:])
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        help="a folder holding another checkout's pennflow package: adds pennflow-baseline",
    )
    args = parser.parse_args()
    BASELINE = args.baseline.absolute() if args.baseline else None
    wanted = ["floor", *[t for t in args.tools.split(",") if t and t != "floor"]]
    if BASELINE is not None and "pennflow-baseline" not in wanted:
        wanted.append("pennflow-baseline")
    tools = [t for t in wanted if installed(t)]
    for tool in sorted(set(wanted) - set(tools)):
        print(f"note: {tool} is not installed here (pip install -e '.[bench]'): skipped")
    if not become_subreaper():
        print("note: not a child subreaper here: CPU time of processes a tool leaves unreaped is missed")
    workloads = [
        ("chain of 30", chain(30)),
        ("fan-out of 30", fan_out(30)),
        ("random DAG of 200", random_dag(200)),
    ]
    met = {"wall": True, "cpu": True}
    with tempfile.TemporaryDirectory(prefix="pennflow-engines-") as tmp:
        scratch = Path(tmp)
        for tool in tools:  # warm the page cache and bytecode of each tool once
            measure(tool, chain(1), scratch, warm_up=True)
        startup = {tool: medians(tool, chain(1), scratch, args.repeat) for tool in tools}
        print(f"== {', '.join(tools[1:])} vs a shell floor: median of {args.repeat}, one step at a time ==")
        print(
            "start-up, a one-step workflow (wall / cpu ms): "
            + ", ".join(f"{t} {startup[t][0] * 1000:.0f} / {startup[t][1] * 1000:.0f}" for t in tools)
        )
        print(
            f"{'workload':18} {'tool':18} {'wall ms':>8} {'cpu ms':>7} {'wall/step':>9} {'cpu/step':>8}"
            f" {'step wall':>9} {'step cpu':>8}   vs doit: wall/step, cpu/step, step wall, step cpu"
        )
        for label, dag in workloads:
            n = len(dag)
            runs: dict[str, list[tuple[float, float]]] = {tool: [] for tool in tools}
            ones: dict[str, list[tuple[float, float]]] = {tool: [] for tool in tools}
            for _ in range(args.repeat):  # the tools alternate: a busy spell hits them all alike
                for tool in tools:
                    # A one-step run beside each full one: the slope between them comes from runs made
                    # moments apart, so the load of the moment is on both ends.
                    ones[tool].append(measure(tool, chain(1), scratch))
                    runs[tool].append(measure(tool, dag, scratch))
            wall = {t: statistics.median(r[0] for r in runs[t]) for t in tools}
            cpu = {t: statistics.median(r[1] for r in runs[t]) for t in tools}
            wall_step = {t: (wall[t] - wall["floor"]) / n * 1000 for t in tools}
            cpu_step = {t: (cpu[t] - cpu["floor"]) / n * 1000 for t in tools}
            # What one more step costs: start-up (the one-step run beside it) left out, on both sides.
            step_wall = _slope(tools, runs, ones, n, 0)
            step_cpu = _slope(tools, runs, ones, n, 1)
            figures = (wall_step, cpu_step, step_wall, step_cpu)
            for tool in tools:
                shown = (
                    ""
                    if tool == "floor"
                    else " ".join(f"{f[tool]:{w}.2f}" for f, w in zip(figures, (9, 8, 9, 8), strict=True))
                )
                versus = ""
                if "doit" in tools and tool not in ("floor", "doit"):
                    versus = ", ".join(_ratio(f[tool], f["doit"]) for f in figures)
                print(
                    f"{label:18} {tool:18} {wall[tool] * 1000:8.0f} {cpu[tool] * 1000:7.0f} {shown:>37}   {versus}"
                )
            if "doit" in tools and "pennflow" in tools:
                met["wall"] = met["wall"] and step_wall["pennflow"] <= step_wall["doit"]
                met["cpu"] = met["cpu"] and step_cpu["pennflow"] <= step_cpu["doit"]
            sys.stdout.flush()
        disks = f"creating a folder: {creation_ms(scratch):.3f} ms where the tools run"
        if "pennflow-tmpfs" in tools:
            disks += f", {creation_ms(TMPFS):.3f} ms in {TMPFS} (pennflow-tmpfs's PENNFLOW_HOME)"
        print(disks)
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(
        f"machine: {os.cpu_count()} cores, load average {load} (other work on the machine skews wall times)"
    )
    if "doit" in tools and "pennflow" in tools:
        print(
            f"goal {GOAL} (step cpu): {'met' if met['cpu'] else 'NOT met'}; by step wall: {'met' if met['wall'] else 'NOT met'}"
        )


def _slope(
    tools: list[str],
    runs: dict[str, list[tuple[float, float]]],
    ones: dict[str, list[tuple[float, float]]],
    n: int,
    which: int,
) -> dict[str, float]:
    """ms one more step costs (``which``: 0 wall, 1 CPU): the median over the repeats of each full
    run's excess over the one-step run made just before it, the floor's taken off."""

    def slopes(tool: str) -> list[float]:
        return [
            (full[which] - one[which]) / max(n - 1, 1) * 1000
            for full, one in zip(runs[tool], ones[tool], strict=True)
        ]

    floor = statistics.median(slopes("floor"))
    return {t: statistics.median(slopes(t)) - floor for t in tools}


def _ratio(mine: float, doit: float) -> str:
    return f"{mine / doit:.2f}" if doit > 0 else "-"


if __name__ == "__main__":
    main()
