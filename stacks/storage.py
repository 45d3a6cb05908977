"""Storage of the node: the shared EFS with its access points, S3 buckets and DynamoDB tables."""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import Duration, RemovalPolicy, Tags
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_efs as efs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from constructs import Construct

from stacks import constants as C
from stacks.network import NodeNetwork
from stacks.settings import NodeSettings

CLIENT_MOUNT = "elasticfilesystem:ClientMount"
CLIENT_WRITE = "elasticfilesystem:ClientWrite"
CLIENT_ROOT = "elasticfilesystem:ClientRootAccess"
ACCESS_POINT_ARN = "elasticfilesystem:AccessPointArn"
VIA_MOUNT_TARGET = {"Bool": {"elasticfilesystem:AccessedViaMountTarget": "true"}}


class NodeStorage(Construct):
    def __init__(
        self, scope: Construct, construct_id: str, *, settings: NodeSettings, network: NodeNetwork
    ) -> None:
        super().__init__(scope, construct_id)
        self._settings = settings
        self.file_system = self._file_system(network)
        self.runs_access_point = self._access_point("RunsAccessPoint", C.RUNS_PATH)
        self.layers_access_point = self._access_point("LayersAccessPoint", C.LAYERS_PATH)
        self.slot_access_points = {
            C.slot_id(i): self._access_point(f"Slot{i:02d}AccessPoint", f"{C.SLOTS_PATH}/{C.slot_id(i)}")
            for i in range(settings.run_slots)
        }
        for slot, access_point in self.slot_access_points.items():
            Tags.of(access_point).add(C.SLOT_TAG_KEY, slot)

        self.access_log_bucket = self._access_log_bucket()
        self.log_bucket = self._bucket("LogArchive", versioned=False)
        self.results_bucket = self._bucket("Results", versioned=True)

        self.runs_table = self._table("Runs", C.RUNS_PK, sort_key=C.RUNS_SK, indexes=self._run_indexes())
        self.workflows_table = self._table("Workflows", C.WORKFLOWS_PK)
        self.processors_table = self._table("Processors", C.PROCESSORS_PK)
        self.slots_table = self._table("Slots", C.SLOTS_PK)
        self.idempotency_table = self._table("Idempotency", C.IDEMPOTENCY_PK, ttl=C.IDEMPOTENCY_TTL_ATTR)
        self.layers_table = self._table("Layers", C.LAYERS_PK)

    # --- EFS -------------------------------------------------------------------------------------

    def _file_system(self, network: NodeNetwork) -> efs.FileSystem:
        file_system = efs.FileSystem(
            self,
            "FileSystem",
            vpc=network.vpc,
            vpc_subnets=network.private_subnets,
            security_group=network.efs_security_group,
            encrypted=True,
            throughput_mode=efs.ThroughputMode.ELASTIC,
            performance_mode=efs.PerformanceMode.GENERAL_PURPOSE,
            lifecycle_policy=efs.LifecyclePolicy.AFTER_30_DAYS,  # C.EFS_IA_AFTER_DAYS
            out_of_infrequent_access_policy=efs.OutOfInfrequentAccessPolicy.AFTER_1_ACCESS,
            enable_automatic_backups=True,
            removal_policy=RemovalPolicy.RETAIN,
            # CDK's own "deny anonymous" statement grants root access to every IAM principal via a mount
            # target. `guard_clients` writes a stricter policy instead: TLS only, IAM clients only.
            allow_anonymous_access=True,
        )
        file_system.add_to_resource_policy(
            iam.PolicyStatement(
                sid="DenyUnencryptedTransport",
                effect=iam.Effect.DENY,
                principals=[iam.AnyPrincipal()],
                actions=["*"],
                conditions={"Bool": {"aws:SecureTransport": "false"}},
            )
        )
        return file_system

    def _access_point(self, construct_id: str, path: str) -> efs.AccessPoint:
        # Every client acts as uid/gid 1000, so files written by tasks and by Lambdas share one owner
        # and no client ever needs root to clean up after another.
        return self.file_system.add_access_point(
            construct_id,
            path=path,
            posix_user=efs.PosixUser(uid=C.POSIX_UID, gid=C.POSIX_GID),
            create_acl=efs.Acl(
                owner_uid=C.POSIX_UID, owner_gid=C.POSIX_GID, permissions=C.FOLDER_PERMISSIONS
            ),
        )

    @property
    def slot_access_point_arns(self) -> list[str]:
        return [ap.access_point_arn for ap in self.slot_access_points.values()]

    def guard_clients(self, *, runs_manager: iam.IRole) -> None:
        """File-system policy: guard rails that hold whatever any identity policy says.

        It names no access point: the policy is a property of the file system, which every access
        point references, so naming one would be a circular dependency in CloudFormation. Each
        client's own identity policy grants ClientMount/ClientWrite through exactly its access
        point(s) instead (an Allow in either policy suffices), and this policy adds nothing to them:
        no Allow at all, so anonymous (non-IAM) NFS clients are refused, no write that bypasses an
        access point, and root for the runs manager only. A shared Allow here would also defeat the
        run slots' separation, since one statement for every slot would let one slot's role mount
        another's.
        """
        self.file_system.add_to_resource_policy(
            iam.PolicyStatement(
                sid="DenyRootExceptRunsManager",
                effect=iam.Effect.DENY,
                principals=[iam.AnyPrincipal()],
                actions=[CLIENT_ROOT],
                conditions={"ArnNotEquals": {"aws:PrincipalArn": runs_manager.role_arn}},
            )
        )
        self.file_system.add_to_resource_policy(
            iam.PolicyStatement(
                sid="DenyWritesWithoutAccessPoint",
                effect=iam.Effect.DENY,
                principals=[iam.AnyPrincipal()],
                actions=[CLIENT_WRITE],
                conditions={"Null": {ACCESS_POINT_ARN: "true"}},
            )
        )

    # --- S3 --------------------------------------------------------------------------------------

    def _access_log_bucket(self) -> s3.Bucket:
        return s3.Bucket(
            self,
            "AccessLogs",
            encryption=s3.BucketEncryption.S3_MANAGED,  # S3 server access logging requires SSE-S3
            enforce_ssl=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            removal_policy=RemovalPolicy.RETAIN,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-access-logs",
                    expiration=Duration.days(C.ACCESS_LOG_RETENTION_DAYS),
                    abort_incomplete_multipart_upload_after=Duration.days(C.ABORT_MULTIPART_AFTER_DAYS),
                )
            ],
        )

    def _bucket(self, name: str, *, versioned: bool) -> s3.Bucket:
        return s3.Bucket(
            self,
            name,
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            versioned=versioned,
            server_access_logs_bucket=self.access_log_bucket,
            server_access_logs_prefix=f"{C.ACCESS_LOGS_PREFIX}{name.lower()}/",
            removal_policy=RemovalPolicy.RETAIN,
            lifecycle_rules=[self._lifecycle(versioned)],
        )

    def _lifecycle(self, versioned: bool) -> s3.LifecycleRule:
        """Log archives expire after the retention; results keep their current version, old versions expire."""
        days = self._settings.retention_days.run_files
        to_ia = (
            [
                s3.Transition(
                    storage_class=s3.StorageClass.INFREQUENT_ACCESS,
                    transition_after=Duration.days(C.INFREQUENT_ACCESS_AFTER_DAYS),
                )
            ]
            if days > C.INFREQUENT_ACCESS_AFTER_DAYS or versioned
            else None
        )
        return s3.LifecycleRule(
            id="retention",
            transitions=to_ia,
            expiration=None if versioned else Duration.days(days),
            noncurrent_version_expiration=Duration.days(days) if versioned else None,
            abort_incomplete_multipart_upload_after=Duration.days(C.ABORT_MULTIPART_AFTER_DAYS),
        )

    # --- DynamoDB --------------------------------------------------------------------------------

    @staticmethod
    def _run_indexes() -> list[dynamodb.GlobalSecondaryIndexPropsV2]:
        return [
            string_index(C.RUNS_BY_WORKFLOW_INDEX, C.RUNS_WORKFLOW_ATTR, C.RUNS_CREATED_ATTR),
            string_index(C.RUNS_BY_STATUS_INDEX, C.RUNS_STATUS_ATTR, C.RUNS_CREATED_ATTR),
            # Sparse (only runs with a content key), and all a duplicate check reads: key, time, status.
            string_index(
                C.RUNS_BY_CONTENT_KEY_INDEX,
                C.RUNS_CONTENT_KEY_ATTR,
                C.RUNS_CREATED_ATTR,
                include=[C.RUNS_STATUS_ATTR],
            ),
        ]

    def _table(
        self,
        name: str,
        partition_key: str,
        *,
        sort_key: str | None = None,
        indexes: list[dynamodb.GlobalSecondaryIndexPropsV2] | None = None,
        ttl: str | None = None,
    ) -> dynamodb.TableV2:
        return node_table(self, f"{name}Table", partition_key, sort_key=sort_key, indexes=indexes, ttl=ttl)


