"""Triggers: runs started automatically when a dataset receives new files (DESIGN §1, §7).

Dataset events arrive through a signed webhook (a public route: the HMAC is the authentication) or
as EventBridge events (`source: pennflow.datasets`); both open or extend a debounce window per
rule (pennflow.triggers), and a delayed SQS message fires the window, starting one run the way
`POST /runs` does.
"""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from stacks import constants as C
from stacks.functions import READ, SCAN, WRITE, NodeFunctions
from stacks.nag import acknowledge
from stacks.storage import NodeStorage, node_table, string_index

FIRE_BATCH_SIZE = 10
FIRE_MAX_RECEIVES = 5
TARGET_RETRY_ATTEMPTS = 8


class NodeTriggers(Construct):
    def __init__(
        self, scope: Construct, construct_id: str, *, functions: NodeFunctions, storage: NodeStorage
    ) -> None:
        super().__init__(scope, construct_id)
        self._functions = functions
        self.rules_table = node_table(
            self,
            "RulesTable",
            C.TRIGGER_RULES_PK,
            indexes=[
                string_index(C.TRIGGER_BY_DATASET_INDEX, C.TRIGGER_DATASET_ATTR, C.TRIGGER_CREATED_ATTR)
            ],
        )
        self.state_table = node_table(self, "StateTable", C.TRIGGER_STATE_PK, ttl=C.TRIGGER_TTL_ATTR)
        self.fire_queue = sqs.Queue(
            self,
            "FireQueue",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            # Lambda's guidance for SQS sources: at least six times the function timeout.
            visibility_timeout=Duration.seconds(6 * C.LAMBDA_TIMEOUT_SECONDS["trigger_fire"]),
            dead_letter_queue=sqs.DeadLetterQueue(
                queue=functions.dead_letter_queue, max_receive_count=FIRE_MAX_RECEIVES
            ),
        )
        self.webhook_secret = self._webhook_secret()

        environment = {
            C.ENV["trigger_rules_table"]: self.rules_table.table_name,
            C.ENV["trigger_state_table"]: self.state_table.table_name,
            C.ENV["trigger_fire_queue"]: self.fire_queue.queue_url,
        }
        role = functions.add_role("triggers")
        self.webhook = functions.add_function(
            "webhook", role, {**environment, C.ENV["webhook_secret"]: self.webhook_secret.secret_arn}
        )
        self.events_function = functions.add_function("trigger_events", role, environment)
        fire_role = functions.add_role("trigger_fire")
        self.fire = functions.add_function(
            "trigger_fire", fire_role, {**environment, **functions.api_environment()}
        )
        self.fire.add_event_source(
            sources.SqsEventSource(
                self.fire_queue, batch_size=FIRE_BATCH_SIZE, report_batch_item_failures=True
            )
        )
        self._grant_intake(role)
        self._grant_fire(fire_role, storage)
        self._grant_api(functions.roles["api"], functions["api"])
        self.dataset_rule = self._dataset_events_rule()

    def _webhook_secret(self) -> secretsmanager.Secret:
        secret = secretsmanager.Secret(
            self,
            "WebhookSecret",
            description="HMAC key of the signed dataset-event webhook; give the same value to the sender",
            generate_secret_string=secretsmanager.SecretStringGenerator(
                password_length=64, exclude_punctuation=True
            ),
        )
        acknowledge(
            secret,
            "AwsSolutions-SMG4",
            "The webhook key is shared with the event sender, which must be updated in step; the function "
            "accepts both AWSCURRENT and AWSPREVIOUS, so owners rotate by hand without dropping deliveries.",
        )
        return secret

    def _grant_intake(self, role: iam.Role) -> None:
        """Webhook and EventBridge intake: match rules by dataset, open or extend windows, schedule fires."""
        functions = self._functions
        functions.allow_table(role, self.rules_table, READ, [C.TRIGGER_BY_DATASET_INDEX])
        functions.allow_table(role, self.state_table, READ + WRITE)
        self.fire_queue.grant_send_messages(role)
        functions.allow(role, ["secretsmanager:GetSecretValue"], [self.webhook_secret.secret_arn])

    def _grant_fire(self, role: iam.Role, storage: NodeStorage) -> None:
        """Firing a window starts a run exactly as the API does (store, registry, idempotency, prepare)."""
        functions = self._functions
        functions.allow_table(role, self.rules_table, READ)
        functions.allow_table(role, self.state_table, READ + WRITE)
        self.fire_queue.grant_send_messages(role)  # reschedules a window while uploads continue
        functions.allow_table(role, storage.runs_table, READ + WRITE, [C.RUNS_BY_CONTENT_KEY_INDEX])
        functions.allow_run_keys(role)  # a window whose files changed nothing returns the earlier run
        functions.allow_table(role, storage.workflows_table, READ)
        functions.allow_table(role, storage.idempotency_table, READ + WRITE)
        functions.allow(role, ["lambda:InvokeFunction"], [functions["prepare"].function_arn])

    def _grant_api(self, role: iam.Role, api: lambda_.Function) -> None:
        """The API's trigger routes create, list and delete rules."""
        functions = self._functions
        functions.allow_table(role, self.rules_table, READ + WRITE + SCAN, [C.TRIGGER_BY_DATASET_INDEX])
        functions.allow_table(role, self.state_table, READ)
        api.add_environment(C.ENV["trigger_rules_table"], self.rules_table.table_name)
        api.add_environment(C.ENV["trigger_state_table"], self.state_table.table_name)

    def _dataset_events_rule(self) -> events.Rule:
        return events.Rule(
            self,
            "DatasetFilesAddedRule",
            description="pennflow: dataset events -> trigger intake",
            event_pattern=events.EventPattern(
                source=[C.DATASET_EVENT_SOURCE], detail_type=[C.DATASET_EVENT_DETAIL_TYPE]
            ),
            targets=[
                targets.LambdaFunction(
                    self.events_function,
                    dead_letter_queue=self._functions.dead_letter_queue,
                    retry_attempts=TARGET_RETRY_ATTEMPTS,
                    max_event_age=Duration.hours(C.EVENT_MAX_AGE_HOURS),
                )
            ],
        )
