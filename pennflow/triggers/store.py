"""Where trigger rules, debounce windows and delivery claims live: the port and its DynamoDB adapter.

Two tables (key names shared with the stack)::

    rules table   pk rule_id (S); GSI by-dataset: pk dataset_id (S), sk created_at (S)
                  attributes: rule (S, the rule's JSON)
    state table   pk pk (S); TTL attribute expires_at (N)
                  pending#<rule_id>    the rule's open window (typed attributes, see _pending_item)
                  window#<window_id>   a closed window and its run (status (S), window (S, JSON))
                  delivery#<event_id>  a claimed delivery id

Every write that decides something is conditional, so concurrent Lambdas agree without locks:
claiming a delivery, opening a window (one per rule), adding to a window (only while it is open,
and only while its file lists stay under ``WINDOW_CAPS``), closing it (only the version read, in
one transaction with the closed-window record) and recording its run (once). DynamoDB's TTL
deletes lazily, so claims compare ``expires_at`` themselves.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any, Protocol

from pennflow.aws import LazyClient, error_code
from pennflow.triggers.models import FiredWindow, PendingWindow, TriggerRule, WindowAddition, WindowStatus
from pennflow.workflow.runs import timestamp

RULES_PK = "rule_id"
BY_DATASET = "by-dataset"
DATASET_ATTR = "dataset_id"
CREATED_ATTR = "created_at"
STATE_PK = "pk"
TTL_ATTR = "expires_at"
PENDING_PREFIX = "pending#"
WINDOW_PREFIX = "window#"
DELIVERY_PREFIX = "delivery#"
MAX_WINDOW_PATHS = 250  # 250 paths of at most 1 KiB each keep a window item far below 400 KB
MAX_WINDOW_PACKAGES = 1000  # POST /runs takes at most 1,000 package ids
CONDITION_FAILED = "ConditionalCheckFailedException"


@dataclass(frozen=True)
class RulePage:
    rules: list[TriggerRule]
    cursor: str | None


class RuleExists(Exception):
    pass


class TriggerStore(Protocol):
    # ---- rules
    def create_rule(self, rule: TriggerRule) -> None:
        """Raises RuleExists when the id is taken."""

    def get_rule(self, rule_id: str) -> TriggerRule | None: ...

    def delete_rule(self, rule_id: str) -> TriggerRule | None:
        """The deleted rule, or None when there was none."""

    def list_rules(self, *, dataset_id: str | None, limit: int, cursor: str | None) -> RulePage:
        """Raises ValueError for a cursor this store did not make."""

    def rules_for_dataset(self, dataset_id: str) -> list[TriggerRule]: ...

    # ---- deliveries
    def claim_delivery(self, event_id: str, *, now: float, expires_at: float) -> bool:
        """True for the first claim of an event id (until it expires), False for every repeat."""

    def release_delivery(self, event_id: str) -> None:
        """Forget a claim whose event could not be handled, so a retry of it is not a repeat."""

    # ---- windows
    def get_pending(self, rule_id: str) -> PendingWindow | None: ...

    def open_window(self, window: PendingWindow) -> bool:
        """Store a new window; False when the rule already has one."""

    def add_to_window(self, rule_id: str, addition: WindowAddition, *, now: float) -> PendingWindow | None:
        """Add an event to the rule's open window (the window after it), or None when none is open."""

    def close_window(self, window: PendingWindow, fired: FiredWindow) -> bool:
        """Replace the window (only at the version read) by its closed record; False otherwise."""

    def get_fired(self, window_id: str) -> FiredWindow | None: ...

    def finish_fired(self, fired: FiredWindow) -> bool:
        """Record the outcome of a closed window once (only while it is FIRING)."""


def fits(window_paths: int, window_packages: int, addition: WindowAddition) -> bool:
    """Whether the addition's lists may join a window's without passing WINDOW caps (worst case)."""
    return (
        window_paths + len(addition.paths) <= MAX_WINDOW_PATHS
        and window_packages + len(addition.package_ids) <= MAX_WINDOW_PACKAGES
    )


