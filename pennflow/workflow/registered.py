"""A registered workflow as the workflows table stores it: one format for the API's registry and the stack.

Two owners write the table. ``POST /workflows`` registers through :mod:`pennflow.node.registry`
(state machines named ``<node>-api_<workflow>``, created and updated by the API); ``cdk deploy``
seeds one record per file of the workflows folder (state machines ``<node>-<workflow>``, created
and updated by CloudFormation). Both build their items here, so a run started on either finds the
same fields, and the record says who owns it: the API refuses to change a stack-owned workflow.

Items (partition key ``name``, string attributes only):
- ``<name>``: the current definition, ``kind = "workflow"``;
- ``<name>#<definition hash>``: one per registered definition, ``kind = "version"`` (immutable).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pennflow.workflow.definition import Workflow

KEY = "name"  # the workflows table's partition key
WORKFLOW_KIND = "workflow"
VERSION_KIND = "version"
MANAGED_BY_API = "api"
MANAGED_BY_STACK = "cloudformation"
# API-registered state machines are named <node>-api_<workflow>. A folder workflow's state machine is
# <node>-<workflow name or file-name slug>, only [a-z0-9-]: it can never carry the underscore.
API_STATE_MACHINE_MARK = "api_"
STATE_MACHINE_NAME_LIMIT = 80  # Step Functions' limit on a state machine's name


def version_key(name: str, definition_hash: str) -> str:
    return f"{name}#{definition_hash}"


def canonical_definition(definition: Mapping[str, Any]) -> str:
    return json.dumps(definition, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class WorkflowRecord:
    name: str  # the name runs are started with (a folder file's second definition of a name: its own)
    definition: dict[str, Any]
    definition_hash: str
    state_machine_arn: str
    version_arn: str | None
    created_at: datetime | None  # None for stack-owned workflows: CloudFormation keeps their history
    updated_at: datetime | None
    managed_by: str = MANAGED_BY_API
    source: str | None = None  # the workflows folder's file, for stack-owned workflows

    @classmethod
    def deployed(
        cls, name: str, workflow: Workflow, state_machine_arn: str, version_arn: str, source: str
    ) -> WorkflowRecord:
        """A workflow of the stack's workflows folder (the ARNs may be CloudFormation tokens)."""
        return cls(
            name=name,
            definition=workflow.model_dump(mode="json", by_alias=True),
            definition_hash=workflow.definition_hash(),
            state_machine_arn=state_machine_arn,
            version_arn=version_arn,
            created_at=None,
            updated_at=None,
            managed_by=MANAGED_BY_STACK,
            source=source,
        )

    @property
    def stack_owned(self) -> bool:
        return self.managed_by == MANAGED_BY_STACK

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

    def items(self) -> list[dict[str, str]]:
        """The version item and the current item, as attribute name -> string value."""
        return [self.values(version_key(self.name, self.definition_hash), VERSION_KIND), self.values()]

    def transact_write(self, table: str) -> dict[str, Any]:
        """The DynamoDB ``TransactWriteItems`` request that records both items (how the stack seeds them):
        both or neither, and a failure fails the deploy rather than leaving an unprocessed item."""
        items = [{k: {"S": v} for k, v in item.items()} for item in self.items()]
        return {"TransactItems": [{"Put": {"TableName": table, "Item": item}} for item in items]}

    def values(self, key: str | None = None, kind: str = WORKFLOW_KIND) -> dict[str, str]:
        values = {
            KEY: key or self.name,
            "kind": kind,
            "workflow": self.name,
            "definition": canonical_definition(self.definition),
            "definition_hash": self.definition_hash,
            "state_machine_arn": self.state_machine_arn,
            "managed_by": self.managed_by,
            "version_arn": self.version_arn,
            "source": self.source,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
        }
        return {name: value for name, value in values.items() if value is not None}

    @classmethod
    def from_values(cls, value: Mapping[str, str]) -> WorkflowRecord:
        return cls(
            name=value["workflow"],
            definition=json.loads(value["definition"]),
            definition_hash=value["definition_hash"],
            state_machine_arn=value["state_machine_arn"],
            version_arn=value.get("version_arn"),
            created_at=_moment(value.get("created_at")),
            updated_at=_moment(value.get("updated_at")),
            managed_by=value.get("managed_by", MANAGED_BY_API),  # items from before the field: the API's
            source=value.get("source"),
        )


def _moment(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None
