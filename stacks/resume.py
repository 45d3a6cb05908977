"""Resuming runs: the schedule that frees the run slots kept for resumes once their time is up.

A FAILED or CANCELED run keeps its slot for ``failedRunRetentionDays`` (``pennflow.node.redrive``);
the resume function, called with ``{"action": "releaseExpired"}`` every few minutes, frees the
expired ones (and the oldest one early when runs are waiting for a slot).
"""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from stacks import constants as C

RELEASE_EXPIRED_EVENT = {"action": "releaseExpired"}


class NodeResume(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        resume: lambda_.IFunction,
        dead_letter_queue: sqs.IQueue,
    ) -> None:
        super().__init__(scope, construct_id)
        self.release_rule = events.Rule(
            self,
            "ReleaseKeptSlotsRule",
            description="pennflow: free the run slots kept for resumes once failedRunRetentionDays is over",
            schedule=events.Schedule.rate(Duration.minutes(C.RELEASE_KEPT_SLOTS_EVERY)),
            targets=[
                targets.LambdaFunction(
                    resume,
                    event=events.RuleTargetInput.from_object(RELEASE_EXPIRED_EVENT),
                    dead_letter_queue=dead_letter_queue,
                    retry_attempts=2,
                    max_event_age=Duration.hours(1),  # the next run of the schedule does the same work
                )
            ],
        )
