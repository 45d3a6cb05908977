"""Cold start of the Lambda handlers: import time of each ``lambdas/<name>.py`` vs ``import boto3``.

Each import runs in a fresh interpreter (``perf_counter`` around the import inside ``-c``, so the
interpreter's own start-up is left out of both), best of several rounds, the modules interleaved
round by round. The environment is a Lambda's: the function settings with dummy values,
``AWS_REGION``/``AWS_DEFAULT_REGION``, the ``POWERTOOLS_*`` variables the stack sets, and
``LAMBDA_TASK_ROOT`` (with it Powertools' Tracer is enabled and patches, as in Lambda). The handler
code is measured as it is. The slowest handler's import is then broken down with
``python -X importtime``: self time summed by top-level package.

A second column imports from a copy of the Lambda asset (``pennflow/`` and ``lambdas/``) without
``__pycache__``, as deployed: the asset excludes bytecode and the function's code folder is
read-only, so each cold start compiles the project's modules (third-party packages keep theirs).

Run: python benchmarks/cold_start.py [--rounds N]
Goal: every handler imports in <= 1.5x the time of a bare ``import boto3``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stacks.constants import ENV, LAMBDA_CODE_ROOT_ITEMS, LAMBDA_RUNS_MOUNT  # noqa: E402

GOAL_RATIO = 1.5
BASELINE = "boto3"
MARK = "--pennflow-benchmark-import-starts--"
# Typed settings need values of their type; every other setting gets a name-like dummy.
TYPED_VALUES = {
    "RUN_SLOTS": "4",
    "RUN_RETENTION_DAYS": "90",
    "RUNS_MOUNT": LAMBDA_RUNS_MOUNT,
    "TASK_SUBNET_IDS": "subnet-00000000000000001,subnet-00000000000000002",
    "TASK_SECURITY_GROUP_ID": "sg-00000000000000001",
    "LAYER_PRICE_STANDARD_GB_MONTH": "0.3",
    "LAYER_PRICE_IA_GB_MONTH": "0.016",
    "PENNFLOW_NODE_NAME": "pennflow",
}


def lambda_environment() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "POWERTOOLS_"))}
    env.update({name: f"bench-{name.lower().replace('_', '-')}" for name in ENV.values()})
    env.update(TYPED_VALUES)
    env.update(
        {
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_LAMBDA_FUNCTION_NAME": "pennflow-bench",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512",
            "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
            "LAMBDA_TASK_ROOT": str(ROOT),
            "POWERTOOLS_SERVICE_NAME": "pennflow",
            "POWERTOOLS_METRICS_NAMESPACE": "pennflow",
            "POWERTOOLS_LOG_LEVEL": "INFO",
        }
    )
    env.pop("PYTHONPATH", None)
    return env


def handler_modules() -> list[str]:
    """``lambdas.<name>`` for every module of lambdas/ that defines a ``handler``."""
    defines = re.compile(r"^(def handler\b|handler\s*=)", re.MULTILINE)
    return sorted(
        f"lambdas.{path.stem}" for path in (ROOT / "lambdas").glob("*.py") if defines.search(path.read_text())
    )


def asset_copy(folder: Path) -> Path:
    """The asset's folders copied into ``folder`` without bytecode."""
    for item in LAMBDA_CODE_ROOT_ITEMS:
        shutil.copytree(ROOT / item, folder / item, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return folder


def import_seconds(module: str, env: dict[str, str], cwd: Path = ROOT) -> float:
    code = f"import time; start = time.perf_counter(); import {module}; print(time.perf_counter() - start)"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"import {module} failed:\n{done.stderr.strip()[-2000:]}")
    return float(done.stdout.strip().splitlines()[-1])


def contributors(module: str, env: dict[str, str], top: int = 5) -> tuple[list[tuple[str, float]], float]:
    """The ``top`` packages by self import time (ms) from ``-X importtime``, after start-up, and the
    sum over all packages."""
    code = f"import os; os.write(2, b'{MARK}\\n'); import {module}"
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    lines = done.stderr.split(MARK, 1)[-1].splitlines()
    totals: dict[str, float] = defaultdict(float)
    for line in lines:
        match = re.match(r"import time:\s+(\d+)\s+\|\s+(\d+)\s+\|\s+(\S.*)$", line)
        if match:
            totals[match.group(3).strip().split(".")[0]] += int(match.group(1)) / 1000
    return sorted(totals.items(), key=lambda item: -item[1])[:top], sum(totals.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="fresh interpreters per module (best shown)")
    args = parser.parse_args()
    env = lambda_environment()
    modules = [BASELINE, *handler_modules()]
    for module in modules:  # warm: bytecode caches written, files in the page cache
        import_seconds(module, env)
    best: dict[str, float] = {}
    deployed: dict[str, float] = {}
    no_bytecode = {**env, "PYTHONDONTWRITEBYTECODE": "1"}
    with tempfile.TemporaryDirectory(prefix="pennflow-asset-") as tmp:
        asset = asset_copy(Path(tmp))
        for _ in range(args.rounds):
            for module in modules:
                seconds = import_seconds(module, env)
                best[module] = min(best.get(module, seconds), seconds)
                seconds = import_seconds(module, no_bytecode, cwd=asset)
                deployed[module] = min(deployed.get(module, seconds), seconds)
    base = best[BASELINE]
    version = ".".join(map(str, sys.version_info[:3]))
    print(f"== cold start: import time, best of {args.rounds} fresh interpreters (Python {version}) ==")
    print(f"{'module':28} {'import ms':>9} {'vs boto3':>9}   {'no project .pyc ms':>18} {'vs boto3':>9}")
    for module in modules:
        print(
            f"{module:28} {best[module] * 1000:9.1f} {best[module] / base:8.2f}x"
            f"   {deployed[module] * 1000:18.1f} {deployed[module] / base:8.2f}x"
        )
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"machine: {os.cpu_count()} cores, load average {load}")
    handlers = modules[1:]
    worst = max(handlers, key=best.__getitem__)
    ratio = best[worst] / base
    print(
        f"goal <= {GOAL_RATIO:g}x import boto3: worst {worst} {ratio:.2f}x, {'met' if ratio <= GOAL_RATIO else 'NOT met'}"
    )
    print()
    print(f"== top contributors to import {worst} (-X importtime self time by package) ==")
    top, total = contributors(worst, env)
    for package, ms in top:
        print(f"{package:28} {ms:9.1f} ms  {ms / total:4.0%}")
    print(f"{'(all packages)':28} {total:9.1f} ms  (-X importtime adds its own overhead)")


if __name__ == "__main__":
    main()
