"""The asl-validator gate: every compiled definition goes through the npm validator."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("asl_validate.js")


def validate_asl(definitions: list[dict]) -> list[list[str]]:
    """One node process for the whole batch; returns each definition's errors (empty when valid)."""
    if not (ROOT / "node_modules" / "asl-validator").is_dir():
        raise RuntimeError("asl-validator is not installed: run `npm ci` (make setup does)")
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node is required for the asl-validator gate")
    proc = subprocess.run(
        [node, str(SCRIPT)],
        input=json.dumps(definitions),
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    return [result["errors"] if not result["isValid"] else [] for result in json.loads(proc.stdout)]


def assert_valid_asl(*definitions: dict) -> None:
    for index, errors in enumerate(validate_asl(list(definitions))):
        assert not errors, f"definition #{index} rejected by asl-validator: {errors}"
