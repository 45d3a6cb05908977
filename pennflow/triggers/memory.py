"""In-memory adapters of the trigger ports: the store, the fire queue and a recording run starter.

They keep the DynamoDB adapter's rules (conditions, caps, versions) so the debounce logic can be
exercised quickly and exhaustively; the integration tests run the same scenarios on moto.
"""

from __future__ import annotations

import base64
import binascii
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pennflow.triggers.debounce import FireMessage, RunRefused
from pennflow.triggers.models import (
    FiredWindow,
    PendingWindow,
    TriggeredRun,
    TriggerRule,
    WindowAddition,
    WindowStatus,
)
from pennflow.triggers.store import RuleExists, RulePage, fits


class MemoryTriggerStore:
    def __init__(self) -> None:
        self.rules: dict[str, TriggerRule] = {}
        self.pending: dict[str, PendingWindow] = {}
        self.fired: dict[str, FiredWindow] = {}
        self.deliveries: dict[str, float] = {}  # event id -> expires at
        self._lock = threading.Lock()

    # ---- rules
    def create_rule(self, rule: TriggerRule) -> None:
        with self._lock:
            if rule.rule_id in self.rules:
                raise RuleExists(rule.rule_id)
            self.rules[rule.rule_id] = rule

    def get_rule(self, rule_id: str) -> TriggerRule | None:
        return self.rules.get(rule_id)

    def delete_rule(self, rule_id: str) -> TriggerRule | None:
        with self._lock:
            return self.rules.pop(rule_id, None)

    def list_rules(self, *, dataset_id: str | None, limit: int, cursor: str | None) -> RulePage:
        rules = sorted(self.rules.values(), key=lambda r: (r.created_at, r.rule_id), reverse=True)
        if dataset_id is not None:
            rules = [r for r in rules if r.dataset_id == dataset_id]
        start = _offset(cursor) if cursor else 0
        page = rules[start : start + limit]
        more = start + limit < len(rules)
        return RulePage(
            page, base64.urlsafe_b64encode(str(start + limit).encode()).decode() if more else None
        )

    def rules_for_dataset(self, dataset_id: str) -> list[TriggerRule]:
        return [r for r in self.rules.values() if r.dataset_id == dataset_id]

    # ---- deliveries
    def claim_delivery(self, event_id: str, *, now: float, expires_at: float) -> bool:
        with self._lock:
            if self.deliveries.get(event_id, float("-inf")) >= now:
                return False
            self.deliveries[event_id] = expires_at
            return True

    def release_delivery(self, event_id: str) -> None:
        with self._lock:
            self.deliveries.pop(event_id, None)

    # ---- windows
    def get_pending(self, rule_id: str) -> PendingWindow | None:
        return self.pending.get(rule_id)

    def open_window(self, window: PendingWindow) -> bool:
        with self._lock:
            if window.rule_id in self.pending:
                return False
            self.pending[window.rule_id] = window
            return True

    def add_to_window(self, rule_id: str, addition: WindowAddition, *, now: float) -> PendingWindow | None:
        with self._lock:
            window = self.pending.get(rule_id)
            if window is None:
                return None
            changes: dict = {
                "last_event_at": now,
                "event_count": window.event_count + 1,
                "file_count": window.file_count + addition.file_count,
                "version": window.version + 1,
            }
            if fits(len(window.paths), len(window.package_ids), addition):
                changes["paths"] = window.paths | addition.paths
                changes["package_ids"] = window.package_ids | addition.package_ids
            else:
                changes["truncated"] = True
            self.pending[rule_id] = window = window.model_copy(update=changes)
            return window

    def close_window(self, window: PendingWindow, fired: FiredWindow) -> bool:
        with self._lock:
            current = self.pending.get(window.rule_id)
            if current is None or (current.window_id, current.version) != (window.window_id, window.version):
                return False
            if fired.window_id in self.fired:
                return False
            del self.pending[window.rule_id]
            self.fired[fired.window_id] = fired
            return True

    def get_fired(self, window_id: str) -> FiredWindow | None:
        return self.fired.get(window_id)

    def finish_fired(self, fired: FiredWindow) -> bool:
        with self._lock:
            current = self.fired.get(fired.window_id)
            if current is None or current.status is not WindowStatus.FIRING:
                return False
            self.fired[fired.window_id] = fired
            return True


def _offset(cursor: str) -> int:
    try:
        return int(base64.urlsafe_b64decode(cursor.encode()).decode())
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise ValueError("the cursor is not one this API returned") from None


@dataclass
class Scheduled:
    message: FireMessage
    delay_seconds: int
    deliver_at: float


@dataclass
class MemoryFireQueue:
    """Keeps what would be sent to SQS; tests deliver the messages themselves (any order, any number of times)."""

    clock: Callable[[], float] = time.time
    sent: list[Scheduled] = field(default_factory=list)
    fail_with: Exception | None = None

    def schedule(self, message: FireMessage, delay_seconds: int) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.sent.append(Scheduled(message, delay_seconds, self.clock() + delay_seconds))


@dataclass
class RecordingRunStarter:
    """Starts nothing: records each run asked for. Idempotent by key, as the real starter is."""

    runs: list[TriggeredRun] = field(default_factory=list)
    by_key: dict[str, str] = field(default_factory=dict)
    fail_with: Exception | None = None
    refuse_with: str | None = None

    def start(self, run: TriggeredRun) -> str:
        if self.fail_with is not None:
            raise self.fail_with
        if self.refuse_with is not None:
            raise RunRefused(self.refuse_with)
        if run.key not in self.by_key:
            self.runs.append(run)
            self.by_key[run.key] = f"run-{len(self.runs):04d}"
        return self.by_key[run.key]
