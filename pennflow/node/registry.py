"""Registered workflows: the workflows table and the state machine each one compiles to.

Registering a definition compiles it (``pennflow.workflow.asl``), creates or updates the state machine
``<prefix><name>`` and publishes a state machine version for it, then records both in the table. A
workflow too large for one machine also gets its child machines ``<prefix><name>_part<k>``
(``pennflow.workflow.asl_split``), created or updated first, the parent naming their versions.
Every definition hash keeps its own item and version, so a run (or a rerun, months later) executes
exactly the definition it was started with even after the workflow has been updated.

The table has two owners (the item format and the naming rule: ``pennflow.workflow.registered``).
The API's prefix is ``<node>-api_``, a namespace no folder workflow's state machine can take, and
its IAM allows no other; a changed definition of a workflow the stack deployed from the workflows
folder is refused here (``StackOwnedWorkflow``; the same definition is "unchanged"), so registering
never changes a CloudFormation-owned state machine.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from pennflow import aws
from pennflow.aws import arns, error_code
from pennflow.workflow.definition import Workflow
from pennflow.workflow.registered import (
    KEY,
    MANAGED_BY_STACK,
    STATE_MACHINE_NAME_LIMIT,
    VERSION_KIND,
    WORKFLOW_KIND,
    WorkflowRecord,
    version_key,
)
from pennflow.workflow.runs import utcnow

__all__ = ["KEY", "VERSION_KIND", "WORKFLOW_KIND", "WorkflowRecord", "WorkflowRegistry"]


class StackOwnedWorkflow(Exception):
    """The name belongs to a workflow deployed from the node's workflows folder."""

    def __init__(self, record: WorkflowRecord):
        self.record = record
        machine = record.state_machine_arn.rsplit(":", 1)[-1]
        source = f"workflows/{record.source}" if record.source else "the workflows folder"
        super().__init__(
            f"workflow {record.name!r} is deployed by the node's stack from {source} (state machine "
            f"{machine}); change that file and run cdk deploy to update it, or register under another name"
        )


class StateMachineNameTooLong(ValueError):
    def __init__(self, workflow: str, machine: str):
        super().__init__(
            f"workflow {workflow!r} would get the state machine name {machine!r}, over Step Functions' "
            f"{STATE_MACHINE_NAME_LIMIT} characters; shorten the workflow name to at most "
            f"{STATE_MACHINE_NAME_LIMIT - (len(machine) - len(workflow))} characters"
        )


