"""How long validation takes to refuse hostile definitions, next to a valid Pennsieve definition.

Each hostile class (alias bomb, deep nesting, a huge file, many duplicate-free keys) must be refused
in about the time a normal definition takes to load, not in tens of seconds. Prints milliseconds and
the ratio to the valid definition. Goal: every refusal under 100 ms (before the limits, the alias
bomb ran about 45 s into a MemoryError and the deep YAML took a second to a RecursionError).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from pathlib import Path

from pennflow.workflow.definition import DefinitionError, load_definition

FIXTURE = Path(__file__).parents[1] / "tests" / "fixtures" / "pennsieve" / "builder-diamond.json"


def alias_bomb(levels: int = 9) -> str:
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + f"\nname: bomb\nprocessors: *a{levels - 1}\n"


CASES = {
    "alias bomb (9 levels, 387M values expanded)": ("bomb.yaml", alias_bomb()),
    "JSON nested 100,000 deep": ("deep.json", "[" * 100_000 + "]" * 100_000),
    "YAML nested 50,000 deep": ("deep.yaml", "x: " + "[" * 50_000 + "]" * 50_000),
    "1 MiB + 1 file": ("big.yaml", "#" * (1024 * 1024 + 1)),
    "5,000 processors": ("many.json", json.dumps({"name": "m", "processors": [
        {"id": f"p{i}", "image": "i"} for i in range(5000)]})),
}  # fmt: skip


def timed(path: Path, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        with contextlib.suppress(DefinitionError):
            load_definition(path)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    print(f"cores: {os.cpu_count()}, load: {os.getloadavg()[0]:.1f}")
    baseline = timed(FIXTURE)
    print(f"valid Pennsieve builder definition: {baseline * 1000:.2f} ms")
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for label, (name, text) in CASES.items():
            path = Path(tmp) / name
            path.write_text(text)
            seconds = timed(path)
            worst = max(worst, seconds if label != "5,000 processors" else 0)  # that one is valid
            print(f"{label}: {seconds * 1000:.1f} ms ({seconds / baseline:.1f}x the valid definition)")
    print(
        f"goal: every refusal under 100 ms: {'met' if worst < 0.1 else 'missed'} (worst {worst * 1000:.1f} ms)"
    )


if __name__ == "__main__":
    main()
