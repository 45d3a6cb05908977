"""The run report as a person sees it: rendered by a real headless browser (Debian's chromium), whose
DOM after the page's script ran is checked for statuses, timeline bars and no script errors."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pennflow.cli import app

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# .ci/run installs chromium and sets this: there, a missing browser fails instead of skipping.
REQUIRED = os.environ.get("PENNFLOW_REQUIRE_BROWSER") == "1"
pytestmark = pytest.mark.skipif(
    CHROMIUM is None and not REQUIRED,
    reason="no chromium here (.ci/run installs it: apt-get install chromium)",
)

FAIL_TWICE = (
    "import sys; print('loading recording 7'); print('ValueError: flat signal', file=sys.stderr); sys.exit(4)"
)
WRITE = "import os; open(os.path.join(os.environ['OUTPUT_DIR'], 'x'), 'w').write('ok')"


def definition() -> str:
    python = sys.executable
    return f"""
name: broken
processors:
  - id: prepare
    command: [{python!r}, "-c", {WRITE!r}]
  - id: analyse
    command: [{python!r}, "-c", {FAIL_TWICE!r}]
    dependsOn: [prepare]
    retry: {{maxAttempts: 1, intervalSeconds: 1, backoffRate: 1}}
  - id: summarise
    command: [{python!r}, "-c", {WRITE!r}]
    dependsOn: [analyse]
"""


def render_in_browser(page: Path, profile: Path) -> str:
    assert CHROMIUM is not None, "chromium is required here (PENNFLOW_REQUIRE_BROWSER=1)"
    result = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=5000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return result.stdout


def test_the_report_shows_statuses_bars_failures_and_no_script_errors(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PENNFLOW_HOME", str(tmp_path / "home"))
    path = tmp_path / "broken.yaml"
    path.write_text(definition())
    ran = CliRunner().invoke(app, ["run", str(path), "--no-containers"])
    assert ran.exit_code == 1, ran.output
    page = tmp_path / "report.html"
    written = CliRunner().invoke(app, ["report", "last", "-o", str(page)])
    assert written.exit_code == 0, written.output

    dom = render_in_browser(page, tmp_path / "chromium-profile")

    assert re.search(r'<body[^>]*data-ready="1"', dom), "the page's script did not finish"
    assert re.search(r'<pre id="script-errors">\s*</pre>', dom), "the page's script reported errors"
    # written by the script from the table: it ran, and counted what a person sees
    counts = re.search(r"id=\"status-counts\"[^>]*>([^<]*)<", dom).group(1)
    assert counts == "1 CANCELED, 1 FAILED, 1 SUCCEEDED", counts
    assert '<span class="badge s-FAILED" id="run-status">FAILED</span>' in dom
    nodes = dict(re.findall(r'class="node" data-processor="(\w+)" data-status="(\w+)"', dom))
    assert nodes == {"prepare": "SUCCEEDED", "analyse": "FAILED", "summarise": "CANCELED"}
    bars = re.findall(r'class="bar (ok|failed)" data-processor="(\w+)" data-attempt="(\d)"', dom)
    assert sorted(bars) == [("failed", "analyse", "1"), ("failed", "analyse", "2"), ("ok", "prepare", "1")]
    failure = re.search(r'<div class="failure" data-processor="analyse">(.*?)</div>', dom, re.S).group(1)
    assert "exit code 4" in failure and "ValueError: flat signal" in failure  # the reason and the log tail
    assert "Estimated cost on a node" in dom and "definition hash" in dom
