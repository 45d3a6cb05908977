"""Monitoring: the node's CloudWatch dashboard and alarms, sent to an encrypted SNS topic."""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Duration, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_efs as efs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from stacks import constants as C
from stacks.settings import NodeSettings

PERIOD = Duration.minutes(5)
WIDTH = 12


class NodeMonitoring(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: NodeSettings,
        functions: Mapping[str, lambda_.IFunction],
        state_machines: Mapping[str, sfn.IStateMachine],
        dead_letter_queue: sqs.IQueue,
        file_system: efs.IFileSystem,
    ) -> None:
        super().__init__(scope, construct_id)
        self._service = settings.node_name  # Powertools adds it as the `service` dimension
        self.topic = self._topic(settings)
        self.alarms: list[cloudwatch.Alarm] = []

        runs_failed = self._custom("RunsFailed")
        self._alarm("RunsFailed", runs_failed, "A run failed on the node")
        for name, function in functions.items():
            self._alarm(
                f"{_title(name)}Errors", function.metric_errors(period=PERIOD), f"The {name} function failed"
            )
        dlq_depth = dead_letter_queue.metric_approximate_number_of_messages_visible(
            period=PERIOD, statistic="Maximum"
        )
        self._alarm(
            "DeadLetters", dlq_depth, "Events the node could not process wait in the dead-letter queue"
        )
        for name, state_machine in state_machines.items():
            self._alarm(
                f"{_title(name)}ExecutionsFailed",
                state_machine.metric_failed(period=PERIOD),
                f"An execution of {name} failed",
            )

        self.dashboard = cloudwatch.Dashboard(self, "Dashboard", dashboard_name=f"{settings.node_name}-node")
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Runs",
                width=WIDTH,
                left=[self._custom(m) for m in ("RunsStarted", "RunsSucceeded", "RunsFailed")],
            ),
            cloudwatch.GraphWidget(
                title="Run duration (s)",
                width=WIDTH,
                left=[
                    self._custom("RunDuration", statistic="Average"),
                    self._custom("RunDuration", statistic="p90"),
                ],
            ),
            cloudwatch.GraphWidget(
                title="Processor duration (s), by processor",
                width=WIDTH,
                left=[
                    cloudwatch.MathExpression(
                        expression=f"SEARCH('{{{C.METRICS_NAMESPACE},processor,service}} "
                        f'MetricName="ProcessorDuration" service="{self._service}"\', \'Average\', 300)',
                        label="",
                        period=PERIOD,
                    )
                ],
            ),
            cloudwatch.GraphWidget(
                title="Executions (deployed state machines)",
                width=WIDTH,
                left=[
                    m
                    for sm in state_machines.values()
                    for m in (sm.metric_started(), sm.metric_succeeded(), sm.metric_failed())
                ],
                right=[sm.metric_time() for sm in state_machines.values()],
            ),
            cloudwatch.GraphWidget(
                title="Lambda errors and throttles",
                width=WIDTH,
                left=[f.metric_errors(period=PERIOD, label=f"{n} errors") for n, f in functions.items()],
                right=[
                    f.metric_throttles(period=PERIOD, label=f"{n} throttles") for n, f in functions.items()
                ],
            ),
            cloudwatch.GraphWidget(title="Dead-letter queue depth", width=WIDTH, left=[dlq_depth]),
            cloudwatch.GraphWidget(
                title="Triggered runs and rejected webhook deliveries",
                width=WIDTH,
                left=[self._custom(m) for m in C.TRIGGER_METRICS],
            ),
            cloudwatch.GraphWidget(
                title="Layer jobs", width=WIDTH, left=[self._custom(m) for m in C.LAYER_JOB_METRICS]
            ),
            cloudwatch.GraphWidget(
                title="Data source downloads: files (left), bytes (right)",
                width=WIDTH,
                left=[self._custom(m) for m in C.DOWNLOAD_FILE_METRICS],
                right=[self._custom(C.DOWNLOAD_BYTES_METRIC)],
            ),
            cloudwatch.GraphWidget(
                title="EFS throughput (bytes) and % IO limit",
                width=WIDTH,
                left=[self._efs(file_system, m) for m in ("MeteredIOBytes", "TotalIOBytes")],
                right=[self._efs(file_system, "PercentIOLimit", statistic="Maximum")],
            ),
            cloudwatch.GraphWidget(
                title="Run cost (USD) per workflow per day",
                width=WIDTH,
                left=[
                    cloudwatch.MathExpression(
                        expression=f"SEARCH('{{{C.METRICS_NAMESPACE},service,workflow}} "
                        f'MetricName="{C.RUN_COST_METRIC}" service="{self._service}"\', \'Sum\', 86400)',
                        label="",
                        period=Duration.days(1),
                    )
                ],
            ),
            cloudwatch.AlarmStatusWidget(title="Alarms", width=WIDTH, alarms=self.alarms),
        )

    def _topic(self, settings: NodeSettings) -> sns.Topic:
        # CloudWatch can publish to an encrypted topic only with a customer key that allows it to.
        key = kms.Key(self, "AlarmTopicKey", description="pennflow alarm topic", enable_key_rotation=True)
        # CloudWatch alarms, and AWS Budgets when the node has a monthly budget (stacks/notifications.py).
        publishers = [iam.ServicePrincipal("cloudwatch.amazonaws.com")]
        if settings.monthly_budget is not None:
            publishers.append(iam.ServicePrincipal("budgets.amazonaws.com"))
        key.add_to_resource_policy(
            iam.PolicyStatement(
                principals=publishers,
                actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                resources=["*"],
                conditions={"StringEquals": {"aws:SourceAccount": Stack.of(self).account}},
            )
        )
        topic = sns.Topic(
            self,
            "AlarmTopic",
            display_name=f"pennflow {settings.node_name} alarms",
            master_key=key,
            enforce_ssl=True,
        )
        if settings.alarm_email:
            topic.add_subscription(subscriptions.EmailSubscription(settings.alarm_email))
        return topic

    def _custom(self, name: str, statistic: str = "Sum") -> cloudwatch.Metric:
        return cloudwatch.Metric(
            namespace=C.METRICS_NAMESPACE,
            metric_name=name,
            dimensions_map={"service": self._service},
            statistic=statistic,
            period=PERIOD,
        )

    @staticmethod
    def _efs(file_system: efs.IFileSystem, name: str, statistic: str = "Sum") -> cloudwatch.Metric:
        return cloudwatch.Metric(
            namespace="AWS/EFS",
            metric_name=name,
            dimensions_map={"FileSystemId": file_system.file_system_id},
            statistic=statistic,
            period=PERIOD,
        )

    def _alarm(self, construct_id: str, metric: cloudwatch.IMetric, description: str) -> None:
        alarm = metric.create_alarm(
            self,
            f"{construct_id}Alarm",
            alarm_description=description,
            threshold=1,
            evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        alarm.add_alarm_action(actions.SnsAction(self.topic))
        self.alarms.append(alarm)


def _title(name: str) -> str:
    return "".join(part.title() for part in name.replace("-", "_").split("_"))
