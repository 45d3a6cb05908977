"""CDK synth time of the compute node: ``python app.py`` (what ``cdk synth`` runs), with cdk-nag.

Each synth writes the cloud assembly to a fresh temporary folder (``CDK_OUTDIR``); the figure is
the best wall time of a few runs, with the number of templates and resources of the assembly.

Run: python benchmarks/synth.py [--runs N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def synth_once() -> tuple[float, dict[str, int]]:
    """Seconds for one synth, and the resource count of each template it wrote."""
    with tempfile.TemporaryDirectory(prefix="pennflow-synth-") as outdir:
        env = {**os.environ, "CDK_OUTDIR": outdir, "JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION": "1"}
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "app.py"], cwd=ROOT, env=env, capture_output=True, text=True, check=False
        )
        elapsed = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"python app.py exited {done.returncode}:\n{done.stderr.strip()[-3000:]}")
        templates = {
            path.name: len(json.loads(path.read_text()).get("Resources", {}))
            for path in sorted(Path(outdir).rglob("*.template.json"))
        }
    if not templates:
        raise RuntimeError("python app.py wrote no template")
    return elapsed, templates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="synth runs (best shown)")
    args = parser.parse_args()
    timings = []
    templates: dict[str, int] = {}
    for _ in range(args.runs):
        seconds, templates = synth_once()
        timings.append(seconds)
    print(f"== CDK synth (python app.py, cdk-nag on), best of {args.runs} ==")
    print(f"synth seconds: best {min(timings):.1f}, all " + ", ".join(f"{t:.1f}" for t in timings))
    print(f"templates: {len(templates)}; resources: {sum(templates.values())}")
    for name, count in templates.items():
        print(f"  {name}: {count} resources")


if __name__ == "__main__":
    main()
