"""What one more step of ``pennflow run`` costs in system calls, counted (not timed) with ``strace``.

A chain of one and a chain of 30 (``benchmarks/engines.py``'s workloads: every step ``/bin/true``,
one at a time, a data source in front) run under ``strace -ff``; the difference over 29 steps is
what a step costs, by who makes the calls:

* ``engine``: the ``pennflow run`` process and its threads (scheduler, records, folders, logs);
* ``processor``: each step's own process, from its fork to its exit (``/bin/true`` itself);
* ``sandbox``: the run's sandbox (bwrap, the launcher inside it) and the lease's supervisor;

and, over all of them, how many folders and files are created (``mkdir``, an ``open`` with
``O_CREAT``, ``symlink``: on a journalled disk each is a new inode, the dearest part of a step's
record) and how many ``fsync``/``fdatasync`` calls are made. Counts do not depend on the load, so
two checkouts compare exactly: ``--baseline DIR`` counts another checkout's ``pennflow`` package
beside this one. Needs ``strace`` (Linux).

Run: python benchmarks/step_syscalls.py [--baseline DIR] [--steps N]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from engines import BIN, chain, pennflow_command  # noqa: E402  (the same workloads, written the same way)

KINDS = ("engine", "processor", "sandbox")
CALL = re.compile(r"^(?:\d+:\d+:\d+\.\d+ )?(\w+)\(")
SPAWNED = re.compile(r"^(?:\d+:\d+:\d+\.\d+ )?(?:clone3?|vfork|fork)\((.*)\) = (\d+)$")
CREATES = ("mkdir", "mkdirat", "symlink", "symlinkat", "link", "linkat", "creat")


def counted_run(steps: int, folder: Path, baseline: Path | None) -> dict[str, Counter]:
    """Run a chain of ``steps`` under strace: each kind's calls by name (``creates``: new entries)."""
    work = folder / f"chain-{steps}"
    work.mkdir()
    command = pennflow_command(chain(steps), work)
    env = {**os.environ, "PENNFLOW_HOME": str(work / "home"), "PYTHONDONTWRITEBYTECODE": "1"}
    if baseline is not None:
        command = [sys.executable, "-m", "pennflow.cli", *command[1:]]
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(baseline), env.get("PYTHONPATH")]))
    traces = work / "trace"
    traces.mkdir()
    done = subprocess.run(
        ["strace", "-ff", "-o", str(traces / "t"), *command],
        cwd=work,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"pennflow run failed (exit {done.returncode}):\n{done.stderr.decode()[-2000:]}")
    return _by_kind(traces)


def _by_kind(traces: Path) -> dict[str, Counter]:
    """Each traced task's calls, attributed to the kind of the program it runs: its own ``execve``'s,
    else (a thread, a fork that never exec'd) its parent's."""
    calls: dict[int, Counter] = {}
    program: dict[int, str] = {}
    parent: dict[int, int] = {}
    for trace in traces.iterdir():
        tid = int(trace.name.rsplit(".", 1)[1])
        counts = calls[tid] = Counter()
        for line in trace.read_text(errors="replace").splitlines():
            match = CALL.match(line)
            if match is None:
                continue
            name = match.group(1)
            counts[name] += 1
            failed = " = -1 " in line
            if name == "execve" and not failed:
                program[tid] = line  # the last successful one names what the task runs
            elif not failed and (name in CREATES or (name == "openat" and "O_CREAT" in line)):
                counts["creates"] += 1
            spawned = SPAWNED.match(line)
            if spawned is not None:
                parent[int(spawned.group(2))] = tid
    root = min(calls)  # the first task strace started: pennflow run
    totals = {kind: Counter() for kind in KINDS}
    for tid, counts in calls.items():
        totals[_kind(tid, root, program, parent)].update(counts)
    return totals


def _kind(tid: int, root: int, program: dict[int, str], parent: dict[int, int]) -> str:
    while tid not in program and tid in parent:
        tid = parent[tid]
    line = program.get(tid, "")
    if tid == root:
        return "engine"
    if '"/bin/true"' in line or '"/usr/bin/true"' in line:
        return "processor"
    return "sandbox"


def per_step(one: dict[str, Counter], full: dict[str, Counter], steps: int) -> dict[str, float]:
    figures: dict[str, float] = {}
    for kind in KINDS:
        total = sum(n for name, n in full[kind].items() if name != "creates")
        total_one = sum(n for name, n in one[kind].items() if name != "creates")
        figures[kind] = (total - total_one) / (steps - 1)
    everything = [sum((counts[k] for k in KINDS), Counter()) for counts in (one, full)]
    figures["creates"] = (everything[1]["creates"] - everything[0]["creates"]) / (steps - 1)
    syncs = ("fsync", "fdatasync")
    figures["syncs"] = sum(everything[1][s] - everything[0][s] for s in syncs) / (steps - 1)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="the longer chain's steps (default 30)")
    parser.add_argument("--baseline", type=Path, help="a folder holding another checkout's pennflow package")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    if shutil.which("strace") is None:
        sys.exit("strace is not installed here: nothing to count")
    if not (BIN / "pennflow").is_file():
        sys.exit(f"no pennflow in {BIN}: pip install -e . first")
    checkouts = {"pennflow": None}
    if args.baseline is not None:
        checkouts["pennflow-baseline"] = args.baseline.absolute()
    results = {}
    with tempfile.TemporaryDirectory(prefix="pennflow-syscalls-") as tmp:
        for label, baseline in checkouts.items():
            folder = Path(tmp, label)
            folder.mkdir()
            one = counted_run(1, folder, baseline)
            full = counted_run(args.steps, folder, baseline)
            results[label] = per_step(one, full, args.steps)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(
        f"== system calls one more step costs (chain of {args.steps} minus chain of 1, over {args.steps - 1}) =="
    )
    print(
        f"{'checkout':18} {'engine':>7} {'processor':>9} {'sandbox':>7} {'all':>7} {'creates':>7} {'syncs':>5}"
    )
    for label, figures in results.items():
        every = sum(figures[kind] for kind in KINDS)
        print(
            f"{label:18} {figures['engine']:7.1f} {figures['processor']:9.1f} {figures['sandbox']:7.1f}"
            f" {every:7.1f} {figures['creates']:7.2f} {figures['syncs']:5.2f}"
        )


if __name__ == "__main__":
    main()
