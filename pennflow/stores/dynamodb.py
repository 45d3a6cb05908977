"""The compute node's run store: one DynamoDB table, the same status rules as the SQLite store.

Table (key names shared with ``stacks/constants.py``)::

    pk run_id (S), sk sk (S): "RUN" for the run, "STEP#<processor_id>" for each processor
    GSI by-workflow: pk workflow_name (S), sk created_at (S)   -- run items only
    GSI by-status:   pk status (S),        sk created_at (S)   -- run items only
    GSI by-content-key: pk content_key (S), sk created_at (S), projects status -- runs with a key

Step items carry ``status`` but never ``created_at``, so neither index holds them (an item enters
a GSI only when it has both of the index's key attributes). Timestamps are stored as fixed-width
UTC ISO strings (``2025-01-31T12:00:00.000000Z``) so that string order is time order.

Status writes are conditional (``#status IN (<allowed predecessors>)``); a refused condition
returns False. Listing is newest first with an opaque cursor (base64 of the last key returned).
"""

from __future__ import annotations

import base64
import heapq
import json
from collections import Counter
from collections.abc import Collection, Iterator, Sequence
from datetime import datetime
from functools import cache
from typing import Any

from pydantic import BaseModel, TypeAdapter

from pennflow.aws import LazyClient, error_code
from pennflow.aws.items import deserialize, from_attribute, serialize, to_attribute
from pennflow.stores.base import Page, StoreConflict
from pennflow.workflow.runs import RunAttempt, RunRecord, Status, StepRecord, allowed_predecessors

PK = "run_id"
SK = "sk"
RUN_SK = "RUN"
STEP_PREFIX = "STEP#"
BY_WORKFLOW = "by-workflow"
BY_STATUS = "by-status"
BY_CONTENT_KEY = "by-content-key"
WORKFLOW_ATTR = "workflow_name"
STATUS_ATTR = "status"
CREATED_ATTR = "created_at"
CONTENT_KEY_ATTR = "content_key"
POSITION_ATTR = "position"
TASKS_ATTR = "task_arns"  # ECS task ARNs a step ran (one per attempt or batch), see record_task
FAILED_TASKS_ATTR = "failed_task_arns"  # those of them that failed, see record_failed_task
BATCH_TASKS_ATTR = "batch_tasks"  # "<batch index> <task ARN>" of a scattered step, see record_batch_task
MAX_TRANSACTION_ITEMS = 100
CURSOR_VERSION = 1
# RunRecord field -> attribute name where they differ.
RUN_ATTRS = {"workflow": WORKFLOW_ATTR}


