"""Layer jobs: the layer-jobs function (lambdas/layer_jobs.py), the task definitions it runs, their
roles, and the EventBridge rule that brings their stopped tasks back to it (pennflow.layers.jobs).

Only the layer-job task roles write layers (and the persistent-layer data target, which compute
grants): EFS ClientWrite through the /layers access point, mounted at /mnt/layers-rw. The pip
step runs under a role without the Pennsieve secret; only the populate task's role may read it.
The function itself stays out of the VPC: it starts tasks, reads their manifests from S3 and
manages the per-version access points.
"""

from __future__ import annotations

from aws_cdk import Aws, Duration, Stack
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from stacks import constants as C
from stacks.compute import NodeCompute
from stacks.functions import READ, WRITE, NodeFunctions
from stacks.nag import acknowledge, acknowledge_wildcards
from stacks.settings import NodeSettings
from stacks.storage import CLIENT_MOUNT, CLIENT_WRITE, VIA_MOUNT_TARGET, NodeStorage

LAYERS_VOLUME = "layers"
TASK_MODULE = ["python", "-m", "pennflow.layers.populate_task"]
TARGET_RETRY_ATTEMPTS = 8
LAYER_TAG = "pennflow:layer"  # pennflow.layers.efs.LAYER_TAG: every version access point has it


