"""Python values <-> DynamoDB items, shared by every DynamoDB adapter (boto3 imported on use)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Any

from pennflow.workflow.runs import timestamp


def to_attribute(value: Any) -> Any:
    """A Python value in the form stored in DynamoDB (timestamps as sortable UTC strings)."""
    if isinstance(value, datetime):
        return timestamp(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, float):
        return Decimal(str(value))
    if isinstance(value, dict):
        return {key: to_attribute(inner) for key, inner in value.items()}
    if isinstance(value, list | tuple):
        return [to_attribute(inner) for inner in value]
    return value


def from_attribute(value: Any) -> Any:
    """DynamoDB numbers (Decimal) back into ints and floats, inside maps and lists too."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {key: from_attribute(inner) for key, inner in value.items()}
    if isinstance(value, list):
        return [from_attribute(inner) for inner in value]
    return value


def serialize(item: dict[str, Any]) -> dict[str, Any]:
    from boto3.dynamodb.types import TypeSerializer

    serializer = TypeSerializer()
    return {name: serializer.serialize(value) for name, value in item.items()}


def deserialize(item: dict[str, Any]) -> dict[str, Any]:
    from boto3.dynamodb.types import TypeDeserializer

    deserializer = TypeDeserializer()
    return {name: deserializer.deserialize(value) for name, value in item.items()}
