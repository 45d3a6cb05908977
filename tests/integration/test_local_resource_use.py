"""Each local attempt's CPU time and peak memory, from the rusage of its own process (real processes)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pennflow.engine.home import PennflowHome
from pennflow.engine.local import run_workflow
from pennflow.engine.resource_use import estimate_on_node, step_use
from pennflow.stores.sqlite import SqliteRunStore
from pennflow.workflow.cost import LIST_PRICES
from pennflow.workflow.definition import parse_definition
from pennflow.workflow.runs import Status

# The flaky processor marks its first try beside its OUTPUT_DIR, which the sandbox keeps read-only.
pytestmark = pytest.mark.usefixtures("no_sandbox")

# Busy for ~0.6 s of CPU while holding ~200 MiB, then a sibling that fails on its first attempt.
BURN = (
    "import time, os\n"
    "block = bytearray(200 * 1024 * 1024)\n"
    "for i in range(0, len(block), 4096): block[i] = 1\n"
    "end = time.process_time() + 0.6\n"
    "while time.process_time() < end: pass\n"
    "open(os.path.join(os.environ['OUTPUT_DIR'], 'done'), 'w').write('ok')\n"
)
FLAKY = (
    "import os, pathlib, sys\n"
    "mark = pathlib.Path(os.environ['OUTPUT_DIR']).parent / 'tried'\n"
    "if not mark.exists():\n"
    "    mark.write_text('1'); sys.exit(3)\n"
    "open(os.path.join(os.environ['OUTPUT_DIR'], 'x'), 'w').write('ok')\n"
)


def definition() -> str:
    python = sys.executable
    return f"""
name: use
processors:
  - id: burn
    command: [{python!r}, "-c", {BURN!r}]
    cpu: 2048
    memory: 4096
  - id: flaky
    command: [{python!r}, "-c", {FLAKY!r}]
    retry: {{maxAttempts: 1, intervalSeconds: 1, backoffRate: 1}}
"""


@pytest.fixture
def finished(tmp_path: Path):
    home = PennflowHome(tmp_path / "home")
    workflow = parse_definition(definition())
    # The engine holding 300 MiB: what a child inherits before exec must not count as its own peak.
    ballast = bytearray(300 * 1024 * 1024)
    for i in range(0, len(ballast), 4096):
        ballast[i] = 1
    record = run_workflow(workflow, definition_dir=tmp_path, input_dir=None, home=home, docker=False)
    del ballast
    with SqliteRunStore(home.db_path) as store:
        steps = {s.processor_id: s for s in store.list_steps(record.run_id)}
    return home, workflow, record, steps


def test_each_attempt_records_its_cpu_time_and_peak_memory(finished) -> None:
    _home, _workflow, record, steps = finished
    assert record.status is Status.SUCCEEDED, record.reason
    (burn,) = steps["burn"].resource_use
    assert burn["attempt"] == 1 and burn["exitCode"] == 0
    assert 0.5 <= burn["cpuSeconds"] <= 5.0
    assert burn["peakRssBytes"] >= 200 * 1024 * 1024  # the block it held, measured by the kernel
    assert burn["seconds"] >= 0.5
    first, second = steps["flaky"].resource_use
    assert (first["attempt"], first["exitCode"]) == (1, 3) and (second["attempt"], second["exitCode"]) == (
        2,
        0,
    )
    assert burn["peakRssBytes"] < 280 * 1024 * 1024  # its own, not the engine's 300 MiB
    assert first["peakRssBytes"] is None or first["peakRssBytes"] < 100 * 1024 * 1024
    cpu, peak = step_use(steps["flaky"])
    assert cpu == pytest.approx(first["cpuSeconds"] + second["cpuSeconds"])
    known = [u["peakRssBytes"] for u in (first, second) if u["peakRssBytes"] is not None]
    assert peak == (max(known) if known else None)


def test_the_estimate_prices_every_attempt_at_the_processor_s_settings(finished) -> None:
    home, workflow, record, steps = finished
    cost = estimate_on_node(workflow, list(steps.values()), home.run_dir(record.run_id))
    us = LIST_PRICES["us-east-1"]
    minute = 60 / 3600
    per = cost.by_processor()
    assert cost.estimate
    # each attempt under a minute is billed a minute: burn once at 2 vCPU/4 GB, flaky twice at 1 vCPU/2 GB
    assert per["burn"] == pytest.approx(minute * (2 * us.fargate_vcpu_hour_x86 + 4 * us.fargate_gb_hour_x86))
    assert per["flaky"] == pytest.approx(2 * minute * (us.fargate_vcpu_hour_x86 + 2 * us.fargate_gb_hour_x86))


def test_run_and_status_show_cpu_peak_memory_and_the_estimate(tmp_path: Path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from pennflow.cli import app

    monkeypatch.setenv("PENNFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("COLUMNS", "200")
    path = tmp_path / "use.yaml"
    path.write_text(definition())
    ran = CliRunner().invoke(app, ["run", str(path), "--no-containers"])
    assert ran.exit_code == 0, ran.output
    assert "peak mem" in ran.output and "estimated cost on a node: $" in ran.output
    with SqliteRunStore(PennflowHome(tmp_path / "home").db_path) as store:
        (record,) = store.list_runs().runs
    assert record.cost["estimate"] is True and record.cost["totalUsd"] > 0

    shown = CliRunner().invoke(app, ["status", record.run_id])
    assert shown.exit_code == 0, shown.output
    assert "cpu" in shown.output and "MiB" in shown.output  # burn's ~200 MiB peak
    assert "estimated cost on a node: $" in shown.output
