"""The join function and its table: how a node waiting on another path of a workflow is released.

A compiled workflow that is not series-parallel (pennflow.workflow.asl_joins) calls the join
function from ``<id> waits`` (a ``lambda:invoke.waitForTaskToken`` task) and ``<id> done``; the
function keeps tokens and done-marks in its own table (keys ``runId``, ``item``; items expire after
a month through TTL) and releases a waiter with ``SendTaskSuccess`` (pennflow.node.joins).

IAM: the function reads and writes its table only, and may call ``states:SendTaskSuccess`` on the
node's state machines only. The Service Authorization Reference lists no resource type for the
SendTask* actions, but Step Functions authorizes a callback against the ARN of the state machine
whose task the token belongs to (the AccessDenied message names that state machine; CDK's
maintainers found a grant on the state machine ARN works for Lambda callbacks, aws/aws-cdk#8486),
so the grant names the node's state machines, not ``*``. ``SendTaskFailure`` is not granted:
nothing fails a waiter through its token (a failed dependency fails the whole Parallel instead).
The state machines may invoke this one function.
"""

from __future__ import annotations

from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from stacks import constants as C
from stacks.functions import NodeFunctions
from stacks.orchestration import NodeOrchestration
from stacks.storage import node_table

JOIN = "join"
TABLE_ACTIONS = ("dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:BatchGetItem")
# The functions that start runs put the join function's name into each run's execution input.
RUN_STARTERS = C.RUNS_MANAGER_LAMBDAS


class NodeJoins(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        functions: NodeFunctions,
        orchestration: NodeOrchestration,
    ) -> None:
        super().__init__(scope, construct_id)
        self.table = node_table(self, "JoinsTable", "runId", sort_key="item", ttl="expiresAt")
        role = functions.add_role(JOIN)
        self.function: lambda_.Function = functions.add_function(
            JOIN, role, {C.ENV["joins_table"]: self.table.table_name}
        )
        functions.allow_table(role, self.table, TABLE_ACTIONS)
        release = iam.PolicyStatement(
            actions=["states:SendTaskSuccess"],
            resources=[functions.states_arn("stateMachine", "*")],
        )
        functions.allow_wildcard(
            role,
            release,
            "A waiting state's token belongs to one of the node's state machines, all named by the node's "
            "prefix; the grant is that prefix (workflows registered later get their machines under it).",
        )
        orchestration.role.add_to_principal_policy(
            iam.PolicyStatement(actions=["lambda:InvokeFunction"], resources=[self.function.function_arn])
        )
        for name in RUN_STARTERS:
            functions[name].add_environment(C.ENV["join_function"], functions.name_of(JOIN))
