"""Dataset events -> debounce windows: the one path shared by the webhook and EventBridge.

1. Only ``files.uploaded`` events start runs; others are acknowledged and ignored.
2. The event id is claimed once (a conditional put with a TTL, a week by default): a repeated
   delivery, whether the sender's retry or a replay, is a duplicate and changes nothing. A repeated
   request necessarily repeats the event id (it is inside the signed body), so claiming the id also
   refuses a repeated signature; it additionally catches a sender re-signing a retry.
3. Each enabled rule of the dataset whose glob matches at least one file gets the matching files
   added to its window.
If step 3 fails (an AWS error), the claim is released so the sender's (or EventBridge's) retry
is handled instead of being taken for a duplicate. Adding to a window is idempotent for the
files (sets), so a retry after a partial failure only counts the event twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from enum import StrEnum

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from pennflow.triggers.debounce import Debouncer
from pennflow.triggers.models import TRIGGERING_EVENT_TYPES, DatasetEvent, WindowAddition, utc
from pennflow.triggers.store import TriggerStore

log = logging.getLogger(__name__)
DELIVERY_TTL_SECONDS = 7 * 86400


class IntakeStatus(StrEnum):
    ACCEPTED = "accepted"  # at least one rule's window has the files
    DUPLICATE = "duplicate"  # this event id was handled before: nothing changed
    IGNORED = "ignored"  # not an upload, or no enabled rule matches a file


class _Wire(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class RuleMatch(_Wire):
    rule_id: str
    window_id: str
    opened_window: bool
    files: int
    fires_at: str  # ISO time, if no further matching file arrives


class IntakeResult(_Wire):
    status: IntakeStatus
    event_id: str
    dataset_id: str
    matched: list[RuleMatch] = []
    detail: str | None = None

    def as_dict(self) -> dict:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class TriggerIntake:
    def __init__(
        self,
        store: TriggerStore,
        debouncer: Debouncer,
        *,
        clock: Callable[[], float] = time.time,
        delivery_ttl_seconds: int = DELIVERY_TTL_SECONDS,
    ):
        self.store = store
        self.debouncer = debouncer
        self.clock = clock
        self.delivery_ttl_seconds = delivery_ttl_seconds

    def accept(self, event: DatasetEvent) -> IntakeResult:
        result = IntakeResult(
            status=IntakeStatus.IGNORED, event_id=event.event_id, dataset_id=event.dataset_id
        )
        if event.event_type not in TRIGGERING_EVENT_TYPES:
            return result.model_copy(update={"detail": f"{event.event_type} events start no runs"})
        now = self.clock()
        if not self.store.claim_delivery(event.event_id, now=now, expires_at=now + self.delivery_ttl_seconds):
            return result.model_copy(update={"status": IntakeStatus.DUPLICATE, "detail": "already received"})
        try:
            matched = self._add_to_windows(event)
        except Exception:
            self._release(event.event_id)
            raise
        if not matched:
            return result.model_copy(
                update={"detail": "no enabled trigger of this dataset matches its files"}
            )
        return result.model_copy(update={"status": IntakeStatus.ACCEPTED, "matched": matched})

    def _add_to_windows(self, event: DatasetEvent) -> list[RuleMatch]:
        matched = []
        for rule in sorted(self.store.rules_for_dataset(event.dataset_id), key=lambda r: r.rule_id):
            files = rule.matching_files(event.files) if rule.enabled else []
            if not files:
                continue
            joined = self.debouncer.add(rule, WindowAddition.of(event.event_id, files))
            matched.append(
                RuleMatch(
                    rule_id=rule.rule_id,
                    window_id=joined.window_id,
                    opened_window=joined.opened,
                    files=len(files),
                    fires_at=utc(joined.due_at).isoformat(),
                )
            )
        return matched

    def _release(self, event_id: str) -> None:
        try:
            self.store.release_delivery(event_id)
        except Exception:  # the original failure matters more; the claim expires with its TTL
            log.exception("could not release the claim of event %s", event_id)
