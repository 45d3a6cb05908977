"""The compute node's layer registry: one DynamoDB table, partition key ``name`` (S).

Each layer is one item. ``refs`` is a map run id -> version, so adding a reader, refusing a
delete while readers exist and publishing a new version are each one conditional write on that
item. Timestamps are fixed-width UTC strings (string order is time order).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pennflow.aws import LazyClient, error_code
from pennflow.aws.items import deserialize, from_attribute, serialize, to_attribute
from pennflow.layers.models import (
    MOUNTABLE,
    UPDATABLE_FIELDS,
    LayerExists,
    LayerRecord,
    LayerStatus,
    allowed_predecessors,
)
from pennflow.workflow.runs import timestamp, utcnow

PK = "name"
REFS = "refs"


class DynamoLayerRegistry:
    """A :class:`~pennflow.layers.registry.LayerRegistry` on one DynamoDB table."""

    def __init__(self, table_name: str, client: Any = None):
        self.table_name = table_name
        self._client = client

    client = LazyClient("dynamodb")

    # ---------------------------------------------------------------- reads

    def get(self, name: str) -> LayerRecord | None:
        response = self.client.get_item(TableName=self.table_name, Key=_key(name), ConsistentRead=True)
        item = response.get("Item")
        return _record(deserialize(item)) if item else None

    def list(self) -> list[LayerRecord]:
        records = []
        for page in self.client.get_paginator("scan").paginate(
            TableName=self.table_name, ConsistentRead=True
        ):
            records.extend(_record(deserialize(item)) for item in page.get("Items", []))
        return sorted(records, key=lambda record: record.name)

    # ---------------------------------------------------------------- writes

    def create(self, record: LayerRecord) -> None:
        item = {name: to_attribute(value) for name, value in record.model_dump(mode="python").items()}
        item = {name: value for name, value in item.items() if value is not None}
        item[REFS] = {}
        try:
            self.client.put_item(
                TableName=self.table_name,
                Item=serialize(item),
                ConditionExpression="attribute_not_exists(#pk)",
                ExpressionAttributeNames={"#pk": PK},
            )
        except Exception as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                raise LayerExists(record.name) from None
            raise

    def transition(
        self,
        name: str,
        status: LayerStatus,
        *,
        expect_version: int | None = None,
        stale_before: datetime | None = None,
        **fields: Any,
    ) -> bool:
        status = LayerStatus(status)
        update = _Update(_values(fields))
        update.set("status", status.value)
        allowed = [update.value(s.value) for s in sorted(allowed_predecessors(status))]
        status_ok = f"{update.name('status')} IN ({', '.join(allowed)})"
        if stale_before is not None:
            status_ok = (
                f"({status_ok} OR ({update.name('status')} = {update.value(LayerStatus.BUILDING.value)} "
                f"AND {update.name('build_started_at')} < {update.value(timestamp(stale_before))}))"
            )
        update.conditions.append(status_ok)
        if expect_version is not None:
            update.conditions.append(f"{update.name('version')} = {update.value(expect_version)}")
        return self._apply(name, update)

    def update(self, name: str, **fields: Any) -> bool:
        return self._apply(name, _Update(_values(fields)))

    def add_ref(self, name: str, run_id: str, version: int, at: datetime) -> bool:
        update = _Update({"last_accessed_at": timestamp(at)})
        update.sets.append(f"{update.name(REFS)}.{update.name(run_id)} = {update.value(version)}")
        mountable = ", ".join(update.value(s.value) for s in sorted(MOUNTABLE))
        update.conditions += [
            f"{update.name('version')} = {update.value(version)}",
            f"{update.name('status')} IN ({mountable})",
        ]
        return self._apply(name, update, touch=False)

    def remove_ref(self, name: str, run_id: str) -> None:
        update = _Update({})
        update.removes.append(f"{update.name(REFS)}.{update.name(run_id)}")
        self._apply(name, update, touch=False)

    def delete(self, name: str) -> bool:
        try:
            self.client.delete_item(
                TableName=self.table_name,
                Key=_key(name),
                ConditionExpression="attribute_exists(#pk) AND size(#refs) = :zero AND #status <> :building",
                ExpressionAttributeNames={"#pk": PK, "#refs": REFS, "#status": "status"},
                ExpressionAttributeValues={
                    ":zero": {"N": "0"},
                    ":building": {"S": LayerStatus.BUILDING.value},
                },
            )
        except Exception as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def _apply(self, name: str, update: _Update, *, touch: bool = True) -> bool:
        if touch and "updated_at" not in update.fields:
            update.set("updated_at", timestamp(utcnow()))
        request = update.request(self.table_name, name)
        try:
            self.client.update_item(**request)
        except Exception as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise
        return True


class _Update:
    """Builds one UpdateItem request with placeholder names and values (always conditional on the key)."""

    def __init__(self, fields: dict[str, Any]):
        self.fields: set[str] = set()
        self.names: dict[str, str] = {}
        self.values: dict[str, Any] = {}
        self.sets: list[str] = []
        self.removes: list[str] = []
        self.conditions = [f"attribute_exists({self.name(PK)})"]
        for field, value in fields.items():
            self.set(field, value)

    def name(self, attribute: str) -> str:
        for placeholder, known in self.names.items():
            if known == attribute:
                return placeholder
        placeholder = f"#n{len(self.names)}"
        self.names[placeholder] = attribute
        return placeholder

    def value(self, value: Any) -> str:
        placeholder = f":v{len(self.values)}"
        self.values[placeholder] = value
        return placeholder

    def set(self, field: str, value: Any) -> None:
        self.fields.add(field)
        if value is None:
            self.removes.append(self.name(field))
        else:
            self.sets.append(f"{self.name(field)} = {self.value(value)}")

    def request(self, table: str, key: str) -> dict[str, Any]:
        parts = []
        if self.sets:
            parts.append("SET " + ", ".join(self.sets))
        if self.removes:
            parts.append("REMOVE " + ", ".join(self.removes))
        request = {
            "TableName": table,
            "Key": _key(key),
            "UpdateExpression": " ".join(parts),
            "ConditionExpression": " AND ".join(self.conditions),
            "ExpressionAttributeNames": self.names,
        }
        if self.values:
            request["ExpressionAttributeValues"] = serialize(self.values)
        return request


# ------------------------------------------------------------------ items


def _key(name: str) -> dict[str, Any]:
    return {PK: {"S": name}}


def _values(fields: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(fields) - UPDATABLE_FIELDS)
    if unknown:
        raise ValueError(f"cannot update layer field(s) {', '.join(unknown)} this way")
    checked = LayerRecord.model_validate({"name": "x", "type": "data", **fields})
    return {
        name: to_attribute(value)
        for name, value in checked.model_dump(mode="python", include=set(fields)).items()
    }


def _record(item: dict[str, Any]) -> LayerRecord:
    return LayerRecord.model_validate(from_attribute(item))
