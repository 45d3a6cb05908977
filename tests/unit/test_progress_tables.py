"""Large runs in the terminal: the tables list what matters first and count the rest."""

from __future__ import annotations

import io

from rich.console import Console

from pennflow.engine.progress import MAX_LIVE_ROWS, LiveProgress, steps_table
from pennflow.workflow.definition import validate_definition
from pennflow.workflow.runs import RunRecord, Status, StepRecord


def steps(n: int) -> list[StepRecord]:
    made = [StepRecord(run_id="r-1", processor_id=f"p{i:04d}", status=Status.SUCCEEDED) for i in range(n)]
    made[70] = made[70].model_copy(update={"status": Status.FAILED, "reason": "exit code 3: boom"})
    made[90] = made[90].model_copy(update={"status": Status.STARTED, "attempts": 1})
    return made


def rendered(renderable, height: int = 200) -> str:
    console = Console(file=io.StringIO(), width=120, height=height)
    console.print(renderable)
    return console.file.getvalue()  # type: ignore[attr-defined]


def test_a_bounded_table_lists_the_running_and_failed_first_and_counts_the_rest() -> None:
    table = steps_table(steps(100), rows=5)
    assert table.row_count == 4
    text = rendered(table)
    assert "p0070" in text and "p0090" in text and "boom" in text
    assert "96 more; all: 1 STARTED, 98 SUCCEEDED, 1 FAILED" in text
    assert steps_table(steps(100)).row_count == 100  # unbounded unless asked


def test_the_live_table_of_a_large_run_draws_a_screenful_at_most() -> None:
    workflow = validate_definition(
        {
            "name": "wide",
            "processors": [{"id": "src", "type": "data-source"}]
            + [{"id": f"p{i:04d}", "command": ["true"], "dependsOn": ["src"]} for i in range(5000)],
        }
    )
    console = Console(file=io.StringIO(), force_terminal=True, width=120, height=60)
    live = LiveProgress(console, workflow)
    for step in steps(5000):
        live.step_updated(step)
    view = live._render()
    table, *reasons = view.renderables
    assert table.row_count + len(reasons) <= MAX_LIVE_ROWS
    assert "p0090" in rendered(view)  # the running one is on screen
    live.run_finished(RunRecord(run_id="r-1", workflow="wide", definition_hash="x"), [])


def test_the_widths_given_to_the_never_cut_columns_are_the_ones_rich_would_measure() -> None:
    """The table sizes those columns itself (measuring every cell is most of rich's cost): at every
    console width, with or without reasons and resource use, it renders as the measured table does."""
    from datetime import UTC, datetime, timedelta

    start = datetime(2026, 12, 3, 20, 0, tzinfo=UTC)
    records = [
        StepRecord(
            run_id="r-1",
            processor_id="long-" * (i % 4) + f"p{i}",
            status=list(Status)[i % len(Status)],
            attempts=i % 3,
            exit_code=None if i % 4 else 137,
            started_at=start,
            finished_at=start + timedelta(seconds=i * 97),
            reason=None if i % 3 == 0 else f"exit code {i}: /a/long/path/to/what/failed-{i}.py",
            resource_use=[{"attempt": 1, "seconds": 1.0, "cpuSeconds": i * 0.37, "peakRssBytes": 7**i}],
        )
        for i in range(12)
    ]
    for options in ({}, {"resource_use": True}, {"rows": 5, "resource_use": True, "reasons": False}):
        table = steps_table(records, title="t", **options)
        measured = steps_table(records, title="t", **options)
        sized = [column for column in measured.columns if column.width is not None]
        assert [column.header for column in sized][:2] == ["status", "tries"]
        for column in sized:
            column.width = None
        for width in (30, 50, 80, 140):
            assert rendered_at(table, width) == rendered_at(measured, width)


def rendered_at(renderable, width: int) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None)
    console.print(renderable)
    return console.file.getvalue()  # type: ignore[attr-defined]
