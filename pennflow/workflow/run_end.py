"""The message a run's end sends (succeeded, failed, canceled): the same fields on a node (SNS, e-mail,
webhook) and locally (``pennflow run --notify CMD`` gets them as JSON on stdin)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from pennflow.workflow.cost import format_usd
from pennflow.workflow.runs import RunRecord

SUBJECT_LIMIT = 100  # SNS subjects are at most 100 characters


class RunEnded(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    run_id: str
    workflow: str
    status: str
    failed_processor: str | None = None
    reason: str | None = None
    duration_seconds: float | None = None
    cost_usd: float | None = None
    cost_is_estimate: bool = False
    console_url: str | None = None
    report: str = Field(description="How to write the run's report (pennflow report).")
    origin: str = "local"

    @classmethod
    def of(cls, run: RunRecord, *, console_url: str | None = None, remote: bool = False) -> RunEnded:
        duration = None
        if run.started_at and run.finished_at:
            duration = (run.finished_at - run.started_at).total_seconds()
        cost = run.cost or {}
        return cls(
            run_id=run.run_id,
            workflow=run.workflow,
            status=run.status.value,
            failed_processor=run.failed_processor,
            reason=run.reason,
            duration_seconds=duration,
            cost_usd=cost.get("totalUsd"),
            cost_is_estimate=bool(cost.get("estimate")),
            console_url=console_url,
            report=f"pennflow report {run.run_id}" + (" --remote" if remote else ""),
            origin=run.origin,
        )

    def subject(self) -> str:
        return f"pennflow: {self.workflow} {self.status} ({self.run_id})"[:SUBJECT_LIMIT]

    def text(self) -> str:
        """A few lines a person reads in an e-mail or a chat message."""
        lines = [f"Run {self.run_id} of {self.workflow}: {self.status}"]
        if self.failed_processor or self.reason:
            lines.append(f"Failed: {self.failed_processor or '-'}: {self.reason or 'no reason recorded'}")
        if self.duration_seconds is not None:
            lines.append(f"Duration: {self.duration_seconds:.0f} s")
        if self.cost_usd is not None:
            lines.append(
                f"Cost: {format_usd(self.cost_usd)}" + (" (estimate)" if self.cost_is_estimate else "")
            )
        if self.console_url:
            lines.append(f"Console: {self.console_url}")
        lines.append(f"Report: {self.report}")
        return "\n".join(lines)

    def slack(self) -> dict[str, Any]:
        """Slack's incoming-webhook JSON (``text`` is what other chat tools that accept it show)."""
        return {
            "text": self.text(),
            "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": self.text()}}],
        }
