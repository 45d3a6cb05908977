"""Entry point of a fan-in processor's init container: builds the union INPUT_DIR (DESIGN §3).

    python -m pennflow.node.fanin --dest /mnt/run/report/input bandpower=/mnt/run/bandpower/output ...

Runs before the processor's own container (which depends on its success). The union is rebuilt
from scratch on every attempt, so a retried task never sees a previous attempt's leftovers.
Exit codes: 0 built, 1 a dependency's output is missing, 2 a name clash or bad arguments.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from pennflow.workflow.contract import FanInClash, build_union


def parse_sources(values: Sequence[str]) -> dict[str, Path]:
    sources: dict[str, Path] = {}
    for value in values:
        dep, sep, path = value.partition("=")
        if not sep or not dep or not path:
            raise ValueError(f"source {value!r} must be <processor id>=<output folder>")
        sources[dep] = Path(path)
    return sources


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pennflow.node.fanin", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--dest", required=True, type=Path, help="the union folder (the processor's INPUT_DIR)"
    )
    parser.add_argument("sources", nargs="*", help="<processor id>=<its output folder>, one per dependency")
    args = parser.parse_args(argv)
    try:
        sources = parse_sources(args.sources)
    except ValueError as exc:
        print(f"fan-in: {exc}", file=sys.stderr)
        return 2
    missing = [f"{dep} ({path})" for dep, path in sources.items() if not path.is_dir()]
    if missing:
        print(f"fan-in: no output from {', '.join(missing)}", file=sys.stderr)
        return 1
    shutil.rmtree(args.dest, ignore_errors=True)
    try:
        count = build_union(sources, args.dest)
    except FanInClash as exc:
        print(f"fan-in: {exc}", file=sys.stderr)
        return 2
    print(f"fan-in: {count} file(s) from {', '.join(sources)} in {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
