"""Run-end notifications: the node's notification topic, its e-mail subscription and the optional
webhook function (Slack-compatible JSON, URL in a secret, retries and the dead-letter queue).

Finalize publishes each run's end (pennflow.node.run_end) with one JSON body for the function and
a text for e-mail. The topic is encrypted with SNS's AWS-managed key, which the account's own
principals may use through SNS; no other service publishes to it.
"""

from __future__ import annotations

from aws_cdk import CfnOutput, Stack
from aws_cdk import aws_budgets as budgets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from stacks import constants as C
from stacks.functions import NodeFunctions
from stacks.nag import acknowledge
from stacks.settings import NodeSettings


class NodeNotifications(Construct):
    def __init__(
        self, scope: Construct, construct_id: str, *, settings: NodeSettings, functions: NodeFunctions
    ) -> None:
        super().__init__(scope, construct_id)
        self.topic = sns.Topic(
            self,
            "RunEndTopic",
            display_name=f"pennflow {settings.node_name} run ends",
            master_key=kms.Alias.from_alias_name(self, "SnsManagedKey", "alias/aws/sns"),
            enforce_ssl=True,
        )
        email = settings.notify_email or settings.alarm_email
        if email:
            self.topic.add_subscription(subscriptions.EmailSubscription(email))
        # Every runs-manager function may end a run (finalize, and cancel or status when they settle one).
        functions.allow(functions.roles["runs_manager"], ["sns:Publish"], [self.topic.topic_arn])
        for name in C.RUNS_MANAGER_LAMBDAS:
            functions[name].add_environment(C.ENV["notify_topic"], self.topic.topic_arn)
        self.webhook_secret: secretsmanager.Secret | None = None
        self.function: lambda_.Function | None = None
        if settings.notify_webhook:
            self._webhook(functions)

    def _webhook(self, functions: NodeFunctions) -> None:
        secret = secretsmanager.Secret(
            self,
            "WebhookUrl",
            description="The https:// URL run ends are posted to (e.g. a Slack incoming webhook); put it here",
        )
        acknowledge(
            secret,
            "AwsSolutions-SMG4",
            "The value is a webhook URL issued by the chat service; only its owner can issue a new one, so it "
            "is replaced by hand (put-secret-value), not rotated by a function.",
        )
        role = functions.add_role("notify")
        secret.grant_read(role)
        function = functions.add_function("notify", role, {C.ENV["notify_webhook_secret"]: secret.secret_arn})
        # A message SNS cannot hand to the function (throttled, gone) waits in the same DLQ as a
        # delivery that failed its own three attempts and Lambda's two retries.
        self.topic.add_subscription(
            subscriptions.LambdaSubscription(function, dead_letter_queue=functions.dead_letter_queue)
        )
        output = CfnOutput(
            self,
            "WebhookUrlSecretArn",
            value=secret.secret_arn,
            description="Put the webhook URL run ends are posted to here (aws secretsmanager put-secret-value)",
        )
        output.override_logical_id("WebhookUrlSecretArn")
        self.webhook_secret, self.function = secret, function

    def add_monthly_budget(self, settings: NodeSettings, alarm_topic: sns.ITopic) -> budgets.CfnBudget | None:
        """``monthlyBudget``: the node's monthly cost (its ``pennflow:node`` cost-allocation tag, once
        activated in the Billing console), alerting the alarms topic at 80% spent and 100% forecast."""
        if settings.monthly_budget is None:
            return None
        alarm_topic.add_to_resource_policy(
            iam.PolicyStatement(
                principals=[iam.ServicePrincipal("budgets.amazonaws.com")],
                actions=["sns:Publish"],
                resources=[alarm_topic.topic_arn],
                conditions={"StringEquals": {"aws:SourceAccount": Stack.of(self).account}},
            )
        )
        subscriber = budgets.CfnBudget.SubscriberProperty(
            subscription_type="SNS", address=alarm_topic.topic_arn
        )
        alerts = [
            ("ACTUAL", 80),  # most of the month's budget is spent
            ("FORECASTED", 100),  # the month is on course to exceed it
        ]
        return budgets.CfnBudget(
            self,
            "MonthlyBudget",
            budget=budgets.CfnBudget.BudgetDataProperty(
                budget_name=f"{settings.node_name}-node-monthly",
                budget_type="COST",
                time_unit="MONTHLY",
                budget_limit=budgets.CfnBudget.SpendProperty(amount=settings.monthly_budget, unit="USD"),
                cost_filters={"TagKeyValue": [f"user:{C.NODE_TAG_KEY}${settings.node_name}"]},
            ),
            notifications_with_subscribers=[
                budgets.CfnBudget.NotificationWithSubscribersProperty(
                    notification=budgets.CfnBudget.NotificationProperty(
                        notification_type=kind,
                        comparison_operator="GREATER_THAN",
                        threshold=threshold,
                        threshold_type="PERCENTAGE",
                    ),
                    subscribers=[subscriber],
                )
                for kind, threshold in alerts
            ],
        )
