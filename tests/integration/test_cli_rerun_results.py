"""The local `rerun`, `results` and `logs --follow`, with real processes and a real run store."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pennflow.cli import app
from pennflow.engine.home import PennflowHome
from pennflow.stores.sqlite import SqliteRunStore
from pennflow.workflow.runs import Status

# Prints a numbered line every DELAY seconds, then writes its output file.
TALKER = (
    "import os, pathlib, sys, time\n"
    "for i in range(int(os.environ['LINES'])):\n"
    "    print(f\"line {i} of {os.environ['PROCESSOR_ID']}\", flush=True)\n"
    "    time.sleep(float(os.environ['DELAY']))\n"
    "pathlib.Path(os.environ['OUTPUT_DIR'], 'out.txt').write_text(os.environ['WORD'])\n"
)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> PennflowHome:
    monkeypatch.setenv("PENNFLOW_HOME", str(tmp_path / "home"))
    return PennflowHome(tmp_path / "home")


@pytest.fixture
def flow(tmp_path: Path) -> Path:
    (tmp_path / "input").mkdir()
    (tmp_path / "input" / "a.txt").write_text("a")
    script = tmp_path / "talker.py"
    script.write_text(TALKER)
    path = tmp_path / "flow.yaml"
    path.write_text(
        "name: flow\nprocessors:\n  - id: src\n    type: data-source\n"
        f"  - id: talk\n    command: [python, {script}]\n    dependsOn: [src]\n"
        '    defaultParams: {LINES: "3", DELAY: "0", WORD: "hello"}\n'
    )
    return path


def cli(*args: object):
    return CliRunner().invoke(app, [str(arg) for arg in args])


def only_run(home: PennflowHome):
    [run] = SqliteRunStore(home.db_path).list_runs().runs
    return run


def test_rerun_repeats_the_inputs_and_params_and_records_rerun_of(home, flow, tmp_path) -> None:
    first = cli("run", flow, "--input", tmp_path / "input", "--param", "WORD=again", "--no-containers")
    assert first.exit_code == 0, first.output
    original = only_run(home)

    again = cli("rerun", original.run_id, "--json")

    assert again.exit_code == 0, again.output
    rerun = json.loads(again.stdout)["run"]
    assert rerun["rerun_of"] == original.run_id and rerun["run_id"] != original.run_id
    assert rerun["params"] == original.params and rerun["params"]["talk"]["WORD"] == "again"
    stored = SqliteRunStore(home.db_path).get_run(rerun["run_id"])
    assert stored.rerun_of == original.run_id and stored.status is Status.SUCCEEDED
    assert (home.run_dir(rerun["run_id"]) / "talk" / "output" / "out.txt").read_text() == "again"
    assert SqliteRunStore(home.db_path).get_run(original.run_id).rerun_of is None
    shown = cli("status", rerun["run_id"])
    assert shown.exit_code == 0 and f"a rerun of {original.run_id}" in shown.stdout


def test_rerun_refuses_a_run_without_its_record_or_an_unknown_run(home, flow, tmp_path) -> None:
    assert cli("run", flow, "--input", tmp_path / "input", "--no-containers").exit_code == 0
    original = only_run(home)
    (home.run_dir(original.run_id) / "run-spec.json").unlink()

    missing = cli("rerun", original.run_id)
    unknown = cli("rerun", "no-such-run")

    assert missing.exit_code == 2 and "kept no readable record of what it was given" in missing.output
    assert unknown.exit_code == 2 and "no run 'no-such-run' in PENNFLOW_HOME" in unknown.output
    assert "Traceback" not in missing.output + unknown.output


def test_results_lists_or_copies_the_output_folders(home, flow, tmp_path) -> None:
    assert cli("run", flow, "--input", tmp_path / "input", "--no-containers").exit_code == 0
    run = only_run(home)

    listed = cli("results", run.run_id, "--json")
    copied = cli("results", run.run_id, "--to", tmp_path / "copy")

    assert listed.exit_code == 0, listed.output
    outputs = json.loads(listed.stdout)["outputs"]
    assert set(outputs) == {"src", "talk"}
    assert outputs["talk"] == str(home.run_dir(run.run_id) / "talk" / "output")
    assert copied.exit_code == 0, copied.output
    assert (tmp_path / "copy" / "talk" / "out.txt").read_text() == "hello"
    assert (tmp_path / "copy" / "src" / "a.txt").read_text() == "a"


def test_logs_follow_tails_a_running_run_until_it_ends(home, flow, tmp_path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "pennflow.cli", "run", str(flow), "--input", str(tmp_path / "input"),
         "--param", "LINES=6", "--param", "DELAY=0.3", "--no-containers"],
        env={**os.environ, "PENNFLOW_HOME": str(home.root)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while not (home.db_path.exists() and SqliteRunStore(home.db_path).list_runs().runs):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the run never started"
            time.sleep(0.05)
        run = only_run(home)
        follow = subprocess.run(
            [
                sys.executable,
                "-m",
                "pennflow.cli",
                "logs",
                run.run_id,
                "talk",
                "--follow",
                "--interval",
                "0.2",
            ],
            env={**os.environ, "PENNFLOW_HOME": str(home.root)},
            capture_output=True,
            text=True,
            timeout=30,
        )
    finally:
        process.wait(timeout=30)
    assert follow.returncode == 0, follow.stderr
    assert [line for line in follow.stdout.splitlines() if line.startswith("line")] == [
        f"line {i} of talk" for i in range(6)
    ]
    assert only_run(home).status is Status.SUCCEEDED


def test_a_store_made_before_rerun_of_gains_the_column(tmp_path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE runs (run_id TEXT PRIMARY KEY, workflow TEXT NOT NULL, definition_hash TEXT NOT NULL, "
        "status TEXT NOT NULL, dataset_id TEXT, package_ids TEXT NOT NULL DEFAULT '[]', params TEXT NOT NULL, "
        "layers TEXT NOT NULL, created_at TEXT NOT NULL, created_us INTEGER NOT NULL, started_at TEXT, "
        "finished_at TEXT, failed_processor TEXT, exit_code INTEGER, reason TEXT, execution_arn TEXT, "
        "content_key TEXT, origin TEXT NOT NULL);"
        "INSERT INTO runs VALUES ('r-old', 'flow', 'abc', 'SUCCEEDED', NULL, '[]', '{}', '[]', "
        "'2026-01-01T00:00:00Z', 1767225600000000, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 'local');"
    )
    conn.close()

    with SqliteRunStore(path) as store:
        old = store.get_run("r-old")

    assert old is not None and old.rerun_of is None and old.status is Status.SUCCEEDED


def test_the_local_forms_load_no_aws_sdk_http_client_or_node_client(home, flow, tmp_path) -> None:
    from tests.integration.test_cli_imports import loaded_modules

    assert cli("run", flow, "--input", tmp_path / "input", "--no-containers").exit_code == 0
    run_id = only_run(home).run_id
    watched = ("boto3", "botocore", "requests", "pennflow.node.client", "pennflow.cli.remote_runs")
    env = {"PENNFLOW_HOME": str(home.root)}
    for args in (("logs", run_id), ("results", run_id), ("runs",), ("status", run_id), ("rerun", "--help")):
        assert loaded_modules(*args, watched=watched, env=env) == [], args
