"""A sourceUrl@tag processor run locally without a container runtime, next to the same code as a command.

Three runs of a one-processor workflow, measured side by side in one process:

* `command`: the processor's main.py as the definition's `command` (the floor: no git, no venv);
* `cold`: `sourceUrl: <local git repository>` with an empty cache: clone, app.yml, the staged files,
  a virtual environment (empty requirements, so pip's network time is not measured);
* `warm`: the same again: `git ls-remote` finds the cached commit, the venv is reused.

Prints the median of --repeat runs of each and the ratios warm/command and cold/warm.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pennflow.engine.home import PennflowHome  # noqa: E402
from pennflow.engine.local import run_workflow  # noqa: E402
from pennflow.workflow.definition import parse_definition  # noqa: E402
from pennflow.workflow.runs import Status  # noqa: E402

MAIN = "import os\nopen(os.path.join(os.environ['OUTPUT_DIR'], 'done'), 'w').write('ok')\n"
DOCKERFILE = """FROM python:3.12-slim
WORKDIR /app
COPY requirements.txt /app/requirements.txt
RUN pip install --no-cache-dir -r /app/requirements.txt
COPY main.py /app/main.py
CMD ["python", "/app/main.py"]
"""


def make_repo(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "Dockerfile").write_text(DOCKERFILE)
    (root / "main.py").write_text(MAIN)
    (root / "requirements.txt").write_text("# none\n")
    (root / "app.yml").write_text("schemaVersion: '1.0'\nname: bench\n")
    git = ["git", "-c", "user.name=b", "-c", "user.email=b@example.org"]
    for args in (["init", "-q"], ["add", "."], ["commit", "-qm", "bench"], ["tag", "v1"]):
        subprocess.run([*git, *args], cwd=root, check=True, capture_output=True)
    return root


def timed(text: str, home: Path, definition_dir: Path) -> float:
    start = time.perf_counter()
    record = run_workflow(
        parse_definition(text), definition_dir=definition_dir, home=PennflowHome(home), docker=False
    )
    elapsed = time.perf_counter() - start
    assert record.status is Status.SUCCEEDED, record.error
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        repo = make_repo(root / "repo")
        command = f"name: b\nprocessors:\n  - id: p\n    command: [{sys.executable!r}, main.py]\n"
        source = f"name: b\nprocessors:\n  - id: p\n    sourceUrl: file://{repo}\n    tag: v1\n"
        figures: dict[str, list[float]] = {"command": [], "cold": [], "warm": []}
        for index in range(args.repeat):
            figures["command"].append(timed(command, root / f"h-cmd-{index}", repo))
            figures["cold"].append(timed(source, root / f"h-{index}", root))
            figures["warm"].append(timed(source, root / f"h-{index}", root))
    median = {name: statistics.median(values) for name, values in figures.items()}
    print(f"cores: {os.cpu_count()}  load: {os.getloadavg()[0]:.2f}  repeat: {args.repeat}")
    for name, value in median.items():
        print(f"{name:>8}: {value * 1000:8.1f} ms (median)")
    print(
        f"warm/command: {median['warm'] / median['command']:.2f}x   cold/warm: {median['cold'] / median['warm']:.2f}x"
    )


if __name__ == "__main__":
    main()
