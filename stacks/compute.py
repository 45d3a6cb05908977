"""Compute of the node: the ECS cluster, the task roles (a pair per run slot) and the processor log group.

Task definitions are registered at runtime (one per processor content hash, see DESIGN §4); this
construct only provides what they reference.
"""

from __future__ import annotations

from typing import Any

from aws_cdk import Aws, Stack, Tags
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
        self._settings = settings
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
        # What every slot's roles share is one managed policy each; what differs, the slot's own access
        # point, is inline in that slot's roles. IAM, not only the task definitions, keeps runs apart.
        self.layers_read_policy = self._layers_read_policy()
        self.builtin_policy = self._builtin_policy()
        self.slot_roles: dict[str, dict[str, iam.Role]] = {
            slot: {kind: self._slot_role(index, slot, kind) for kind in C.SLOT_ROLE_KINDS}
            for index, slot in enumerate(storage.slot_access_points)
        }

    @property
    def task_roles(self) -> list[iam.Role]:
        """Every slot's processor and built-in task roles."""
        return [role for roles in self.slot_roles.values() for role in roles.values()]

    def slot_role_arn(self, slot: str, kind: str) -> str:
        stack = Stack.of(self)
        name = C.slot_role_name(self._settings.node_name, stack.region, slot, kind)
        return stack.format_arn(service="iam", region="", resource="role", resource_name=name)

    @property
    def slot_role_arn_template(self) -> str:
        """What the runs manager fills in with a slot and a kind (pennflow.node.taskdefs)."""
        return self.slot_role_arn("{slot}", "{kind}")

    @property
    def slot_roles_pattern(self) -> str:
        """The ARNs of every slot role of this node in this region, and of nothing else."""
        stack = Stack.of(self)
        prefix = C.slot_role_prefix(self._settings.node_name, stack.region)
        return stack.format_arn(service="iam", region="", resource="role", resource_name=f"{prefix}*")

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

    def _task_role(self, construct_id: str, description: str, **props: Any) -> iam.Role:
        stack = Stack.of(self)
        return iam.Role(
            self,
            construct_id,
            description=description,
            **props,
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

    def _slot_role(self, index: int, slot: str, kind: str) -> iam.Role:
        """A slot's task role: read-write on EFS through that slot's access point and no other."""
        access_point = self._storage.slot_access_points[slot]
        own_slot = iam.PolicyStatement(
            sid="OwnRunSlotReadWrite",
            actions=[CLIENT_MOUNT, CLIENT_WRITE],
            resources=[self._storage.file_system.file_system_arn],
            conditions={
                **VIA_MOUNT_TARGET,
                "StringEquals": {"elasticfilesystem:AccessPointArn": access_point.access_point_arn},
            },
        )
        builtin = kind == "builtin"
        role = self._task_role(
            f"Slot{index:02d}{kind.title()}Role",
            f"{slot} {kind} tasks: this slot's folder on EFS, "
            + ("the Pennsieve secret, results" if builtin else "no AWS API"),
            role_name=C.slot_role_name(self._settings.node_name, Stack.of(self).region, slot, kind),
            inline_policies={"RunSlot": iam.PolicyDocument(statements=[own_slot])},
            managed_policies=[self.layers_read_policy, *([self.builtin_policy] if builtin else [])],
        )
        Tags.of(role).add(C.SLOT_TAG_KEY, slot)
        return role

    def _layers_read_policy(self) -> iam.ManagedPolicy:
        """Read-only mounts of layer versions. Their access points are created at runtime, so they are
        matched by pattern, minus every access point that is not a layer version's: no slot role may
        mount another slot's folder, /runs or /layers this way (an Allow needs all its conditions)."""
        storage = self._storage
        not_layer_versions = [
            storage.runs_access_point.access_point_arn,
            storage.layers_access_point.access_point_arn,
            *storage.slot_access_point_arns,
        ]
        return iam.ManagedPolicy(
            self,
            "LayersReadPolicy",
            description="pennflow task roles: mount layer versions read-only",
            statements=[
                iam.PolicyStatement(
                    sid="LayersReadOnly",
                    actions=[CLIENT_MOUNT],
                    resources=[storage.file_system.file_system_arn],
                    conditions={
                        **VIA_MOUNT_TARGET,
                        "ArnLike": {
                            "elasticfilesystem:AccessPointArn": Stack.of(self).format_arn(
                                service="elasticfilesystem", resource="access-point", resource_name="*"
                            )
                        },
                        "ArnNotEquals": {"elasticfilesystem:AccessPointArn": not_layer_versions},
                    },
                )
            ],
        )

    def _builtin_policy(self) -> iam.ManagedPolicy:
        """Data targets of every slot: the Pennsieve secret, results, and a persistent layer's write."""
        storage = self._storage
        results = iam.PolicyStatement(
            sid="PublishResults",
            actions=["s3:PutObject", "s3:AbortMultipartUpload"],
            resources=[storage.results_bucket.arn_for_objects(f"{C.RESULTS_PREFIX}*")],
        )
        policy = iam.ManagedPolicy(
            self,
            "BuiltinPolicy",
            description="pennflow built-in task roles: Pennsieve secret, results, persistent layers",
            statements=[
                iam.PolicyStatement(
                    sid="ReadPennsieveSecret",
                    actions=["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"],
                    resources=[self.pennsieve_secret.secret_arn],
                ),
                results,
                # A persistent-layer data target writes its layer through the /layers access point.
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
                ),
            ],
        )
        acknowledge_wildcards(
            policy,
            results,
            "Data targets publish each run's outputs under runs/<run_id>/ in the results bucket; the run id is "
            "only known at runtime, and the prefix keeps the role out of every other key.",
        )
        return policy
