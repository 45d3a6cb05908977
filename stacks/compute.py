"""Compute of the node: the ECS cluster, the task roles and the processor log group.

Task definitions are registered at runtime (one per processor content hash, see DESIGN §4); this
construct only provides what they reference.
"""

from __future__ import annotations

from aws_cdk import Aws, Stack
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from stacks import constants as C
from stacks.log_groups import node_log_group
from stacks.nag import acknowledge, acknowledge_wildcards
from stacks.network import NodeNetwork
from stacks.settings import NodeSettings
from stacks.storage import CLIENT_MOUNT, CLIENT_WRITE, VIA_MOUNT_TARGET, NodeStorage

ECR_PULL = ["ecr:BatchCheckLayerAvailability", "ecr:GetDownloadUrlForLayer", "ecr:BatchGetImage"]


class NodeCompute(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: NodeSettings,
        network: NodeNetwork,
        storage: NodeStorage,
    ) -> None:
        super().__init__(scope, construct_id)
        self._storage = storage
        self.cluster = ecs.Cluster(
            self,
            "Cluster",
            vpc=network.vpc,
            container_insights_v2=ecs.ContainerInsights.ENHANCED,
            enable_fargate_capacity_providers=True,
        )
        self.processor_log_group = node_log_group(self, "ProcessorLogs", settings)
        self.pennsieve_secret = self._pennsieve_secret(settings)

        self.execution_role = self._task_role("ExecutionRole", "Pulls processor images and ships their logs")
        self._allow_image_pull_and_logs()
        self.slot_parameters_arn = Stack.of(self).format_arn(
            service="ssm",
            resource="parameter",
            resource_name=f"{C.slot_parameter_prefix(settings.node_name).strip('/')}/*",
        )
        # ECS reads each slot's run id and SESSION_TOKEN into the container (task-definition secrets);
        # SecureStrings use the AWS-managed key, which needs no kms grant here.
        read_slots = iam.PolicyStatement(actions=["ssm:GetParameters"], resources=[self.slot_parameters_arn])
        self.execution_role.add_to_principal_policy(read_slots)
        acknowledge_wildcards(
            self.execution_role.node.find_child("DefaultPolicy"),
            read_slots,
            "ECS reads a task's run id and SESSION_TOKEN from its slot's parameters when it starts; slots "
            "are numbered at runtime, so the resource is the node's slot-parameter path (read only).",
        )
        self.processor_role = self._task_role(
            "ProcessorTaskRole", "Processors: their run slot on EFS, no AWS API"
        )
        self.builtin_role = self._task_role(
            "BuiltinTaskRole", "Data sources and targets: Pennsieve secret, results"
        )
        for role in (self.processor_role, self.builtin_role):
            self._allow_run_slots(role)
            self._allow_layers_read(role)
        self._allow_builtin_data(storage)

    @property
    def task_roles(self) -> list[iam.Role]:
        return [self.processor_role, self.builtin_role]

    def _pennsieve_secret(self, settings: NodeSettings) -> secretsmanager.Secret:
        secret = secretsmanager.Secret(
            self,
            "PennsieveSecret",
            secret_name=f"{settings.node_name}/pennsieve",
            description="Pennsieve API key and secret for data sources and targets; put the real values here",
            generate_secret_string=secretsmanager.SecretStringGenerator(
                secret_string_template='{"apiKey": "replace-me"}', generate_string_key="apiSecret"
            ),
        )
        acknowledge(
            secret,
            "AwsSolutions-SMG4",
            "Pennsieve issues the API key pair in its web app; there is no API to rotate it from AWS, so the "
            "owner rotates it in Pennsieve and stores the new pair here.",
        )
        return secret

    def _task_role(self, construct_id: str, description: str) -> iam.Role:
        stack = Stack.of(self)
        return iam.Role(
            self,
            construct_id,
            description=description,
            assumed_by=iam.ServicePrincipal(
                "ecs-tasks.amazonaws.com",
                conditions={  # only ECS tasks of this account may assume it (confused deputy)
                    "StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID},
                    "ArnLike": {"aws:SourceArn": stack.format_arn(service="ecs", resource="*")},
                },
            ),
        )

    def _allow_image_pull_and_logs(self) -> None:
        role = self.execution_role
        self.processor_log_group.grant_write(role)
        token = iam.PolicyStatement(actions=["ecr:GetAuthorizationToken"], resources=["*"])
        pull = iam.PolicyStatement(
            actions=ECR_PULL,
            resources=[
                Stack.of(self).format_arn(service="ecr", region="*", account="*", resource="repository/*")
            ],
        )
        for statement in (token, pull):
            role.add_to_principal_policy(statement)
        policy = role.node.find_child("DefaultPolicy")
        acknowledge_wildcards(
            policy,
            token,
            "ecr:GetAuthorizationToken has no resource-level permissions; it only returns a registry login "
            "token, and each pull is still authorised by the pull statement and the repository policy.",
        )
        acknowledge_wildcards(
            policy,
            pull,
            "Workflow authors name processor images at runtime, in any account's ECR repository (DESIGN §2); "
            "the role may only read image layers, and cross-account repositories must also allow it.",
        )

    def _allow_run_slots(self, role: iam.Role) -> None:
        """Read-write on EFS only through the node's run-slot access points."""
        role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="RunSlotsReadWrite",
                actions=[CLIENT_MOUNT, CLIENT_WRITE],
                resources=[self._storage.file_system.file_system_arn],
                conditions={
                    **VIA_MOUNT_TARGET,
                    "StringEquals": {
                        "elasticfilesystem:AccessPointArn": self._storage.slot_access_point_arns
                    },
                },
            )
        )

    def _allow_layers_read(self, role: iam.Role) -> None:
        """Read-only mounts of layers: per-layer access points are created at runtime, so their ARNs are
        matched by pattern; the task definition decides which layers a task mounts, read-only."""
        role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="LayersReadOnly",
                actions=[CLIENT_MOUNT],
                resources=[self._storage.file_system.file_system_arn],
                conditions={
                    **VIA_MOUNT_TARGET,
                    "ArnLike": {
                        "elasticfilesystem:AccessPointArn": Stack.of(self).format_arn(
                            service="elasticfilesystem", resource="access-point", resource_name="*"
                        )
                    },
                },
            )
        )

    def _allow_builtin_data(self, storage: NodeStorage) -> None:
        role = self.builtin_role
        role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="ReadPennsieveSecret",
                actions=["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"],
                resources=[self.pennsieve_secret.secret_arn],
            )
        )
        results = iam.PolicyStatement(
            sid="PublishResults",
            actions=["s3:PutObject", "s3:AbortMultipartUpload"],
            resources=[storage.results_bucket.arn_for_objects(f"{C.RESULTS_PREFIX}*")],
        )
        role.add_to_principal_policy(results)
        # The persistent-layer data target writes a layer: read-write through the /layers access point.
        role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="LayersWrite",
                actions=[CLIENT_MOUNT, CLIENT_WRITE],
                resources=[storage.file_system.file_system_arn],
                conditions={
                    **VIA_MOUNT_TARGET,
                    "StringEquals": {
                        "elasticfilesystem:AccessPointArn": storage.layers_access_point.access_point_arn
                    },
                },
            )
        )
        acknowledge_wildcards(
            role.node.find_child("DefaultPolicy"),
            results,
            "Data targets publish each run's outputs under runs/<run_id>/ in the results bucket; the run id is "
            "only known at runtime, and the prefix keeps the role out of every other key.",
        )
