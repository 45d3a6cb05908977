"""What resume costs and saves, side by side in one run.

* ``keys``: a run records each step's key and output hash when it succeeds. The same chain runs
  with that recording and without it (``StepReuse`` switched off), for small outputs (30 steps, one
  small file each) and large ones (4 steps copying 64 x 1 MiB): ``ratio`` = with / without.
* ``resume``: a chain of 6 steps, each sleeping ``--step-seconds`` then copying its input, fails at
  its last step; ``pennflow resume`` with the fix runs only that step. ``ratio`` = the resume's wall
  time over a fresh run of the fixed chain (lower is better; ideal about 1/6 plus the data source).

Run: python benchmarks/resume.py [--repeat N] [--step-seconds S] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

from pennflow.engine.home import PennflowHome
from pennflow.engine.local import run_workflow
from pennflow.engine.resume import resume_run
from pennflow.engine.step_reuse import StepReuse
from pennflow.stores.sqlite import SqliteRunStore
from pennflow.workflow.definition import parse_definition

COPY = 'cp -R "$INPUT_DIR"/. "$OUTPUT_DIR"/'


def chain(steps: int, command: str, fail_last: bool = False) -> str:
    lines = ["name: bench", "processors:", "  - {id: src, type: data-source}"]
    after = "src"
    for index in range(steps):
        pid = f"s{index:02d}"
        body, params = command, ""
        if fail_last and index == steps - 1:  # only the last step has the param the fix changes
            body, params = f'test "$FIXED" = yes || exit 3; {command}', ', defaultParams: {FIXED: "no"}'
        lines.append(f"  - {{id: {pid}, command: [sh, -c, '{body}'], dependsOn: [{after}]{params}}}")
        after = pid
    return "\n".join(lines) + "\n"


def make_input(folder: Path, files: int, size: int) -> Path:
    folder.mkdir(parents=True)
    for index in range(files):
        (folder / f"f{index:03d}.bin").write_bytes(os.urandom(size))
    return folder


@contextlib.contextmanager
def keys_off() -> Iterator[None]:
    with (
        mock.patch.object(StepReuse, "succeeded", lambda self, processor, output: {}),
        mock.patch.object(StepReuse, "reusable", lambda self, processor, output: None),
    ):
        yield


def timed_run(definition: str, input_dir: Path, home: Path, **kwargs) -> tuple[float, str]:
    start = time.perf_counter()
    record = run_workflow(
        parse_definition(definition),
        definition_dir=home,
        input_dir=input_dir,
        home=home,
        docker=False,
        **kwargs,
    )
    return time.perf_counter() - start, record.run_id


def keys_case(name: str, definition: str, input_dir: Path, root: Path, repeat: int) -> float:
    with_keys, without = [], []
    for index in range(repeat):
        with keys_off():
            without.append(timed_run(definition, input_dir, root / f"{name}-off-{index}")[0])
        with_keys.append(timed_run(definition, input_dir, root / f"{name}-on-{index}")[0])
    on, off = statistics.median(with_keys), statistics.median(without)
    print(f"keys    {name:<28} {off * 1000:9.0f} {on * 1000:9.0f}   ratio {on / off:5.2f}")
    return on / off


def resume_case(root: Path, input_dir: Path, repeat: int, step_seconds: float) -> float:
    command = f"sleep {step_seconds}; {COPY}"
    fresh, resumed = [], []
    for index in range(repeat):
        home = PennflowHome(root / f"resume-{index}")
        fixed = chain(6, command, fail_last=True)
        fresh.append(timed_run(fixed, input_dir, home.root / "fresh", params={"FIXED": "yes"})[0])
        _, run_id = timed_run(fixed, input_dir, home.root)
        start = time.perf_counter()
        with SqliteRunStore(home.db_path) as store:
            record = resume_run(run_id, store=store, home=home, overrides={"FIXED": "yes"})
        resumed.append(time.perf_counter() - start)
        assert record.status.value == "SUCCEEDED", record.reason
    new, again = statistics.median(fresh), statistics.median(resumed)
    print(
        f"resume  {'6-step chain, last failed':<28} {new * 1000:9.0f} {again * 1000:9.0f}   ratio {again / new:5.2f}"
    )
    return again / new


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--step-seconds", type=float, default=0.5)
    parser.add_argument("--quick", action="store_true", help="one repetition, 16 MiB outputs")
    args = parser.parse_args()
    repeat, large_files = (1, 16) if args.quick else (args.repeat, 64)
    with tempfile.TemporaryDirectory(prefix="pennflow-bench-") as tmp:
        root = Path(tmp)
        small = make_input(root / "small", 1, 64)
        large = make_input(root / "large", large_files, 1 << 20)
        print(f"{'':8}{'case':<28} {'base ms':>9} {'new ms':>9}")
        keys_case("30 steps, small output", chain(30, COPY), small, root, repeat)
        large_ratio = keys_case(f"4 steps x {large_files} MiB output", chain(4, COPY), large, root, repeat)
        resume_ratio = resume_case(root, small, repeat, args.step_seconds)
    print("keys: base = without step keys, new = with; resume: base = fresh run, new = resume")
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"machine: {os.cpu_count()} CPUs, load average {load} (other work skews these figures)")
    print(
        f"goal step keys on large outputs <= 1.5x: {large_ratio:.2f}x, {'met' if large_ratio <= 1.5 else 'NOT met'}"
    )
    print(
        f"goal resume <= 0.35x a fresh run: {resume_ratio:.2f}x, {'met' if resume_ratio <= 0.35 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