def table_definitions(rules_table: str, state_table: str) -> list[dict[str, Any]]:
    """``CreateTable`` requests for both tables (local and test setups; the stack declares the same)."""
    string = "S"
    return [
        {
            "TableName": rules_table,
            "BillingMode": "PAY_PER_REQUEST",
            "AttributeDefinitions": [
                {"AttributeName": name, "AttributeType": string}
                for name in (RULES_PK, DATASET_ATTR, CREATED_ATTR)
            ],
            "KeySchema": [{"AttributeName": RULES_PK, "KeyType": "HASH"}],
            "GlobalSecondaryIndexes": [
                {
                    "IndexName": BY_DATASET,
                    "KeySchema": [
                        {"AttributeName": DATASET_ATTR, "KeyType": "HASH"},
                        {"AttributeName": CREATED_ATTR, "KeyType": "RANGE"},
                    ],
                    "Projection": {"ProjectionType": "ALL"},
                }
            ],
        },
        {
            "TableName": state_table,
            "BillingMode": "PAY_PER_REQUEST",
            "AttributeDefinitions": [{"AttributeName": STATE_PK, "AttributeType": string}],
            "KeySchema": [{"AttributeName": STATE_PK, "KeyType": "HASH"}],
        },
    ]


# ------------------------------------------------------------------ DynamoDB


