"""A sandboxed attempt's CPU time and peak memory come from /proc samples of its process group: the
rusage of bwrap's pid namespace never reaches the engine."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from pennflow.engine.home import PennflowHome
from pennflow.engine.local import run_workflow
from pennflow.engine.resource_use import step_use
from pennflow.engine.sandbox import detect
from pennflow.stores.sqlite import SqliteRunStore
from pennflow.workflow.definition import parse_definition
from pennflow.workflow.runs import Status

pytestmark = pytest.mark.skipif(
    not detect({}).available and not os.environ.get("PENNFLOW_TEST_REQUIRE_SANDBOX"),
    reason="bubblewrap cannot make a sandbox on this machine (CI requires it)",
)

# 200 MiB held, and about a second of CPU, then a pause so the last samples see both.
BURN = "import time\nb = bytearray(200 * 1024 * 1024)\nend = time.process_time() + 1.0\nwhile time.process_time() < end: pass\ntime.sleep(0.5)"


def test_a_sandboxed_attempt_records_its_own_cpu_and_peak_memory(tmp_path: Path) -> None:
    home = PennflowHome(tmp_path / "home")
    workflow = parse_definition(
        f"name: burn\nprocessors:\n  - id: burn\n    command: [{json.dumps(sys.executable)}, -c, {json.dumps(BURN)}]\n"
    )
    record = run_workflow(workflow, definition_dir=tmp_path, home=home, docker=False)
    assert record.status is Status.SUCCEEDED, record.reason
    (step,) = SqliteRunStore(home.db_path).list_steps(record.run_id)
    cpu, peak = step_use(step)
    assert peak is not None and peak >= 200 * 1024 * 1024  # the processor's, not bwrap's few MiB
    assert cpu is not None and 0.6 <= cpu <= 5  # sampled: the last fraction of a second may be missed
