"""The statuses of runs and processors, the ones Pennsieve users know (the rules of moving between them
are in :mod:`pennflow.workflow.runs`).

A module of its own, free of pydantic, so that the CLI can offer them as choices (``pennflow runs
--status``) without importing the run models.
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    NOT_STARTED = "NOT_STARTED"
    STARTED = "STARTED"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELING = "CANCELING"
    CANCELED = "CANCELED"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELED})