class DynamoTriggerStore:
    def __init__(self, rules_table: str, state_table: str, client: Any = None):
        self.rules_table = rules_table
        self.state_table = state_table
        self._client = client

    client = LazyClient("dynamodb")

    # ---------------------------------------------------------------- rules

    def create_rule(self, rule: TriggerRule) -> None:
        try:
            self.client.put_item(
                TableName=self.rules_table,
                Item=_rule_item(rule),
                ConditionExpression="attribute_not_exists(rule_id)",
            )
        except Exception as exc:
            if error_code(exc) == CONDITION_FAILED:
                raise RuleExists(rule.rule_id) from None
            raise

    def get_rule(self, rule_id: str) -> TriggerRule | None:
        item = self.client.get_item(
            TableName=self.rules_table, Key={RULES_PK: {"S": rule_id}}, ConsistentRead=True
        ).get("Item")
        return _rule(item) if item else None

    def delete_rule(self, rule_id: str) -> TriggerRule | None:
        old = self.client.delete_item(
            TableName=self.rules_table, Key={RULES_PK: {"S": rule_id}}, ReturnValues="ALL_OLD"
        ).get("Attributes")
        return _rule(old) if old else None

    def list_rules(self, *, dataset_id: str | None, limit: int, cursor: str | None) -> RulePage:
        start = _decode_cursor(cursor, by_dataset=dataset_id is not None) if cursor else None
        request: dict[str, Any] = {"TableName": self.rules_table, "Limit": limit}
        if start:
            request["ExclusiveStartKey"] = start
        if dataset_id is None:
            response = self.client.scan(**request)
        else:
            response = self.client.query(
                **request,
                IndexName=BY_DATASET,
                KeyConditionExpression="dataset_id = :d",
                ExpressionAttributeValues={":d": {"S": dataset_id}},
                ScanIndexForward=False,
            )
        rules = [_rule(item) for item in response.get("Items", [])]
        last = response.get("LastEvaluatedKey")
        return RulePage(rules, _encode_cursor(last) if last else None)

    def rules_for_dataset(self, dataset_id: str) -> list[TriggerRule]:
        rules: list[TriggerRule] = []
        pages = self.client.get_paginator("query").paginate(
            TableName=self.rules_table,
            IndexName=BY_DATASET,
            KeyConditionExpression="dataset_id = :d",
            ExpressionAttributeValues={":d": {"S": dataset_id}},
        )
        for page in pages:
            rules.extend(_rule(item) for item in page.get("Items", []))
        return rules

    # ---------------------------------------------------------------- deliveries

    def claim_delivery(self, event_id: str, *, now: float, expires_at: float) -> bool:
        return self._conditional(
            "put_item",
            TableName=self.state_table,
            Item={STATE_PK: {"S": DELIVERY_PREFIX + event_id}, TTL_ATTR: _n(int(expires_at))},
            ConditionExpression="attribute_not_exists(pk) OR expires_at < :now",
            ExpressionAttributeValues={":now": _n(now)},
        )

    def release_delivery(self, event_id: str) -> None:
        self.client.delete_item(TableName=self.state_table, Key={STATE_PK: {"S": DELIVERY_PREFIX + event_id}})

    # ---------------------------------------------------------------- windows

    def get_pending(self, rule_id: str) -> PendingWindow | None:
        item = self._get_state(PENDING_PREFIX + rule_id)
        return _pending(item) if item else None

    def open_window(self, window: PendingWindow) -> bool:
        return self._conditional(
            "put_item",
            TableName=self.state_table,
            Item=_pending_item(window),
            ConditionExpression="attribute_not_exists(pk)",
        )

    def add_to_window(self, rule_id: str, addition: WindowAddition, *, now: float) -> PendingWindow | None:
        key = {STATE_PK: {"S": PENDING_PREFIX + rule_id}}
        sets = "SET last_event_at = :now"
        adds = "ADD event_count :one, file_count :files, version :one"
        values: dict[str, Any] = {":now": _n(now), ":one": _n(1), ":files": _n(addition.file_count)}
        if (addition.paths or addition.package_ids) and fits(0, 0, addition):
            lists, list_values = _list_additions(addition)
            # The caps hold whatever the overlap: the condition assumes no path is already there.
            room = (
                "(attribute_not_exists(paths) OR size(paths) <= :path_room) AND "
                "(attribute_not_exists(package_ids) OR size(package_ids) <= :package_room)"
            )
            item = self._update(
                Key=key,
                UpdateExpression=f"{sets} {adds}, {lists}",
                ConditionExpression=f"attribute_exists(pk) AND {room}",
                ExpressionAttributeValues={
                    **values,
                    **list_values,
                    ":path_room": _n(MAX_WINDOW_PATHS - len(addition.paths)),
                    ":package_room": _n(MAX_WINDOW_PACKAGES - len(addition.package_ids)),
                },
            )
            if item is not None:
                return _pending(item)
        # The window is full (or absent): count the event and mark the lists incomplete.
        item = self._update(
            Key=key,
            UpdateExpression=f"{sets}, truncated = :true {adds}",
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeValues={**values, ":true": {"BOOL": True}},
        )
        return _pending(item) if item is not None else None

    def close_window(self, window: PendingWindow, fired: FiredWindow) -> bool:
        try:
            self.client.transact_write_items(
                TransactItems=[
                    {
                        "Delete": {
                            "TableName": self.state_table,
                            "Key": {STATE_PK: {"S": PENDING_PREFIX + window.rule_id}},
                            "ConditionExpression": "window_id = :w AND version = :v",
                            "ExpressionAttributeValues": {
                                ":w": {"S": window.window_id},
                                ":v": _n(window.version),
                            },
                        }
                    },
                    {
                        "Put": {
                            "TableName": self.state_table,
                            "Item": _fired_item(fired, expires_at=window.expires_at),
                            "ConditionExpression": "attribute_not_exists(pk)",
                        }
                    },
                ]
            )
        except Exception as exc:
            if error_code(exc) == "TransactionCanceledException":
                return False
            raise
        return True

    def get_fired(self, window_id: str) -> FiredWindow | None:
        item = self._get_state(WINDOW_PREFIX + window_id)
        return FiredWindow.model_validate_json(item["window"]["S"]) if item else None

    def finish_fired(self, fired: FiredWindow) -> bool:
        return self._conditional(
            "update_item",
            TableName=self.state_table,
            Key={STATE_PK: {"S": WINDOW_PREFIX + fired.window_id}},
            UpdateExpression="SET #status = :status, #window = :window",
            ConditionExpression="#status = :firing",
            ExpressionAttributeNames={"#status": "status", "#window": "window"},
            ExpressionAttributeValues={
                ":status": {"S": fired.status.value},
                ":window": {"S": fired.model_dump_json()},
                ":firing": {"S": WindowStatus.FIRING.value},
            },
        )

    # ---------------------------------------------------------------- helpers

    def _get_state(self, pk: str) -> dict[str, Any] | None:
        return self.client.get_item(
            TableName=self.state_table, Key={STATE_PK: {"S": pk}}, ConsistentRead=True
        ).get("Item")

    def _update(self, **request: Any) -> dict[str, Any] | None:
        try:
            return self.client.update_item(TableName=self.state_table, ReturnValues="ALL_NEW", **request)[
                "Attributes"
            ]
        except Exception as exc:
            if error_code(exc) == CONDITION_FAILED:
                return None
            raise

    def _conditional(self, operation: str, **request: Any) -> bool:
        try:
            getattr(self.client, operation)(**request)
        except Exception as exc:
            if error_code(exc) == CONDITION_FAILED:
                return False
            raise
        return True


