"""Registered workflows: the workflows table and the state machine each one compiles to.

Registering a definition compiles it (``pennflow.workflow.asl``), creates or updates the state machine
``<prefix><name>`` and publishes a state machine version for it, then records both in the table.
Every definition hash keeps its own item and version, so a run (or a rerun, months later) executes
exactly the definition it was started with even after the workflow has been updated.

Table items (partition key ``name``, string attributes only):
- ``<name>``: the current definition, ``kind = "workflow"``;
- ``<name>#<definition hash>``: one per registered definition, ``kind = "version"`` (immutable).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from pennflow import aws
from pennflow.aws import arns
from pennflow.workflow.definition import Workflow
from pennflow.workflow.runs import utcnow

KEY = "name"  # the workflows table's partition key
WORKFLOW_KIND = "workflow"
VERSION_KIND = "version"


@dataclass(frozen=True)
class WorkflowRecord:
    name: str
    definition: dict[str, Any]
    definition_hash: str
    state_machine_arn: str
    version_arn: str | None
    created_at: datetime
    updated_at: datetime

    def workflow(self) -> Workflow:
        return Workflow.model_validate(self.definition)

    @property
    def execution_target(self) -> str:
        """What to start an execution of: the version published for this definition."""
        return self.version_arn or self.state_machine_arn

    def execution_arn(self, run_id: str) -> str:
        """The ARN of the execution named ``run_id`` (known before the execution is started)."""
        prefix, _, rest = self.state_machine_arn.partition(":stateMachine:")
        return f"{prefix}:execution:{rest.split(':')[0]}:{run_id}"


class WorkflowRegistry(Protocol):
    def register(self, workflow: Workflow) -> tuple[WorkflowRecord, bool]:
        """Compile, deploy and record; returns the record and whether the workflow is new.

        Raises ``pennflow.workflow.asl.CompileError`` when the workflow cannot be compiled.
        """

    def get(self, name: str) -> WorkflowRecord | None:
        """The current definition of a workflow."""

    def get_version(self, name: str, definition_hash: str) -> WorkflowRecord | None:
        """A definition registered earlier (what a run with that hash executes)."""

    def list(self) -> list[WorkflowRecord]:
        """Current definitions, by name."""


@dataclass(frozen=True)
class StateMachineSettings:
    """How the node's state machines are created (names, role, logging: from the Lambda settings)."""

    prefix: str
    role_arn: str
    log_group_arn: str | None = None
    log_level: str = "ERROR"
    tracing: bool = False
    tags: Mapping[str, str] = field(default_factory=dict)

    def name(self, workflow: str) -> str:
        return f"{self.prefix}{workflow}"

    def arn(self, workflow: str, region: str) -> str:
        """Built from the role's partition and account, so no extra call is needed to find it."""
        partition, account = _arn_parts(self.role_arn)
        return f"arn:{partition}:states:{region}:{account}:stateMachine:{self.name(workflow)}"

    def logging(self) -> dict[str, Any]:
        if not self.log_group_arn:
            return {"level": "OFF"}
        group = self.log_group_arn if self.log_group_arn.endswith(":*") else f"{self.log_group_arn}:*"
        return {
            "level": self.log_level,
            "includeExecutionData": False,  # execution data is ids and paths, but keep logs lean
            "destinations": [{"cloudWatchLogsLogGroup": {"logGroupArn": group}}],
        }


