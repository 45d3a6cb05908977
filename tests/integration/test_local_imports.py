"""A local run with neither --dataset nor --publish never loads the Pennsieve client or the AWS SDK.

Each case runs a workflow shaped like the examples (data source, command processors with a fan-in,
an s3 and a Pennsieve Dataset data target) in a fresh interpreter, and lists what it had imported
when it exited, through the library and through ``pennflow run``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("requests", "boto3", "botocore", "pennflow.pennsieve.client")

WORKFLOW = """\
name: light
processors:
  - {id: recordings, type: data-source}
  - id: left
    command: [sh, -c, 'cp -R "$INPUT_DIR"/. "$OUTPUT_DIR"/left']
    dependsOn: [recordings]
  - id: right
    command: [sh, -c, 'cp -R "$INPUT_DIR"/. "$OUTPUT_DIR"/right']
    dependsOn: [recordings]
  - id: summary
    command: [sh, -c, 'ls -R "$INPUT_DIR" > "$OUTPUT_DIR/summary.txt"']
    dependsOn: [left, right]
  - {id: bucket, type: data-target, targetType: s3, dependsOn: [summary]}
  - {id: results, type: data-target, targetType: Pennsieve Dataset, dependsOn: [summary]}
"""

# What the interpreter had imported when it exited (also after SystemExit from the CLI).
PROBE = """\
import atexit, json, sys
report, heavy = sys.argv[1], sys.argv[2].split(",")
atexit.register(lambda: open(report, "w").write(json.dumps([m for m in heavy if m in sys.modules])))
"""

LIBRARY = """\
from pennflow.engine.local import run_workflow
from pennflow.workflow.definition import load_definition
definition, input_dir, home = sys.argv[3:6]
record = run_workflow(
    load_definition(definition), definition_dir=".", input_dir=input_dir, home=home, docker=False
)
sys.exit(0 if record.status.value == "SUCCEEDED" else 1)
"""

CLI = """\
from pennflow.cli import app
definition, input_dir, home = sys.argv[3:6]
app(["run", definition, "--input", input_dir, "--no-containers"], prog_name="pennflow")
"""


@pytest.mark.parametrize("entry", [LIBRARY, CLI], ids=["run_workflow", "pennflow-run"])
def test_a_run_without_dataset_or_publish_imports_no_pennsieve_client_nor_aws_sdk(
    tmp_path: Path, entry: str
) -> None:
    definition = tmp_path / "light.yaml"
    definition.write_text(WORKFLOW)
    (tmp_path / "input" / "sub").mkdir(parents=True)
    (tmp_path / "input" / "sub" / "a.txt").write_text("a")
    report, home = tmp_path / "imported.json", tmp_path / "home"
    args = [str(report), ",".join(HEAVY), str(definition), str(tmp_path / "input"), str(home)]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PENNFLOW_HOME": str(home)}

    done = subprocess.run(
        [sys.executable, "-c", PROBE + entry, *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    runs = list((home / "runs").iterdir())
    assert len(runs) == 1
    summary = (runs[0] / "results" / "output" / "summary.txt").read_text()
    assert "left" in summary and "right" in summary  # the targets ran, and got the fan-in's output
    assert json.loads(report.read_text()) == []
