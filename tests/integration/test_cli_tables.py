"""The tables of ``pennflow status``, ``runs`` and the end of ``run`` fit 80 columns and never cut a path."""

from __future__ import annotations

import io
from datetime import timedelta
from pathlib import Path

import pytest
from rich.console import Console
from rich.text import Text
from typer.testing import CliRunner

from pennflow.cli import app, local
from pennflow.engine.progress import LiveProgress
from pennflow.stores.sqlite import SqliteRunStore
from pennflow.workflow.definition import validate_definition
from pennflow.workflow.runs import RunRecord, Status, StepRecord, utcnow

LONG_ID = "convert-every-recording-to-the-common-format-first"
RUN = "r-mx7o61rd-8864197d"


def deep_path(root: Path) -> str:
    return str(
        root / "a-rather-long-folder" / "for-the-results" / "of-this-run" / "that-goes-on-and-on" / "out"
    )


def store_a_run(home: Path, reasons: dict[str, str]) -> None:
    start = utcnow() - timedelta(seconds=30)
    run = RunRecord(
        run_id=RUN,
        workflow="a-workflow-with-a-long-name",
        definition_hash="x",
        status=Status.FAILED,
        created_at=start,
        started_at=start,
        finished_at=start + timedelta(seconds=20),
        failed_processor="broken",
        reason="processor 'broken' failed",
    )
    steps = [
        StepRecord(
            run_id=RUN,
            processor_id=pid,
            status=Status.FAILED if pid == "broken" else Status.SUCCEEDED,
            attempts=2 if pid == "broken" else 1,
            exit_code=3 if pid == "broken" else 0,
            started_at=start,
            finished_at=start + timedelta(seconds=12),
            reason=reason,
        )
        for pid, reason in reasons.items()
    ]
    with SqliteRunStore(home / "pennflow.db") as store:
        store.create_run(run, steps)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PENNFLOW_HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    return tmp_path / "home"


def status_at(width: int, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(local.out, "width", width)
    result = CliRunner().invoke(app, ["status", RUN])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_status_fits_80_columns_with_a_long_id_and_a_path_printed_whole_under_the_table(
    home, monkeypatch
) -> None:
    path = deep_path(home)
    store_a_run(
        home,
        {
            "src": "",
            LONG_ID: f"results in {path}",
            "broken": "exit code 3: the input had no header row at all, so nothing could be read",
        },
    )
    text = status_at(80, monkeypatch)
    lines = text.splitlines()
    table = [line for line in lines[1:] if not line.startswith((f"{LONG_ID}:", "broken:"))]
    assert all(len(line) <= 80 for line in table), "\n".join(line for line in table if len(line) > 80)
    assert any(line.startswith(" broken") and "FAILED" in line and " 2 " in line for line in table)
    assert f"{LONG_ID}: results in {path}" in lines  # whole, on its own line
    assert "broken: exit code 3: the input had no header row at all, so nothing could be read" in lines
    for column in ("status", "tries", "exit", "started", "time"):
        assert column in text  # no header cut to an ellipsis
    assert "…" not in text


def test_reasons_stay_in_the_table_when_there_is_room_for_them(home, monkeypatch) -> None:
    store_a_run(home, {"src": "", "broken": "exit code 3: boom"})
    text = status_at(120, monkeypatch)
    assert any("broken" in line and "exit code 3: boom" in line for line in text.splitlines())
    assert "broken: exit code 3" not in text


def test_runs_fits_80_columns(home, monkeypatch) -> None:
    store_a_run(home, {"src": "", "broken": "boom"})
    monkeypatch.setattr(local.out, "width", 80)
    result = CliRunner().invoke(app, ["runs"])
    assert result.exit_code == 0
    assert all(len(line) <= 80 for line in result.stdout.splitlines())
    assert RUN in result.stdout and "…" not in result.stdout


def test_the_live_table_cuts_nothing_but_a_reason_at_the_edge() -> None:
    workflow = validate_definition(
        {
            "name": "live",
            "processors": [
                {"id": "src", "type": "data-source"},
                {"id": LONG_ID, "command": ["true"], "dependsOn": ["src"], "retry": {"maxAttempts": 2}},
            ],
        }
    )
    console = Console(file=io.StringIO(), force_terminal=True, width=80, height=40)
    live = LiveProgress(console, workflow)
    path = "/" + "/".join(["a-long-folder"] * 10)
    live.step_updated(
        StepRecord(
            run_id=RUN,
            processor_id=LONG_ID,
            status=Status.STARTED,
            attempts=2,
            started_at=utcnow(),
            reason=f"retrying: attempt 1 failed: cannot read {path}",
        )
    )
    console.print(live._render())
    lines = console.file.getvalue().splitlines()  # type: ignore[attr-defined]
    assert all(len(plain(line)) <= 80 for line in lines)
    assert any("2/3" in line for line in lines)  # attempt 2 of 3, never cut
    assert any(line.startswith(f"{LONG_ID}: retrying: attempt 1 failed") for line in map(plain, lines))


def plain(line: str) -> str:
    """A rendered line without its ANSI styles."""
    return Text.from_ansi(line).plain


def test_layers_list_fits_80_columns_and_cuts_no_column_but_the_name(tmp_path, monkeypatch) -> None:
    from pennflow.cli import layers

    monkeypatch.setenv("PENNFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(layers.out, "width", 80)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "atlas.nii").write_text("x" * 2000)
    name = "reference-atlas-for-the-eeg-montages"
    populated = CliRunner().invoke(app, ["layers", "populate", name, "--from", str(tmp_path / "data")])
    assert populated.exit_code == 0, populated.output
    text = CliRunner().invoke(app, ["layers", "list"]).stdout
    assert all(len(line) <= 80 for line in text.splitlines())
    row = next(line for line in text.splitlines() if "READY" in line)
    assert row.split()[1:7] == ["data", "READY", "1", "2.0", "kB", "Standard"]
    assert "…" not in text
    assert name in "".join(line.split()[0] for line in text.splitlines()[4:] if line.strip())  # folded, whole
