"""Start-up time of the ``pennflow`` command against two baselines, measured side by side.

Each case runs in a fresh interpreter (``subprocess``), best of N, the cases interleaved round by
round so that other work on the machine skews them alike:

* ``python -c pass``: the bare interpreter.
* ``python -c "import pydantic, yaml"``: what reading and validating a definition must import.
* one pydantic model: ``yaml`` and a one-field ``BaseModel`` built and validated, the floor of any
  command that validates with pydantic (``import pydantic`` is lazy: the baseline builds nothing).
* ``pennflow --help``, ``validate``, ``compile`` of the example workflow, ``layers --help``: the
  console script's entry point (``pennflow.cli:main``) run by the same interpreter.

``wall ms`` is ``time.perf_counter`` around the subprocess; ``cpu ms`` the CPU time (user + system)
the child used, from ``getrusage``: steadier on a busy machine, where waiting for a core adds to the
wall time only. Bytecode caches are written in a warm-up round (as on a developer's machine, even
when ``PYTHONDONTWRITEBYTECODE`` is set here).

Then the YAML loaders on a generated 1,000-processor definition, in this process: PyYAML's libyaml
``CSafeLoader`` (what ``load_definition`` uses when present) against the pure-Python ``SafeLoader``.

Run: python benchmarks/startup.py [--rounds N]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = "workflows/eeg-quality.yaml"
GOAL = 2.0  # validate, compile and --help: at most 2x `import pydantic, yaml`
BARE, BASELINE = "python -c pass", 'python -c "import pydantic, yaml"'
ONE_MODEL = "one pydantic model (the floor)"
ONE_MODEL_CODE = (
    "import yaml\nfrom pydantic import BaseModel, Field\n"
    "class One(BaseModel):\n    x: int = Field(1, ge=0)\nOne(x=2)\n"
)
GOAL_CASES = ("pennflow --help", f"pennflow validate {EXAMPLE}", f"pennflow compile {EXAMPLE}")
ENTRY = "import sys; from pennflow.cli import main; sys.argv[0] = 'pennflow'; main()"
ENV = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}


def cases() -> dict[str, list[str]]:
    python = sys.executable

    def pennflow(*args: str) -> list[str]:
        # What the console script does, without depending on where pip put it.
        return [python, "-c", ENTRY, *args]

    return {
        BARE: [python, "-c", "pass"],
        BASELINE: [python, "-c", "import pydantic, yaml"],
        ONE_MODEL: [python, "-c", ONE_MODEL_CODE],
        "pennflow --help": pennflow("--help"),
        f"pennflow validate {EXAMPLE}": pennflow("validate", EXAMPLE),
        f"pennflow compile {EXAMPLE}": pennflow("compile", EXAMPLE),
        "pennflow layers --help": pennflow("layers", "--help"),
    }


def time_once(command: list[str]) -> tuple[float, float]:
    """(wall ms, cpu ms) of one run of ``command``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(
        command, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} exited {done.returncode}:\n{done.stderr.decode()}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall * 1000, cpu * 1000


def startup_figures(rounds: int) -> None:
    commands = cases()
    for command in commands.values():  # warm-up: bytecode caches written, files in the page cache
        time_once(command)
    wall: dict[str, list[float]] = {name: [] for name in commands}
    cpu: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(rounds):
        for name, command in commands.items():
            wall_ms, cpu_ms = time_once(command)
            wall[name].append(wall_ms)
            cpu[name].append(cpu_ms)
    best = {name: min(values) for name, values in wall.items()}
    best_cpu = {name: min(values) for name, values in cpu.items()}

    print(f"== start-up: best of {rounds} fresh interpreters (Python {sys.version.split()[0]}) ==")
    print(
        f"{'command':<44} {'wall ms':>8} {'vs bare':>8} {'vs pydantic+yaml':>17}"
        f" {'cpu ms':>8} {'vs bare':>8} {'vs pydantic+yaml':>17}"
    )
    for name in commands:
        print(
            f"{name:<44} {best[name]:>8.1f} {best[name] / best[BARE]:>7.2f}x {best[name] / best[BASELINE]:>16.2f}x"
            f" {best_cpu[name]:>8.1f} {best_cpu[name] / best_cpu[BARE]:>7.2f}x"
            f" {best_cpu[name] / best_cpu[BASELINE]:>16.2f}x"
        )
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"machine: {os.cpu_count()} cores, load average {load} (other work skews these figures)")
    worst = max(GOAL_CASES, key=lambda name: best[name])
    ratio, cpu_ratio = best[worst] / best[BASELINE], best_cpu[worst] / best_cpu[BASELINE]
    verdict = "met" if ratio <= GOAL else "NOT met"
    print(
        f"goal validate, compile, --help <= {GOAL:.0f}x import pydantic, yaml (wall): worst {worst}"
        f" {ratio:.2f}x (cpu {cpu_ratio:.2f}x), {verdict}"
    )


def yaml_figures(processors: int = 1000, repeats: int = 5) -> None:
    import yaml

    lines = ["name: bench", "processors:", "  - id: p0", "    type: data-source"]
    for i in range(1, processors):
        lines += [
            f"  - id: p{i}",
            f"    image: img/p{i}:1",
            f"    dependsOn: [p{max(0, i - 1 - i % 7)}, p{i - 1}]" if i > 1 else "    dependsOn: [p0]",
            "    defaultParams: {WINDOW: '30', MIN_QUALITY: '0.6'}",
        ]
    text = "\n".join(lines) + "\n"
    print(
        f"\n== YAML loaders: a {processors:,}-processor definition ({len(text) / 1000:.0f} kB), best of {repeats} =="
    )
    loaders = [("SafeLoader (pure Python)", yaml.SafeLoader)]
    if hasattr(yaml, "CSafeLoader"):
        loaders.append(("CSafeLoader (libyaml)", yaml.CSafeLoader))
    else:
        print("PyYAML has no libyaml here: only the pure-Python loader is measured")
    best = {}
    for label, loader in loaders:
        timings = []
        for _ in range(repeats):
            start = time.perf_counter()
            yaml.load(text, Loader=loader)
            timings.append(time.perf_counter() - start)
        best[label] = min(timings) * 1000
    slowest = best[loaders[0][0]]
    for label, ms in best.items():
        print(f"{label:<28} {ms:8.1f} ms  {slowest / ms:5.2f}x faster than the pure-Python loader")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="fresh interpreters per case (best of)")
    rounds = parser.parse_args().rounds
    startup_figures(rounds)
    yaml_figures()
    return 0


if __name__ == "__main__":
    sys.exit(main())
