"""The run store port. Both adapters enforce the status model of :mod:`pennflow.workflow.runs`.

Status writes are conditional: ``update_run``/``update_step`` with a ``status`` apply only when the
stored status is one of ``allowed_predecessors(status)`` and return False otherwise, so duplicated
or out-of-order events never move a status backwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pennflow.workflow.runs import RunRecord, Status, StepRecord


class StoreConflict(Exception):
    """A run with this id exists already."""


@dataclass(frozen=True)
class Page:
    runs: list[RunRecord]
    cursor: str | None  # opaque; pass back to get the next page


class RunStore(Protocol):
    def create_run(self, run: RunRecord, steps: Sequence[StepRecord]) -> None:
        """Insert a run and its steps; raises StoreConflict when the run id exists."""

    def get_run(self, run_id: str) -> RunRecord | None: ...

    def list_runs(
        self,
        *,
        workflow: str | None = None,
        status: Status | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page:
        """Newest first."""

    def find_succeeded_by_content_key(self, key: str) -> RunRecord | None:
        """The newest SUCCEEDED run whose content key is ``key`` (``pennflow.data.content_key``), or None."""

    def update_run(self, run_id: str, status: Status | None = None, **fields: Any) -> bool:
        """Set fields (and status, conditionally). False when the transition is not allowed."""

    def list_steps(self, run_id: str) -> list[StepRecord]:
        """In the order the steps were created (definition order)."""

    def update_step(
        self, run_id: str, processor_id: str, status: Status | None = None, **fields: Any
    ) -> bool:
        """Same rule as update_run."""
