"""The folder's workflows in the workflows table: runnable through the API right after `cdk deploy`.

One custom resource per folder workflow writes its two records (the current definition and the
version of this definition hash, in the format of `pennflow.workflow.registered`) in one
TransactWriteItems whenever the workflow's state machine version changes, and deletes the current
record when the file leaves the folder. The records say `managed_by: cloudformation`, so
`POST /workflows` refuses the name (409) and never touches a CloudFormation-owned state machine.

Synth cannot see the table, so a clash cannot be refused there: API-registered state machines are
named `<node>-api_<workflow>`, a namespace folder state machines cannot take, so `cdk deploy`
never fails on a name the API created. A name first registered through the API and later added
to the folder is taken over by the folder at deploy; the API's state machine and versions stay,
so runs of its earlier definitions still resolve.

The seeding function writes only these items: its role allows PutItem and DeleteItem on
the workflows table for exactly the folder workflows' partition keys (dynamodb:LeadingKeys).
"""

from __future__ import annotations

import re

from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import custom_resources as cr
from constructs import Construct

from pennflow.workflow.registered import KEY, WorkflowRecord
from stacks.log_groups import node_log_group
from stacks.orchestration import NodeOrchestration
from stacks.settings import NodeSettings

RESOURCE_TYPE = "Custom::PennflowWorkflowRecord"


class WorkflowRecords(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: NodeSettings,
        table: dynamodb.TableV2,
        orchestration: NodeOrchestration,
    ) -> None:
        super().__init__(scope, construct_id)
        self.records: dict[str, WorkflowRecord] = {}  # registered name -> what the stack records
        for compiled in orchestration.workflows:
            self.records[compiled.registered_name] = WorkflowRecord.deployed(
                compiled.registered_name,
                compiled.workflow,
                orchestration.state_machines[compiled.state_machine_name].state_machine_arn,
                orchestration.versions[compiled.state_machine_name].attr_arn,
                compiled.source.name,
            )
        if not self.records:
            return
        self.keys = sorted(item[KEY] for record in self.records.values() for item in record.items())
        log_group = node_log_group(self, "Logs", settings)
        self.role = iam.Role(
            self,
            "Role",
            description="pennflow: records the workflows folder's state machines in the workflows table",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
        )
        self.role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["dynamodb:PutItem", "dynamodb:DeleteItem"],  # TransactWriteItems of puts; a delete
                resources=[table.table_arn],
                conditions={"ForAllValues:StringEquals": {"dynamodb:LeadingKeys": self.keys}},
            )
        )
        log_group.grant_write(self.role)
        self.resources = {
            name: self._record(name, record, table, log_group) for name, record in self.records.items()
        }

    def _record(
        self, name: str, record: WorkflowRecord, table: dynamodb.TableV2, log_group
    ) -> cr.AwsCustomResource:
        physical_id = cr.PhysicalResourceId.of(f"workflow-record:{name}")  # fixed: an update never deletes
        write = cr.AwsSdkCall(
            service="DynamoDB",
            action="transactWriteItems",
            parameters=record.transact_write(table.table_name),
            physical_resource_id=physical_id,
        )
        delete = cr.AwsSdkCall(
            service="DynamoDB",
            action="deleteItem",
            parameters={"TableName": table.table_name, "Key": {KEY: {"S": name}}},
            physical_resource_id=physical_id,
        )
        resource = cr.AwsCustomResource(
            self,
            _construct_id(name),
            resource_type=RESOURCE_TYPE,
            on_create=write,
            on_update=write,
            on_delete=delete,
            role=self.role,
            install_latest_aws_sdk=False,  # the runtime's SDK has DynamoDB; no download at deploy
            log_group=log_group,
        )
        resource.node.add_dependency(self.role)
        return resource


def _construct_id(name: str) -> str:
    return "".join(part.title() for part in re.split(r"[^A-Za-z0-9]+", name)) + "Record"
