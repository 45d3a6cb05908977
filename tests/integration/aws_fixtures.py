"""moto fixtures for the compute node's runtime code (import them explicitly in each test file).

The tables are created with the key schema the CDK storage construct declares, so a mismatch
between the store and the stack shows up here first.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from pennflow import aws
from pennflow.stores import dynamodb as ddb

REGION = "us-east-1"
RUNS_TABLE = "pennflow-runs"
SLOTS_TABLE = "pennflow-slots"


@pytest.fixture
def mocked_aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(name, value)
    aws.reset_clients()
    with mock_aws():
        yield
    aws.reset_clients()


def create_runs_table(name: str = RUNS_TABLE) -> Any:
    client = boto3.client("dynamodb", region_name=REGION)
    string = "S"
    client.create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[
            {"AttributeName": attribute, "AttributeType": string}
            for attribute in (ddb.PK, ddb.SK, ddb.WORKFLOW_ATTR, ddb.STATUS_ATTR, ddb.CREATED_ATTR)
        ],
        KeySchema=[
            {"AttributeName": ddb.PK, "KeyType": "HASH"},
            {"AttributeName": ddb.SK, "KeyType": "RANGE"},
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": index,
                "KeySchema": [
                    {"AttributeName": attribute, "KeyType": "HASH"},
                    {"AttributeName": ddb.CREATED_ATTR, "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
            for index, attribute in ((ddb.BY_WORKFLOW, ddb.WORKFLOW_ATTR), (ddb.BY_STATUS, ddb.STATUS_ATTR))
        ],
    )
    return client


def create_slots_table(name: str = SLOTS_TABLE) -> Any:
    client = boto3.client("dynamodb", region_name=REGION)
    client.create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "slot_id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "slot_id", "KeyType": "HASH"}],
    )
    return client


@pytest.fixture
def run_store(mocked_aws: None) -> ddb.DynamoRunStore:
    create_runs_table()
    return ddb.DynamoRunStore(RUNS_TABLE)
