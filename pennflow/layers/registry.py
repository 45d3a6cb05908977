"""The layer registry port. Both adapters (SQLite locally, DynamoDB on AWS) apply every write as
one conditional operation, so two builds, a build and a delete, or a mount and a re-populate can
never interleave into an inconsistent record.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from pennflow.layers.models import LayerRecord, LayerStatus


class LayerRegistry(Protocol):
    def create(self, record: LayerRecord) -> None:
        """Insert a new layer; raises LayerExists when the name is taken."""

    def get(self, name: str) -> LayerRecord | None: ...

    def list(self) -> list[LayerRecord]:
        """Every layer, by name."""

    def transition(
        self,
        name: str,
        status: LayerStatus,
        *,
        expect_version: int | None = None,
        stale_before: datetime | None = None,
        **fields: Any,
    ) -> bool:
        """Set ``status`` (and fields) when the stored status is one of its allowed predecessors and,
        if given, the stored version is ``expect_version``. With ``stale_before``, a BUILDING layer
        whose build started before that moment may also be moved to BUILDING again (a build that died).
        False when refused or when the layer does not exist."""

    def update(self, name: str, **fields: Any) -> bool:
        """Set fields other than the status; False when the layer does not exist."""

    def add_ref(self, name: str, run_id: str, version: int, at: datetime) -> bool:
        """Record that ``run_id`` mounts ``version`` and that the layer was accessed at ``at``.

        Applies only while ``version`` is the current one and the layer is mountable, so a version
        a re-populate just replaced can never gain a reader after it was judged unreferenced."""

    def remove_ref(self, name: str, run_id: str) -> None:
        """Forget a run's reference (no error when it is not there)."""

    def delete(self, name: str) -> bool:
        """Remove the record when no run references it and no build runs; False otherwise."""