class WorkflowRegistry(Protocol):
    def register(self, workflow: Workflow) -> tuple[WorkflowRecord, bool]:
        """Compile, deploy and record; returns the record and whether the workflow is new.

        Raises ``pennflow.workflow.asl.CompileError`` when the workflow cannot be compiled,
        ``StackOwnedWorkflow`` when the stack owns the name, ``StateMachineNameTooLong``.
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
        return self.machine_arn(self.name(workflow), region)

    def machine_arn(self, machine: str, region: str) -> str:
        role = arns.parse(self.role_arn)
        return arns.build("states", region, role.account, f"stateMachine:{machine}", partition=role.partition)

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
        return self._get_item(version_key(name, definition_hash))

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
            return current, False  # unchanged, whoever owns it (`pennflow submit` of a folder file)
        if current is not None and current.stack_owned:
            raise StackOwnedWorkflow(current)
        machine = self.machines.name(workflow.name)
        if len(machine) > STATE_MACHINE_NAME_LIMIT:
            raise StateMachineNameTooLong(workflow.name, machine)
        from pennflow.workflow.asl import CompileOptions, compile_machines  # only registering pays for it
        from pennflow.workflow.asl_split import part_name, substitute

        # A CompileError stops here, before anything is deployed; integrations in the role's partition.
        options = CompileOptions(partition=arns.partition_of(self.machines.role_arn))
        definition, parts = compile_machines(workflow, options).texts()
        children = [part_name(machine, number) for number in range(1, len(parts) + 1)]
        for child in children:
            if len(child) > STATE_MACHINE_NAME_LIMIT:
                raise StateMachineNameTooLong(workflow.name, child)
        own_arn = self.machines.arn(workflow.name, self.stepfunctions.meta.region_name)
        # A record from before the API's own namespace names another machine: start a new one here.
        update = current is not None and current.state_machine_arn == own_arn
        # Children first, each naming the published versions of those before it, so that a version
        # of the parent always starts the children it was registered with.
        versions: list[str] = []
        for child, text in zip(children, parts, strict=True):
            child_arn, child_version = self._deploy(
                workflow.name, child, substitute(text, versions), digest, update=update
            )
            versions.append(child_version or child_arn)
        arn, version_arn = self._deploy(
            workflow.name, machine, substitute(definition, versions), digest, update=update
        )
        now = utcnow()
        record = WorkflowRecord(
            name=workflow.name,
            definition=workflow.model_dump(mode="json", by_alias=True),
            definition_hash=digest,
            state_machine_arn=arn,
            version_arn=version_arn,
            created_at=(current.created_at or now) if current else now,
            updated_at=now,
        )
        version, latest = record.items()
        self._put(version)
        if not self._put_unless_stack_owned(latest):  # the stack seeded the name meanwhile
            raise StackOwnedWorkflow(self._get_item(workflow.name) or record)
        return record, current is None

    def _deploy(
        self, workflow: str, machine: str, definition: str, digest: str, *, update: bool
    ) -> tuple[str, str | None]:
        """Create (or update) the state machine ``machine`` of ``workflow`` and publish a version."""
        sfn = self.stepfunctions
        settings = {
            "definition": definition,
            "roleArn": self.machines.role_arn,
            "loggingConfiguration": self.machines.logging(),
            "tracingConfiguration": {"enabled": self.machines.tracing},
            "publish": True,
            "versionDescription": f"definition {digest}",
        }
        arn = self.machines.machine_arn(machine, sfn.meta.region_name)
        if update:
            try:
                updated = sfn.update_state_machine(stateMachineArn=arn, **settings)
                return arn, updated.get("stateMachineVersionArn")
            except sfn.exceptions.StateMachineDoesNotExist:
                pass  # a child part the workflow's earlier definition did not need
        tags = [
            {"key": k, "value": v} for k, v in {**self.machines.tags, "pennflow:workflow": workflow}.items()
        ]
        try:
            created = sfn.create_state_machine(name=machine, type="STANDARD", tags=tags, **settings)
            return created["stateMachineArn"], created.get("stateMachineVersionArn")
        except sfn.exceptions.StateMachineAlreadyExists:
            pass  # created by an earlier registration that failed before its record: the API's own
        updated = sfn.update_state_machine(stateMachineArn=arn, **settings)
        return arn, updated.get("stateMachineVersionArn")

    # ------------------------------------------------------------ items

    def _get_item(self, key: str) -> WorkflowRecord | None:
        item = self.dynamodb.get_item(TableName=self.table, Key={KEY: {"S": key}}, ConsistentRead=True)
        return _record(item["Item"]) if "Item" in item else None

    def _put(self, values: Mapping[str, str], **condition: Any) -> None:
        item = {k: {"S": v} for k, v in values.items()}
        self.dynamodb.put_item(TableName=self.table, Item=item, **condition)

    def _put_unless_stack_owned(self, values: Mapping[str, str]) -> bool:
        try:
            self._put(
                values,
                ConditionExpression="attribute_not_exists(managed_by) OR managed_by <> :stack",
                ExpressionAttributeValues={":stack": {"S": MANAGED_BY_STACK}},
            )
        except Exception as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    @property
    def dynamodb(self):
        return self._dynamodb or aws.client("dynamodb")

    @property
    def stepfunctions(self):
        return self._stepfunctions or aws.client("stepfunctions")


def _record(item: Mapping[str, Mapping[str, str]]) -> WorkflowRecord:
    return WorkflowRecord.from_values({k: v["S"] for k, v in item.items() if "S" in v})
