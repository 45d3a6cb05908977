"""Run every benchmark script of this folder, one after another, and print all their figures.

Each script runs in its own interpreter (this one's), with ``--quick`` when it offers one; a script
that is missing is skipped with a note. The goal lines of every script are repeated at the end.
A few minutes on a 2-core machine.

Run: python benchmarks/run_all.py
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = ("compiler", "transitions", "local_engine", "cold_start", "startup", "synth", "download")


def scripts() -> list[str]:
    """The known scripts in a fixed order, then any other script of the folder."""
    others = sorted(
        p.stem for p in HERE.glob("*.py") if p.stem not in ORDER and p.name != Path(__file__).name
    )
    return [*ORDER, *others]


def run(name: str) -> tuple[bool, list[str]]:
    """Run one script, echoing its output as it comes; returns (succeeded, goal lines)."""
    path = HERE / f"{name}.py"
    command = [sys.executable, str(path)]
    if "--quick" in path.read_text(encoding="utf-8"):
        command.append("--quick")
    print(f"\n######## {name}: {' '.join(['python', f'benchmarks/{path.name}', *command[2:]])}", flush=True)
    start = time.perf_counter()
    goals = []
    with subprocess.Popen(
        command, cwd=HERE.parent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            print(line, end="", flush=True)
            if line.lower().startswith("goal"):
                goals.append(f"{name}: {line.strip()}")
    elapsed = time.perf_counter() - start
    ok = process.returncode == 0
    print(f"######## {name}: {'done' if ok else f'FAILED (exit {process.returncode})'} in {elapsed:.0f} s")
    return ok, goals


def main() -> int:
    start = time.perf_counter()
    failed, skipped, goals = [], [], []
    for name in scripts():
        if not (HERE / f"{name}.py").is_file():
            skipped.append(name)
            print(f"\n######## {name}: skipped, benchmarks/{name}.py is missing")
            continue
        ok, script_goals = run(name)
        goals += script_goals
        if not ok:
            failed.append(name)
    print("\n######## goals")
    print("\n".join(goals) or "(no goal lines)")
    if skipped:
        print(f"skipped (missing): {', '.join(skipped)}")
    if failed:
        print(f"FAILED: {', '.join(failed)}")
    print(f"total {time.perf_counter() - start:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