# ------------------------------------------------------------------ items


def _n(value: float | int) -> dict[str, str]:
    return {"N": repr(round(value, 6)) if isinstance(value, float) else str(value)}


def _num(attribute: dict[str, str]) -> float:
    return float(attribute["N"])


def _rule_item(rule: TriggerRule) -> dict[str, Any]:
    return {
        RULES_PK: {"S": rule.rule_id},
        DATASET_ATTR: {"S": rule.dataset_id},
        CREATED_ATTR: {"S": timestamp(rule.created_at)},
        "rule": {"S": rule.model_dump_json()},
    }


def _rule(item: dict[str, Any]) -> TriggerRule:
    return TriggerRule.model_validate_json(item["rule"]["S"])


def _list_additions(addition: WindowAddition) -> tuple[str, dict[str, Any]]:
    parts, values = [], {}
    if addition.paths:
        parts.append("paths :paths")
        values[":paths"] = {"SS": sorted(addition.paths)}
    if addition.package_ids:
        parts.append("package_ids :packages")
        values[":packages"] = {"SS": sorted(addition.package_ids)}
    return ", ".join(parts), values


def _pending_item(window: PendingWindow) -> dict[str, Any]:
    item: dict[str, Any] = {
        STATE_PK: {"S": PENDING_PREFIX + window.rule_id},
        "rule_id": {"S": window.rule_id},
        "window_id": {"S": window.window_id},
        "dataset_id": {"S": window.dataset_id},
        "opened_at": _n(window.opened_at),
        "last_event_at": _n(window.last_event_at),
        "debounce_seconds": _n(window.debounce_seconds),
        "max_wait_seconds": _n(window.max_wait_seconds),
        "first_event_id": {"S": window.first_event_id},
        "event_count": _n(window.event_count),
        "file_count": _n(window.file_count),
        "truncated": {"BOOL": window.truncated},
        "version": _n(window.version),
        TTL_ATTR: _n(window.expires_at),
    }
    if window.paths:  # DynamoDB has no empty sets
        item["paths"] = {"SS": sorted(window.paths)}
    if window.package_ids:
        item["package_ids"] = {"SS": sorted(window.package_ids)}
    return item


def _pending(item: dict[str, Any]) -> PendingWindow:
    return PendingWindow(
        rule_id=item["rule_id"]["S"],
        window_id=item["window_id"]["S"],
        dataset_id=item["dataset_id"]["S"],
        opened_at=_num(item["opened_at"]),
        last_event_at=_num(item["last_event_at"]),
        debounce_seconds=int(_num(item["debounce_seconds"])),
        max_wait_seconds=int(_num(item["max_wait_seconds"])),
        first_event_id=item["first_event_id"]["S"],
        event_count=int(_num(item["event_count"])),
        file_count=int(_num(item["file_count"])),
        paths=frozenset(item.get("paths", {}).get("SS", ())),
        package_ids=frozenset(item.get("package_ids", {}).get("SS", ())),
        truncated=item.get("truncated", {}).get("BOOL", False),
        version=int(_num(item["version"])),
    )


def _fired_item(fired: FiredWindow, *, expires_at: int) -> dict[str, Any]:
    return {
        STATE_PK: {"S": WINDOW_PREFIX + fired.window_id},
        "status": {"S": fired.status.value},
        "window": {"S": fired.model_dump_json()},
        TTL_ATTR: _n(expires_at + 7 * 86400),  # kept a week past the window, for GET and retries
    }


def _encode_cursor(key: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(key, sort_keys=True).encode()).decode()


def _decode_cursor(cursor: str, *, by_dataset: bool) -> dict[str, Any]:
    expected = {RULES_PK, DATASET_ATTR, CREATED_ATTR} if by_dataset else {RULES_PK}
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise ValueError("the cursor is not one this API returned") from None
    valid = (
        isinstance(key, dict)
        and set(key) == expected
        and all(isinstance(v, dict) and set(v) == {"S"} and isinstance(v["S"], str) for v in key.values())
    )
    if not valid:
        raise ValueError("the cursor is not one this API returned (or belongs to another listing)")
    return key