def string_index(
    name: str, partition_key: str, sort_key: str, *, include: Sequence[str] | None = None
) -> dynamodb.GlobalSecondaryIndexPropsV2:
    """A GSI on string keys projecting every attribute, or only the keys and ``include``."""
    string = dynamodb.AttributeType.STRING
    return dynamodb.GlobalSecondaryIndexPropsV2(
        index_name=name,
        partition_key=dynamodb.Attribute(name=partition_key, type=string),
        sort_key=dynamodb.Attribute(name=sort_key, type=string),
        projection_type=dynamodb.ProjectionType.INCLUDE if include else None,
        non_key_attributes=list(include) if include else None,
    )


def node_table(
    scope: Construct,
    construct_id: str,
    partition_key: str,
    *,
    sort_key: str | None = None,
    indexes: list[dynamodb.GlobalSecondaryIndexPropsV2] | None = None,
    ttl: str | None = None,
) -> dynamodb.TableV2:
    """On-demand, encrypted, point-in-time recovery, kept when the stack is deleted; string keys."""
    string = dynamodb.AttributeType.STRING
    return dynamodb.TableV2(
        scope,
        construct_id,
        partition_key=dynamodb.Attribute(name=partition_key, type=string),
        sort_key=dynamodb.Attribute(name=sort_key, type=string) if sort_key else None,
        global_secondary_indexes=indexes,
        billing=dynamodb.Billing.on_demand(),
        encryption=dynamodb.TableEncryptionV2.aws_managed_key(),
        point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
            point_in_time_recovery_enabled=True
        ),
        time_to_live_attribute=ttl,
        removal_policy=RemovalPolicy.RETAIN,
    )