class DynamoRunStore:
    """A :class:`~pennflow.stores.base.RunStore` on one DynamoDB table (see the module docstring)."""

    def __init__(self, table_name: str, client: Any = None):
        self.table_name = table_name
        self._client = client

    client = LazyClient("dynamodb")

    # ---------------------------------------------------------------- runs

    def create_run(self, run: RunRecord, steps: Sequence[StepRecord]) -> None:
        """The run item and its steps appear together. A transaction holds at most 100 items, so the
        steps beyond the run's own transaction are written first, each batch checking that the run
        does not exist (nothing reads steps without their run item), and the run item comes last."""
        items = [_run_item(run)] + [_step_item(step, index) for index, step in enumerate(steps)]
        final, overflow = items[:MAX_TRANSACTION_ITEMS], items[MAX_TRANSACTION_ITEMS:]
        run_absent = {
            "ConditionCheck": {
                "TableName": self.table_name,
                "Key": _key(run.run_id, RUN_SK),
                "ConditionExpression": "attribute_not_exists(#pk)",
                "ExpressionAttributeNames": {"#pk": PK},
            }
        }
        batch = MAX_TRANSACTION_ITEMS - 1  # and the run's condition check
        for start in range(0, len(overflow), batch):
            self._put_new(run.run_id, overflow[start : start + batch], run_absent)
        self._put_new(run.run_id, final)

    def _put_new(self, run_id: str, items: Sequence[dict[str, Any]], *checks: dict[str, Any]) -> None:
        writes = [
            {
                "Put": {
                    "TableName": self.table_name,
                    "Item": serialize(item),
                    "ConditionExpression": "attribute_not_exists(#pk)",
                    "ExpressionAttributeNames": {"#pk": PK},
                }
            }
            for item in items
        ]
        try:
            self.client.transact_write_items(TransactItems=[*writes, *checks])
        except Exception as exc:
            if error_code(exc) == "TransactionCanceledException" and _conditional_failure(exc):
                raise StoreConflict(f"run {run_id!r} exists already") from None
            raise

    def get_run(self, run_id: str) -> RunRecord | None:
        response = self.client.get_item(
            TableName=self.table_name, Key=_key(run_id, RUN_SK), ConsistentRead=True
        )
        item = response.get("Item")
        return _run_record(deserialize(item)) if item else None

    def list_runs(
        self,
        *,
        workflow: str | None = None,
        status: Status | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        status = Status(status) if status is not None else None
        if workflow is not None:
            query = _IndexQuery(BY_WORKFLOW, WORKFLOW_ATTR, workflow, status)
            return self._list_one(query, f"workflow={workflow}", limit, cursor)
        if status is not None:
            return self._list_one(
                _IndexQuery(BY_STATUS, STATUS_ATTR, status.value), f"status={status}", limit, cursor
            )
        return self._list_all(limit, cursor)

    def update_run(self, run_id: str, status: Status | None = None, **fields: Any) -> bool:
        values = {
            RUN_ATTRS.get(name, name): _field_value(RunRecord, name, value) for name, value in fields.items()
        }
        for name in values:
            if name in (PK, WORKFLOW_ATTR, CREATED_ATTR, STATUS_ATTR):
                raise ValueError(f"{name!r} cannot be updated this way")
        return self._update(_key(run_id, RUN_SK), status, values)

    def find_succeeded_by_content_key(self, key: str) -> RunRecord | None:
        """The newest SUCCEEDED run with this content key: the by-content-key index, newest first,
        each candidate confirmed by a consistent read (the index lags the table a little)."""
        request: dict[str, Any] = {
            "TableName": self.table_name,
            "IndexName": BY_CONTENT_KEY,
            "KeyConditionExpression": "#key = :key",
            "FilterExpression": "#status = :succeeded",
            "ExpressionAttributeNames": {"#key": CONTENT_KEY_ATTR, "#status": STATUS_ATTR},
            "ExpressionAttributeValues": {":key": {"S": key}, ":succeeded": {"S": Status.SUCCEEDED.value}},
            "ScanIndexForward": False,
        }
        while True:
            response = self.client.query(**request)
            for item in response.get("Items", []):
                run = self.get_run(item[PK]["S"])
                if run is not None and run.status is Status.SUCCEEDED and run.content_key == key:
                    return run
            if "LastEvaluatedKey" not in response:
                return None
            request["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    def update_run_when(self, run_id: str, statuses: Collection[Status], **fields: Any) -> bool:
        """Set fields only while the run's status is one of ``statuses`` (status itself unchanged)."""
        values = {
            RUN_ATTRS.get(name, name): _field_value(RunRecord, name, value) for name, value in fields.items()
        }
        if not values or any(name in (PK, WORKFLOW_ATTR, CREATED_ATTR, STATUS_ATTR) for name in values):
            raise ValueError("give the fields to set (not the status, keys or index attributes)")
        return self._update(_key(run_id, RUN_SK), None, values, only_in=statuses)

    def reopen_run(self, run_id: str, *, attempt: int, history: Sequence[RunAttempt], now: datetime) -> bool:
        """A resume on the node: the run, still FAILED or CANCELED at ``attempt``, becomes STARTED as
        the next attempt (its outcome cleared, ``history`` kept); its steps that did not succeed are
        NOT_STARTED again, the others marked reused. False when the run was not so, or no longer kept
        for resume at ``now`` (another resume, or the slot cleanup, came first)."""
        names = {"#pk": PK, "#status": STATUS_ATTR, "#attempt": "attempt"}
        cleared = ("finished_at", "reason", "failed_processor", "exit_code", "resume_until")
        names.update({f"#c{i}": name for i, name in enumerate(cleared)})
        first = " OR attribute_not_exists(#attempt)" if attempt == 1 else ""  # runs from before attempts
        try:
            self.client.update_item(
                TableName=self.table_name,
                Key=_key(run_id, RUN_SK),
                UpdateExpression="SET #status = :started, #attempt = :next, history = :history, "
                "started_at = :now REMOVE " + ", ".join(f"#c{i}" for i in range(len(cleared))),
                # Kept for resume until later than now: the slot cleanup removes resume_until first.
                ConditionExpression=f"attribute_exists(#pk) AND #status IN (:failed, :canceled) "
                f"AND (#attempt = :attempt{first}) AND #c4 > :now",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=serialize(
                    {
                        ":started": Status.STARTED.value,
                        ":next": attempt + 1,
                        ":attempt": attempt,
                        ":history": to_attribute([a.model_dump() for a in history]),
                        ":now": to_attribute(now),
                        ":failed": Status.FAILED.value,
                        ":canceled": Status.CANCELED.value,
                    }
                ),
            )
        except Exception as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise
        for step in self.list_steps(run_id):
            key = _key(run_id, STEP_PREFIX + step.processor_id)
            if step.status is Status.SUCCEEDED:
                self.client.update_item(
                    TableName=self.table_name,
                    Key=key,
                    UpdateExpression="SET reused = :yes",
                    ExpressionAttributeValues={":yes": {"BOOL": True}},
                )
                continue
            self.client.update_item(
                TableName=self.table_name,
                Key=key,
                # This attempt counts its own tries from 1 (the ended one's are in the run's history).
                UpdateExpression="SET #status = :not_started, reused = :no "
                f"REMOVE finished_at, exit_code, reason, attempts, {FAILED_TASKS_ATTR}, {BATCH_TASKS_ATTR}",
                ConditionExpression="#status <> :succeeded",
                ExpressionAttributeNames={"#status": STATUS_ATTR},
                ExpressionAttributeValues=serialize(
                    {
                        ":not_started": Status.NOT_STARTED.value,
                        ":succeeded": Status.SUCCEEDED.value,
                        ":no": False,
                    }
                ),
            )
        return True

    # ---------------------------------------------------------------- steps

    def list_steps(self, run_id: str) -> list[StepRecord]:
        items = [deserialize(item) for item in self._step_items(run_id)]
        items.sort(key=lambda item: item.get(POSITION_ATTR, 0))
        return [StepRecord.model_validate(_plain(item)) for item in items]

    def update_step(
        self, run_id: str, processor_id: str, status: Status | None = None, **fields: Any
    ) -> bool:
        values = {name: _field_value(StepRecord, name, value) for name, value in fields.items()}
        for name in values:
            if name in (PK, "processor_id", STATUS_ATTR):
                raise ValueError(f"{name!r} cannot be updated this way")
        return self._update(_key(run_id, STEP_PREFIX + processor_id), status, values)

    # ---------------------------------------------------------------- ECS tasks of steps (AWS only)

    def record_task(self, run_id: str, processor_id: str, task_arn: str) -> bool:
        """Remember an ECS task of a step and count it as one attempt; False if it was already known.

        One conditional update, so the same task event delivered twice counts once.
        """
        try:
            self.client.update_item(
                TableName=self.table_name,
                Key=_key(run_id, STEP_PREFIX + processor_id),
                UpdateExpression="ADD #tasks :task, #attempts :one",
                ConditionExpression="attribute_exists(#pk) AND NOT contains(#tasks, :arn)",
                ExpressionAttributeNames={"#pk": PK, "#tasks": TASKS_ATTR, "#attempts": "attempts"},
                ExpressionAttributeValues={
                    ":task": {"SS": [task_arn]},
                    ":arn": {"S": task_arn},
                    ":one": {"N": "1"},
                },
            )
        except Exception as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def record_batch_task(self, run_id: str, processor_id: str, batch: str, task_arn: str) -> bool:
        """Remember an ECS task of one batch of a scattered step; False if it was already known.

        The step's attempts are its batches' most: each batch's tries count from 1, as the local
        engine counts them, so three batches that each ran once are attempt 1, not 3."""
        try:
            response = self.client.update_item(
                TableName=self.table_name,
                Key=_key(run_id, STEP_PREFIX + processor_id),
                UpdateExpression="ADD #tasks :task, #batches :entry",
                ConditionExpression="attribute_exists(#pk) AND NOT contains(#tasks, :arn)",
                ExpressionAttributeNames={"#pk": PK, "#tasks": TASKS_ATTR, "#batches": BATCH_TASKS_ATTR},
                ExpressionAttributeValues={
                    ":task": {"SS": [task_arn]},
                    ":entry": {"SS": [f"{batch} {task_arn}"]},
                    ":arn": {"S": task_arn},
                },
                ReturnValues="ALL_NEW",
            )
        except Exception as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise
        tries = Counter(entry.split(" ", 1)[0] for entry in response["Attributes"][BATCH_TASKS_ATTR]["SS"])
        most = max(tries.values())
        try:  # only upwards: batch events arrive in any order
            self.client.update_item(
                TableName=self.table_name,
                Key=_key(run_id, STEP_PREFIX + processor_id),
                UpdateExpression="SET #attempts = :most",
                ConditionExpression="attribute_not_exists(#attempts) OR #attempts < :most",
                ExpressionAttributeNames={"#attempts": "attempts"},
                ExpressionAttributeValues={":most": {"N": str(most)}},
            )
        except Exception as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise
        return True

    def record_failed_task(self, run_id: str, processor_id: str, task_arn: str) -> int:
        """Remember a failed ECS task of a step; returns how many distinct tasks of it have failed."""
        response = self.client.update_item(
            TableName=self.table_name,
            Key=_key(run_id, STEP_PREFIX + processor_id),
            UpdateExpression="ADD #failed :task",
            ConditionExpression="attribute_exists(#pk)",
            ExpressionAttributeNames={"#pk": PK, "#failed": FAILED_TASKS_ATTR},
            ExpressionAttributeValues={":task": {"SS": [task_arn]}},
            ReturnValues="ALL_NEW",
        )
        return len(response["Attributes"][FAILED_TASKS_ATTR]["SS"])

    def update_step_when(
        self, run_id: str, processor_id: str, statuses: Collection[Status], **fields: Any
    ) -> bool:
        """Set fields only while the step's status is one of ``statuses`` (status itself unchanged)."""
        values = {name: _field_value(StepRecord, name, value) for name, value in fields.items()}
        if not values or any(name in (PK, "processor_id", STATUS_ATTR) for name in values):
            raise ValueError("give the fields to set (not the status or keys)")
        return self._update(_key(run_id, STEP_PREFIX + processor_id), None, values, only_in=statuses)

    def step_tasks(self, run_id: str) -> dict[str, list[str]]:
        """processor id -> the ECS task ARNs recorded for it (sorted), for every step of the run."""
        tasks = {}
        for raw in self._step_items(run_id):
            item = deserialize(raw)
            tasks[item["processor_id"]] = sorted(item.get(TASKS_ATTR, ()))
        return tasks

    # ---------------------------------------------------------------- internals

    def _step_items(self, run_id: str) -> Iterator[dict[str, Any]]:
        paginator = self.client.get_paginator("query")
        pages = paginator.paginate(
            TableName=self.table_name,
            KeyConditionExpression="#pk = :run AND begins_with(#sk, :step)",
            ExpressionAttributeNames={"#pk": PK, "#sk": SK},
            ExpressionAttributeValues={":run": {"S": run_id}, ":step": {"S": STEP_PREFIX}},
            ConsistentRead=True,
        )
        for page in pages:
            yield from page.get("Items", [])

    def _update(
        self,
        key: dict[str, Any],
        status: Status | None,
        values: dict[str, Any],
        only_in: Collection[Status] | None = None,
    ) -> bool:
        if status is None and not values:
            raise ValueError("nothing to update: give a status or fields")
        names = {"#pk": PK}
        attr_values: dict[str, Any] = {}
        conditions = ["attribute_exists(#pk)"]
        sets, removes = [], []
        for index, (name, value) in enumerate(values.items()):
            names[f"#f{index}"] = name
            if value is None:
                removes.append(f"#f{index}")
            else:
                sets.append(f"#f{index} = :f{index}")
                attr_values[f":f{index}"] = value
        allowed: list[str] | None = None
        if only_in is not None:
            allowed = sorted(Status(s).value for s in only_in)
        if status is not None:
            status = Status(status)
            allowed = sorted(s.value for s in allowed_predecessors(status))
            sets.append("#status = :status")
            attr_values[":status"] = status.value
        if allowed is not None:
            if not allowed:
                return False
            names["#status"] = STATUS_ATTR
            placeholders = ", ".join(f":allowed{i}" for i in range(len(allowed)))
            conditions.append(f"#status IN ({placeholders})")
            attr_values.update({f":allowed{i}": value for i, value in enumerate(allowed)})
        expression = " ".join(
            part
            for part in (sets and "SET " + ", ".join(sets), removes and "REMOVE " + ", ".join(removes))
            if part
        )
        request = {
            "TableName": self.table_name,
            "Key": key,
            "UpdateExpression": expression,
            "ConditionExpression": " AND ".join(conditions),
            "ExpressionAttributeNames": names,
        }
        if attr_values:
            request["ExpressionAttributeValues"] = serialize(attr_values)
        try:
            self.client.update_item(**request)
        except Exception as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def _list_one(self, query: _IndexQuery, scope: str, limit: int, cursor: str | None) -> Page:
        start = _decode_cursor(cursor, scope).get("start") if cursor else None
        items, more = self._fetch(query, start, limit + 1)
        page = items[:limit]
        next_cursor = (
            _encode_cursor(scope, {"start": query.key_of(page[-1])}) if more or len(items) > limit else None
        )
        return Page([_run_record(item) for item in page], next_cursor)

    def _list_all(self, limit: int, cursor: str | None) -> Page:
        """Newest first across every status: a merge of the by-status index's partitions."""
        if cursor:
            starts = _decode_cursor(cursor, "all").get("starts", {})
        else:
            starts = {status.value: None for status in Status}
        queries = {
            value: _IndexQuery(BY_STATUS, STATUS_ATTR, value) for value in starts if value in set(Status)
        }
        fetched = {value: self._fetch(query, starts[value], limit + 1) for value, query in queries.items()}
        streams = [[(_order(item), value, item) for item in items] for value, (items, _) in fetched.items()]
        merged = list(heapq.merge(*streams, reverse=True))
        page = merged[:limit]
        consumed: dict[str, dict[str, Any]] = {}
        for _, value, item in page:
            consumed[value] = item
        next_starts = {}
        for value, (items, more) in fetched.items():
            taken = sum(1 for _, v, _ in page if v == value)
            if taken < len(items) or more:
                last = consumed.get(value)
                next_starts[value] = queries[value].key_of(last) if last else starts[value]
        next_cursor = _encode_cursor("all", {"starts": next_starts}) if next_starts else None
        return Page([_run_record(item) for _, _, item in page], next_cursor)

    def _fetch(
        self, query: _IndexQuery, start: dict[str, str] | None, wanted: int
    ) -> tuple[list[dict], bool]:
        """Up to ``wanted`` items of one index partition, newest first, after ``start``; and whether more exist."""
        items: list[dict[str, Any]] = []
        while True:
            request = query.request(self.table_name, wanted)
            if start:
                request["ExclusiveStartKey"] = serialize(start)
            response = self.client.query(**request)
            items.extend(deserialize(item) for item in response.get("Items", []))
            last = response.get("LastEvaluatedKey")
            if len(items) >= wanted:
                return items[:wanted], bool(last) or len(items) > wanted
            if not last:
                return items, False
            start = deserialize(last)


class _IndexQuery:
    """One partition of a GSI, newest first, optionally filtered by status."""

    def __init__(self, index: str, attribute: str, value: str, status: Status | None = None):
        self.index, self.attribute, self.value, self.status = index, attribute, value, status

    def request(self, table_name: str, limit: int) -> dict[str, Any]:
        request: dict[str, Any] = {
            "TableName": table_name,
            "IndexName": self.index,
            "KeyConditionExpression": "#ipk = :ipk",
            "ExpressionAttributeNames": {"#ipk": self.attribute},
            "ExpressionAttributeValues": {":ipk": {"S": self.value}},
            "ScanIndexForward": False,
            "Limit": limit,
        }
        if self.status is not None:
            request["FilterExpression"] = "#status = :status"
            request["ExpressionAttributeNames"]["#status"] = STATUS_ATTR
            request["ExpressionAttributeValues"][":status"] = {"S": self.status.value}
        return request

    def key_of(self, item: dict[str, Any]) -> dict[str, str]:
        """The ExclusiveStartKey that resumes right after ``item`` (table key + index key)."""
        return {
            PK: item[PK],
            SK: item[SK],
            self.attribute: item[self.attribute],
            CREATED_ATTR: item[CREATED_ATTR],
        }


# ------------------------------------------------------------------ items


def _key(run_id: str, sk: str) -> dict[str, Any]:
    return {PK: {"S": run_id}, SK: {"S": sk}}


def _run_item(run: RunRecord) -> dict[str, Any]:
    item = {RUN_ATTRS.get(name, name): to_attribute(value) for name, value in run.model_dump().items()}
    item[SK] = RUN_SK
    return {name: value for name, value in item.items() if value is not None}


def _step_item(step: StepRecord, position: int) -> dict[str, Any]:
    item = {name: to_attribute(value) for name, value in step.model_dump().items()}
    item.update({SK: STEP_PREFIX + step.processor_id, POSITION_ATTR: position})
    item.pop(CREATED_ATTR, None)  # keeps steps out of the GSIs (see the module docstring)
    return {name: value for name, value in item.items() if value is not None}


def _run_record(item: dict[str, Any]) -> RunRecord:
    data = _plain(item)
    data["workflow"] = data.pop(WORKFLOW_ATTR)
    return RunRecord.model_validate(data)


@cache
def _adapter(model: type[BaseModel], name: str) -> TypeAdapter:
    return TypeAdapter(model.model_fields[name].annotation)


def _field_value(model: type[BaseModel], name: str, value: Any) -> Any:
    """Validate a field update against the record model; its stored form (None = remove)."""
    if name not in model.model_fields:
        raise ValueError(f"{model.__name__} has no field {name!r}")
    return to_attribute(_adapter(model, name).validate_python(value))


def _plain(item: dict[str, Any]) -> dict[str, Any]:
    """Drop the storage-only attributes and turn DynamoDB numbers back into ints."""
    return {
        name: from_attribute(value)
        for name, value in item.items()
        if name not in (SK, POSITION_ATTR, TASKS_ATTR, BATCH_TASKS_ATTR)
    }


def _order(item: dict[str, Any]) -> tuple[str, str]:
    return item[CREATED_ATTR], item[PK]


def _conditional_failure(exc: Exception) -> bool:
    reasons = getattr(exc, "response", {}).get("CancellationReasons", [])
    return any(reason.get("Code") == "ConditionalCheckFailed" for reason in reasons)


# ------------------------------------------------------------------ cursors


def _encode_cursor(scope: str, state: dict[str, Any]) -> str:
    payload = {"v": CURSOR_VERSION, "scope": scope, **state}
    return base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode()


def _decode_cursor(cursor: str, scope: str) -> dict[str, Any]:
    try:
        payload = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (ValueError, TypeError):
        payload = None
    if not isinstance(payload, dict) or payload.get("v") != CURSOR_VERSION or not _valid_keys(payload):
        raise ValueError(f"invalid cursor {cursor!r}: pass back the cursor a previous page returned")
    if payload.get("scope") != scope:
        raise ValueError(
            f"this cursor belongs to another listing ({payload.get('scope')}); "
            f"list with the same workflow and status filters as the page that returned it"
        )
    return payload


def _valid_keys(payload: dict[str, Any]) -> bool:
    keys = [payload["start"]] if "start" in payload else list(payload.get("starts", {}).values())
    return all(
        key is None or (isinstance(key, dict) and all(isinstance(v, str) for v in key.values()))
        for key in keys
    )