class DynamoWorkflowRegistry:
    """The registry on DynamoDB and Step Functions (clients from :mod:`pennflow.aws` unless given)."""

    def __init__(self, table: str, machines: StateMachineSettings, *, dynamodb=None, stepfunctions=None):
        self.table = table
        self.machines = machines
        self._dynamodb = dynamodb
        self._stepfunctions = stepfunctions

    # ------------------------------------------------------------ reads

    def get(self, name: str) -> WorkflowRecord | None:
        return self._get_item(name)

    def get_version(self, name: str, definition_hash: str) -> WorkflowRecord | None:
        return self._get_item(f"{name}#{definition_hash}")

    def list(self) -> list[WorkflowRecord]:
        records: list[WorkflowRecord] = []
        paginator = self.dynamodb.get_paginator("scan")
        pages = paginator.paginate(
            TableName=self.table,
            FilterExpression="kind = :kind",
            ExpressionAttributeValues={":kind": {"S": WORKFLOW_KIND}},
            ConsistentRead=True,
        )
        for page in pages:
            records.extend(_record(item) for item in page["Items"])
        return sorted(records, key=lambda r: r.name)

    # ------------------------------------------------------------ register

    def register(self, workflow: Workflow) -> tuple[WorkflowRecord, bool]:
        digest = workflow.definition_hash()
        current = self.get(workflow.name)
        if current is not None and current.definition_hash == digest:
            return current, False
        from pennflow.workflow.asl import CompileOptions, compile_to_json  # only registering pays for it

        # A CompileError stops here, before anything is deployed; integrations in the role's partition.
        options = CompileOptions(partition=arns.partition_of(self.machines.role_arn))
        definition = compile_to_json(workflow, options)
        arn, version_arn = self._deploy(workflow.name, definition, digest, known=current is not None)
        now = utcnow()
        record = WorkflowRecord(
            name=workflow.name,
            definition=workflow.model_dump(mode="json", by_alias=True),
            definition_hash=digest,
            state_machine_arn=arn,
            version_arn=version_arn,
            created_at=current.created_at if current else now,
            updated_at=now,
        )
        self._put(f"{workflow.name}#{digest}", VERSION_KIND, record)
        self._put(workflow.name, WORKFLOW_KIND, record)
        return record, current is None

    def _deploy(self, name: str, definition: str, digest: str, *, known: bool) -> tuple[str, str | None]:
        sfn = self.stepfunctions
        settings = {
            "definition": definition,
            "roleArn": self.machines.role_arn,
            "loggingConfiguration": self.machines.logging(),
            "tracingConfiguration": {"enabled": self.machines.tracing},
            "publish": True,
            "versionDescription": f"definition {digest}",
        }
        arn = self.machines.arn(name, sfn.meta.region_name)
        if not known:
            tags = [
                {"key": k, "value": v} for k, v in {**self.machines.tags, "pennflow:workflow": name}.items()
            ]
            try:
                created = sfn.create_state_machine(
                    name=self.machines.name(name), type="STANDARD", tags=tags, **settings
                )
                return created["stateMachineArn"], created.get("stateMachineVersionArn")
            except sfn.exceptions.StateMachineAlreadyExists:
                pass  # deployed before this table knew it (e.g. by the stack): update it
        updated = sfn.update_state_machine(stateMachineArn=arn, **settings)
        return arn, updated.get("stateMachineVersionArn")

    # ------------------------------------------------------------ items

    def _get_item(self, key: str) -> WorkflowRecord | None:
        item = self.dynamodb.get_item(TableName=self.table, Key={KEY: {"S": key}}, ConsistentRead=True)
        return _record(item["Item"]) if "Item" in item else None

    def _put(self, key: str, kind: str, record: WorkflowRecord) -> None:
        values = {
            KEY: key,
            "kind": kind,
            "workflow": record.name,
            "definition": json.dumps(record.definition, sort_keys=True, separators=(",", ":")),
            "definition_hash": record.definition_hash,
            "state_machine_arn": record.state_machine_arn,
            "created_at": record.created_at.isoformat(),
            "updated_at": record.updated_at.isoformat(),
        }
        if record.version_arn:
            values["version_arn"] = record.version_arn
        self.dynamodb.put_item(TableName=self.table, Item={k: {"S": v} for k, v in values.items()})

    @property
    def dynamodb(self):
        return self._dynamodb or aws.client("dynamodb")

    @property
    def stepfunctions(self):
        return self._stepfunctions or aws.client("stepfunctions")


def _record(item: Mapping[str, Mapping[str, str]]) -> WorkflowRecord:
    value = {k: v["S"] for k, v in item.items() if "S" in v}
    return WorkflowRecord(
        name=value["workflow"],
        definition=json.loads(value["definition"]),
        definition_hash=value["definition_hash"],
        state_machine_arn=value["state_machine_arn"],
        version_arn=value.get("version_arn"),
        created_at=datetime.fromisoformat(value["created_at"]),
        updated_at=datetime.fromisoformat(value["updated_at"]),
    )


def _arn_parts(arn: str) -> tuple[str, str]:
    parts = arn.split(":")
    if len(parts) < 6 or parts[0] != "arn" or not parts[4]:
        raise ValueError(f"not an ARN with an account: {arn!r}")
    return parts[1], parts[4]