class NodeLayers(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: NodeSettings,
        storage: NodeStorage,
        compute: NodeCompute,
        functions: NodeFunctions,
    ) -> None:
        super().__init__(scope, construct_id)
        self._settings = settings
        self._storage = storage
        self._compute = compute
        self._functions = functions

        self.job_role = self._task_role(
            "JobTaskRole", "Layer builds and cleans: /layers read-write, job files"
        )
        self.populate_role = self._task_role(
            "PopulateTaskRole", "Layer populates: /layers read-write, job files, the Pennsieve secret"
        )
        self.populate_role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="ReadPennsieveSecret",
                actions=["secretsmanager:GetSecretValue"],
                resources=[compute.pennsieve_secret.secret_arn],
            )
        )
        self.build_task = self._build_task()
        self.populate_task = self._populate_task()
        self.clean_task = self._clean_task()

        role = functions.add_role("layer_jobs")
        self.function = functions.add_function("layer_jobs", role, self._environment())
        self._grant_function(role)
        self.rule = self._stopped_tasks_rule()
        self._wire_api()
        # A persistent-layer data target (a built-in task) reserves and publishes its layer version here.
        compute.builtin_policy.add_statements(
            iam.PolicyStatement(
                sid="PublishPersistentLayer",
                actions=["lambda:InvokeFunction"],
                resources=[self.function.function_arn],
            )
        )

    @property
    def task_roles(self) -> list[iam.Role]:
        """The roles that write under /layers (the file-system policy must allow them)."""
        return [self.job_role, self.populate_role]

    @property
    def task_definitions(self) -> dict[str, ecs.FargateTaskDefinition]:
        return {"build": self.build_task, "populate": self.populate_task, "clean": self.clean_task}

    # --- task roles ------------------------------------------------------------------------------

    def _task_role(self, construct_id: str, description: str) -> iam.Role:
        stack = Stack.of(self)
        role = iam.Role(
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
        storage = self._storage
        role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="LayersReadWrite",
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
        job_files = iam.PolicyStatement(
            sid="LayerJobFiles",
            actions=["s3:GetObject", "s3:PutObject"],
            resources=[storage.log_bucket.arn_for_objects(f"{C.LAYER_JOBS_PREFIX}*")],
        )
        role.add_to_principal_policy(job_files)
        acknowledge_wildcards(
            role.node.find_child("DefaultPolicy"),
            job_files,
            "Each job's spec and manifest are keyed layer-jobs/<layer>/v<n>/<token>/, names known only at "
            "runtime; the prefix keeps the task out of the rest of the log archive bucket.",
        )
        return role

    # --- task definitions ------------------------------------------------------------------------

    def _task_definition(self, construct_id: str, kind: str, size: dict[str, int], role: iam.Role):
        storage = self._storage
        return ecs.FargateTaskDefinition(
            self,
            construct_id,
            family=C.layer_job_family(self._settings.node_name, kind),
            cpu=size["cpu"],
            memory_limit_mib=size["memory"],
            task_role=role,
            execution_role=self._compute.execution_role,
            volumes=[
                ecs.Volume(
                    name=LAYERS_VOLUME,
                    efs_volume_configuration=ecs.EfsVolumeConfiguration(
                        file_system_id=storage.file_system.file_system_id,
                        transit_encryption="ENABLED",
                        authorization_config=ecs.AuthorizationConfig(
                            access_point_id=storage.layers_access_point.access_point_id, iam="ENABLED"
                        ),
                    ),
                )
            ],
        )

    def _container(
        self,
        task: ecs.FargateTaskDefinition,
        name: str,
        image: str,
        *,
        command: list[str] | None = None,
        essential: bool = True,
        memory: int | None = None,
        environment: dict[str, str] | None = None,
    ) -> ecs.ContainerDefinition:
        container = task.add_container(
            name,
            container_name=name,
            image=ecs.ContainerImage.from_registry(image),
            command=command,
            essential=essential,
            memory_reservation_mib=memory,
            environment=environment,
            logging=ecs.LogDrivers.aws_logs(
                stream_prefix=C.LAYER_JOBS_LOG_PREFIX, log_group=self._compute.processor_log_group
            ),
        )
        container.add_mount_points(
            ecs.MountPoint(container_path=C.LAYERS_RW_MOUNT, source_volume=LAYERS_VOLUME, read_only=False)
        )
        return container

    def _build_task(self) -> ecs.FargateTaskDefinition:
        """stage (built-in) -> build (the layer-build image, pip) -> report (built-in)."""
        task = self._task_definition("BuildTask", "build", C.LAYER_BUILD_TASK, self.job_role)
        builtin, sidecar = self._settings.builtin_image, C.LAYER_SIDECAR_MEMORY_MIB
        stage = self._container(
            task, "stage", builtin, command=[*TASK_MODULE, "stage"], essential=False, memory=sidecar
        )
        build = self._container(
            task,
            "build",
            self._settings.layer_build_image,
            essential=False,
            memory=C.LAYER_BUILD_TASK["memory"] - 2 * sidecar,
        )
        report = self._container(task, "report", builtin, command=[*TASK_MODULE, "report"], memory=sidecar)
        build.add_container_dependencies(
            ecs.ContainerDependency(container=stage, condition=ecs.ContainerDependencyCondition.SUCCESS)
        )
        # COMPLETE, not SUCCESS: a failed pip still leaves a manifest with its error to report.
        report.add_container_dependencies(
            ecs.ContainerDependency(container=build, condition=ecs.ContainerDependencyCondition.COMPLETE)
        )
        return task

    def _populate_task(self) -> ecs.FargateTaskDefinition:
        task = self._task_definition("PopulateTask", "populate", C.LAYER_POPULATE_TASK, self.populate_role)
        self._container(
            task,
            "populate",
            self._settings.builtin_image,
            command=[*TASK_MODULE, "populate"],
            environment={C.ENV["pennsieve_secret"]: self._compute.pennsieve_secret.secret_arn},
        )
        acknowledge(
            task,
            "AwsSolutions-ECS2",
            "The only variable is the Pennsieve secret's ARN, a name the task resolves through Secrets Manager "
            "at runtime; the credentials themselves never enter the task definition or its environment.",
        )
        return task

    def _clean_task(self) -> ecs.FargateTaskDefinition:
        task = self._task_definition("CleanTask", "clean", C.LAYER_CLEAN_TASK, self.job_role)
        self._container(task, "clean", self._settings.builtin_image, command=[*TASK_MODULE, "clean"])
        return task

    # --- the function ----------------------------------------------------------------------------

    def _environment(self) -> dict[str, str]:
        """The node's environment (names and ids) without the Pennsieve secret, which the function never
        reads, plus the job task definitions."""
        environment = {
            name: value
            for name, value in self._functions.node_environment().items()
            if name != C.ENV["pennsieve_secret"]
        }
        for kind, task in self.task_definitions.items():
            environment[C.ENV[f"layer_{kind}_task"]] = task.task_definition_arn
        return environment

    def _grant_function(self, role: iam.Role) -> None:
        functions, storage, compute = self._functions, self._storage, self._compute
        stack = Stack.of(self)
        cluster = compute.cluster
        functions.allow_table(role, storage.layers_table, READ + WRITE)
        functions.allow(
            role,
            ["ecs:RunTask"],
            [task.task_definition_arn for task in self.task_definitions.values()],
            ArnEquals={"ecs:cluster": cluster.cluster_arn},
        )
        functions.allow(
            role,
            ["iam:PassRole"],
            [r.role_arn for r in (compute.execution_role, *self.task_roles)],
            StringEquals={"iam:PassedToService": "ecs-tasks.amazonaws.com"},
        )
        functions.allow_wildcard(
            role,
            iam.PolicyStatement(
                actions=["ecs:TagResource"],
                resources=[
                    stack.format_arn(
                        service="ecs", resource="task", resource_name=f"{cluster.cluster_name}/*"
                    )
                ],
                conditions={"StringEquals": {"ecs:CreateAction": "RunTask"}},
            ),
            "A job's task is tagged with its layer and version as RunTask creates it; the task id is only known "
            "then, and the condition allows tagging at creation on this cluster only.",
        )
        functions.allow(role, ["elasticfilesystem:CreateAccessPoint"], [storage.file_system.file_system_arn])
        access_points = stack.format_arn(
            service="elasticfilesystem", resource="access-point", resource_name="*"
        )
        # Tagging only as part of creating an access point; the statement below explains the pattern.
        functions.allow(
            role,
            ["elasticfilesystem:TagResource"],
            [access_points],
            StringEquals={"elasticfilesystem:CreateAction": "CreateAccessPoint"},
        )
        functions.allow_wildcard(
            role,
            iam.PolicyStatement(
                actions=["elasticfilesystem:DeleteAccessPoint"],
                resources=[access_points],
                conditions={
                    "StringEquals": {f"aws:ResourceTag/{C.NODE_TAG_KEY}": self._settings.node_name},
                    "Null": {f"aws:ResourceTag/{LAYER_TAG}": "false"},
                },
            ),
            "Each published layer version gets an access point created at runtime (ids unknown here), tagged as "
            "it is created; the tag conditions limit deletion to this node's layer access points, never the runs "
            "or slot access points.",
        )
        functions.allow_wildcard(
            role,
            iam.PolicyStatement(
                actions=["s3:PutObject", "s3:GetObject"],
                resources=[storage.log_bucket.arn_for_objects(f"{C.LAYER_JOBS_PREFIX}*")],
            ),
            "The function writes each job's spec and reads its manifest under layer-jobs/<layer>/v<n>/<token>/; "
            "the names are runtime values, and the prefix keeps it out of the rest of the bucket.",
        )
        # A task that died before writing its manifest leaves no key: only a role that may list the
        # prefix gets NoSuchKey (the job then fails with its log tail) rather than a 403 retried forever.
        functions.allow(
            role,
            ["s3:ListBucket"],
            [storage.log_bucket.bucket_arn],
            StringLike={"s3:prefix": [f"{C.LAYER_JOBS_PREFIX}*"]},
        )
        functions.allow(role, ["logs:GetLogEvents"], [compute.processor_log_group.log_group_arn])

    def _stopped_tasks_rule(self) -> events.Rule:
        """STOPPED tasks of this node's layer-job task definitions, on its cluster."""
        families = Stack.of(self).format_arn(
            service="ecs",
            resource="task-definition",
            resource_name=C.layer_job_family(self._settings.node_name),
        )
        return events.Rule(
            self,
            "TaskStoppedRule",
            description="pennflow: stopped layer-job tasks -> layer jobs",
            event_pattern=events.EventPattern(
                source=["aws.ecs"],
                detail_type=["ECS Task State Change"],
                detail={
                    "clusterArn": [self._compute.cluster.cluster_arn],
                    "lastStatus": ["STOPPED"],
                    "taskDefinitionArn": events.Match.prefix(families),
                },
            ),
            targets=[
                targets.LambdaFunction(
                    self.function,
                    dead_letter_queue=self._functions.dead_letter_queue,
                    retry_attempts=TARGET_RETRY_ATTEMPTS,
                    max_event_age=Duration.hours(C.EVENT_MAX_AGE_HOURS),
                )
            ],
        )

    def _wire_api(self) -> None:
        """The API's layer routes hand builds, populates and removals to this function."""
        functions = self._functions
        api: lambda_.Function = functions["api"]
        api.add_environment(C.ENV["layer_jobs_function"], functions.name_of("layer_jobs"))
        functions.allow(functions.roles["api"], ["lambda:InvokeFunction"], [self.function.function_arn])
