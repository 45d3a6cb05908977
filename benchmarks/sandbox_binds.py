"""What the run's one sandbox costs to start as a run has more processors: bwrap with one writable
bind per OUTPUT_DIR (as ``engine.processes.start_run_sandbox`` asks for), inside a read-only run
folder inside a covered home, the way a run's view is laid out.

bwrap reads the whole mount table after each bind it makes (to apply the bind's flags to what is
mounted below it), and the table grows by one line per bind: the start grows faster than the
number of processors. Printed: the CPU time (bwrap and the processes it starts; this process is a
child subreaper, so the sandbox's init is counted) and wall time of ``bwrap ... /bin/true``, least
of three, and the CPU time per bind.

Run: python benchmarks/sandbox_binds.py [--binds 1,30,200,500]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from engines import become_subreaper, reap_orphans  # noqa: E402


def started(binds: int, root: Path) -> tuple[float, float]:
    """Least CPU and wall seconds of three sandbox starts with ``binds`` writable OUTPUT_DIRs."""
    run = root / "home" / "runs" / "r-1"
    options: list[str] = []
    for index in range(binds):
        output = run / f"p{index:04d}" / "output"
        output.mkdir(parents=True)
        options += ["--bind", str(output), str(output)]
    home = root / "home"
    argv = [
        shutil.which("bwrap") or "bwrap",
        *("--die-with-parent", "--unshare-user", "--unshare-pid", "--cap-drop", "ALL"),
        *("--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"),
        *("--tmpfs", str(home), "--ro-bind", str(run), str(run)),
        *options,
        *("--remount-ro", str(home), "--", "/bin/true"),
    ]
    best = (float("inf"), float("inf"))
    for _ in range(3):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        wall = time.perf_counter()
        subprocess.run(argv, check=True, stdin=subprocess.DEVNULL)
        reap_orphans()
        wall = time.perf_counter() - wall
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        best = (min(best[0], cpu), min(best[1], wall))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binds", default="1,30,200,500", help="comma-separated counts of OUTPUT_DIRs")
    args = parser.parse_args()
    if shutil.which("bwrap") is None:
        sys.exit("bwrap is not installed here: nothing to measure")
    if not become_subreaper():
        print("note: not a child subreaper here: the sandbox's init is not counted")
    print(f"{'OUTPUT_DIRs':>11} {'cpu ms':>8} {'wall ms':>8} {'cpu ms a bind':>13}")
    for binds in [int(b) for b in args.binds.split(",") if b]:
        with tempfile.TemporaryDirectory(prefix="pennflow-binds-") as tmp:
            cpu, wall = started(binds, Path(tmp))
        print(f"{binds:11d} {cpu * 1000:8.0f} {wall * 1000:8.0f} {cpu * 1000 / max(binds, 1):13.2f}")
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"machine: {os.cpu_count()} cores, load average {load}")


if __name__ == "__main__":
    main()
