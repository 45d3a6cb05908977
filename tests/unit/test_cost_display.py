"""The cost as people read it: the remote status, and the lines shared by every display."""

from __future__ import annotations

from pennflow.cli.remote import format_run
from pennflow.workflow.cost import RunUsage, TaskUsage, price_table, run_cost, summary_lines


def _cost(**kwargs) -> dict:
    usage = RunUsage(tasks=[TaskUsage("work", 1024, 2048, 3600)], state_transitions=40)
    return run_cost(usage, price_table("us-east-1"), **kwargs).model_dump(mode="json", by_alias=True)


def test_status_remote_shows_the_total_and_the_kinds_of_charge():
    run = {"runId": "r-1", "workflow": "w", "status": "SUCCEEDED", "steps": [], "cost": _cost()}
    text = format_run(run)
    assert "cost: $0.0504 (us-east-1 list prices of 2026-03-01)" in text
    assert "Fargate vCPU $0.0405, Fargate memory $0.00889, Step Functions $0.00100" in text


def test_no_cost_no_line_and_an_estimate_says_so():
    assert "cost" not in format_run({"runId": "r-1", "workflow": "w", "status": "STARTED", "steps": []})
    lines = summary_lines(_cost(estimate=True, notes=["a note"]))
    assert lines[0].startswith("estimated cost on a node: ") and lines[-1] == "  a note"
