"""The real entry point (`app.py`, as `cdk synth` runs it): synth time, and bad settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SYNTH_BUDGET_SECONDS = 45  # measured at about 6 s on 2 cores; generous for loaded CI machines


def run_app(tmp_path: Path, context: dict | None = None) -> tuple[subprocess.CompletedProcess, float]:
    env = {**os.environ, "CDK_OUTDIR": str(tmp_path), "JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION": "1"}
    if context is not None:
        env["CDK_CONTEXT_JSON"] = json.dumps(context)
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "app.py"], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    return result, time.perf_counter() - started


@pytest.mark.slow
def test_app_synthesizes_with_cdk_nag_within_budget(tmp_path):
    result, elapsed = run_app(tmp_path)  # the cdk-nag plugin fails the synth on any finding
    print(f"app.py synth with cdk-nag: {elapsed:.1f} s")
    assert result.returncode == 0, result.stderr[-3000:]
    template = json.loads((tmp_path / "PennflowNode.template.json").read_text())
    assert template["Resources"]
    assert elapsed < SYNTH_BUDGET_SECONDS


def test_bad_setting_stops_the_synth_with_the_field_named(tmp_path):
    result, _ = run_app(tmp_path, {"pennflow": {"runSlots": 99, "vpc": "old"}})
    assert result.returncode == 2
    assert "pennflow.runSlots: Input should be less than or equal to 50 (got 99)" in result.stderr
    assert 'pennflow.vpc: expected "new"' in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "PennflowNode.template.json").exists()
