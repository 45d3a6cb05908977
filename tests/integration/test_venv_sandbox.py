"""A sourceUrl processor run from its virtual environment (no container runtime) is sandboxed like any
command processor: real runs, real processes, bwrap. Run A leaves a file; run B's processor tries to
read it, to write into its own venv and staged files, and to write outside its run."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from pennflow.engine.home import PennflowHome
from pennflow.engine.sandbox import detect
from pennflow.workflow.runs import Status
from tests.integration.test_local_source_processors import definition, plain_repo, run

pytestmark = [
    pytest.mark.skipif(shutil.which("git") is None, reason="git is needed to make repositories"),
    # Skipped only off CI (which installs bubblewrap and sets this): there a missing sandbox fails.
    pytest.mark.skipif(
        not detect({}).available and not os.environ.get("PENNFLOW_TEST_REQUIRE_SANDBOX"),
        reason=f"no bwrap sandbox on this machine: {detect({}).why_not}",
    ),
]

PROBE = r"""
import errno, json, os, sys
from pathlib import Path

def attempt(action):
    try:
        action()
        return "done"
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))

out = Path(os.environ["OUTPUT_DIR"])
out.mkdir(parents=True, exist_ok=True)
(out / "private.txt").write_text("this run's data")
report = {
    "other_run": attempt(lambda: Path(os.environ["OTHER_RUN_FILE"]).read_bytes()) if os.environ.get("OTHER_RUN_FILE") else "",
    "venv_write": attempt(lambda: Path(sys.prefix, "planted.txt").write_text("x")),
    "staged_write": attempt(lambda: Path(__file__).with_name("planted.txt").write_text("x")),
    "run_db": attempt(lambda: Path(os.environ["RUN_DATABASE"]).read_bytes()) if os.environ.get("RUN_DATABASE") else "",
    "outside_run": attempt(lambda: (out / "../../../ESCAPED").write_text("x")),
    "helper": __import__("helper").VALUE,
    "prefix": sys.prefix,
}
(out / "report.json").write_text(json.dumps(report))
"""


def report(home: PennflowHome, run_id: str) -> dict:
    return json.loads((home.run_dir(run_id) / "thumbs" / "output" / "report.json").read_text())


def test_a_venv_processor_cannot_read_another_run_nor_change_its_venv(tmp_path):
    home = PennflowHome(tmp_path / "home")
    repo = plain_repo(tmp_path / "repo", **{"src/main.py": PROBE})
    text = definition(str(repo), extra="    defaultParams: {OTHER_RUN_FILE: '', RUN_DATABASE: ''}\n")

    first = run(text, home, tmp_path)
    assert first.status is Status.SUCCEEDED, first.reason
    other = home.run_dir(first.run_id) / "thumbs" / "output" / "private.txt"
    assert other.read_text() == "this run's data"  # it is there, outside the sandbox

    second = run(
        text, home, tmp_path, params={"OTHER_RUN_FILE": str(other), "RUN_DATABASE": str(home.db_path)}
    )
    assert second.status is Status.SUCCEEDED, second.reason
    seen = report(home, second.run_id)
    assert seen["other_run"] == "ENOENT"  # pennflow's home is covered: run A is not in sight
    assert seen["run_db"] == "ENOENT"
    assert seen["venv_write"] == "EROFS"  # its venv is shown read-only
    assert seen["staged_write"] == "EROFS"  # and so are the image's staged files
    assert seen["outside_run"] in ("EROFS", "ENOENT")
    assert seen["helper"] == "from the checkout"  # and still usable: PYTHONPATH into the staged files
    assert seen["prefix"].startswith(str(home.root / "processors" / "venvs"))
    assert not Path(seen["prefix"], "planted.txt").exists()
    assert not (home.root / "ESCAPED").exists()
