"""Run tracking: EventBridge rules that send execution and task state changes to the status Lambda."""

from __future__ import annotations

from aws_cdk import ArnFormat, Duration, Stack
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from stacks import constants as C
from stacks.settings import NodeSettings

TARGET_RETRY_ATTEMPTS = 8


class NodeEvents(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: NodeSettings,
        cluster: ecs.ICluster,
        status: lambda_.IFunction,
        dead_letter_queue: sqs.IQueue,
    ) -> None:
        super().__init__(scope, construct_id)
        target = targets.LambdaFunction(
            status,
            dead_letter_queue=dead_letter_queue,
            retry_attempts=TARGET_RETRY_ATTEMPTS,
            max_event_age=Duration.hours(C.EVENT_MAX_AGE_HOURS),
        )
        # Every execution of this node's state machines, including those the API creates at runtime.
        state_machine_prefix = Stack.of(self).format_arn(
            service="states",
            resource="stateMachine",
            resource_name=C.state_machine_prefix(settings.node_name),
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        self.execution_rule = events.Rule(
            self,
            "ExecutionStatusRule",
            description="pennflow: execution status changes of this node's state machines -> status",
            event_pattern=events.EventPattern(
                source=["aws.states"],
                detail_type=["Step Functions Execution Status Change"],
                detail={"stateMachineArn": events.Match.prefix(state_machine_prefix)},
            ),
            targets=[target],
        )
        self.task_rule = events.Rule(
            self,
            "TaskStateRule",
            description="pennflow: ECS task state changes on this node's cluster -> status",
            event_pattern=events.EventPattern(
                source=["aws.ecs"],
                detail_type=["ECS Task State Change"],
                detail={"clusterArn": [cluster.cluster_arn]},
            ),
            targets=[target],
        )
