"""The run-lifecycle Lambda functions (lambdas/<name>.py) and what each one may touch.

A run goes api (REST entry) -> prepare (queue, slot lease, task definitions, start) -> status
(events) -> finalize (logs, provenance, slot release); cancel stops it; list_batches splits a
scattered processor's inputs and download fetches a data source's files. prepare, status, finalize
and cancel may all start the next queued run when a slot frees (pennflow.node.lifecycle), so they share
the runs-manager role; the API, list_batches and download each have a role of their own.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from aws_cdk import (
    Annotations,
    ArnFormat,
    CfnDynamicReference,
    CfnDynamicReferenceService,
    Duration,
    IgnoreMode,
    Stack,
)
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from stacks import constants as C
from stacks.compute import NodeCompute
from stacks.log_groups import node_log_group
from stacks.nag import acknowledge, acknowledge_wildcards
from stacks.network import NodeNetwork
from stacks.settings import NodeSettings
from stacks.storage import CLIENT_MOUNT, CLIENT_ROOT, CLIENT_WRITE, VIA_MOUNT_TARGET, NodeStorage

READ = ["dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query"]
WRITE = ["dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:ConditionCheckItem"]
SCAN = ["dynamodb:Scan"]
RUN_OBJECT_WRITE = ["s3:PutObject", "s3:AbortMultipartUpload"]
ENI_ACTIONS = [
    "ec2:CreateNetworkInterface",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeSubnets",
    "ec2:DeleteNetworkInterface",
    "ec2:AssignPrivateIpAddresses",
    "ec2:UnassignPrivateIpAddresses",
]
# What CreateStateMachine/UpdateStateMachine with a logging configuration require of the caller.
LOG_DELIVERY_ACTIONS = [
    "logs:CreateLogDelivery",
    "logs:GetLogDelivery",
    "logs:UpdateLogDelivery",
    "logs:DeleteLogDelivery",
    "logs:ListLogDeliveries",
    "logs:PutResourcePolicy",
    "logs:DescribeResourcePolicies",
    "logs:DescribeLogGroups",
]
# Function name -> the role it runs with.
ROLES = {
    "api": "api",
    **dict.fromkeys(C.RUNS_MANAGER_LAMBDAS, "runs_manager"),
    "list_batches": "list_batches",
    "download": "download",
}


class NodeFunctions(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: NodeSettings,
        network: NodeNetwork,
        storage: NodeStorage,
        compute: NodeCompute,
        project_root: Path,
    ) -> None:
        super().__init__(scope, construct_id)
        self._settings = settings
        self._network = network
        self._storage = storage
        self._compute = compute
        self.dead_letter_queue = sqs.Queue(
            self,
            "DeadLetterQueue",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=Duration.days(14),
        )
        self._code = lambda_.Code.from_asset(
            str(project_root), exclude=list(C.LAMBDA_ASSET_EXCLUDES), ignore_mode=IgnoreMode.GIT
        )
        self.dependencies_layer = self._dependencies_layer(settings, project_root / C.DEPENDENCY_LAYER_DIR)
        self._lambda_layers = self._layers(settings)
        self._network_interfaces: dict[str, iam.Policy] = {}
        self._state_machine_environment: dict[str, str] = {}  # set by allow_orchestration
        self.roles: dict[str, iam.Role] = {}
        for role in dict.fromkeys(ROLES.values()):
            self.add_role(role, in_vpc=any(ROLES[name] == role for name in C.EFS_LAMBDAS))
        self.functions: dict[str, lambda_.Function] = {}
        for name in C.LAMBDA_NAMES:
            role = ROLES[name]
            environment = self.api_environment() if name == "api" else self.node_environment()
            in_vpc = name in C.EFS_LAMBDAS
            self.add_function(name, self.roles[role], environment, in_vpc=in_vpc, root=role == "runs_manager")
        self._grant_api()
        self._grant_runs_manager()
        self._grant_list_batches()
        self._grant_download()

    def __getitem__(self, name: str) -> lambda_.Function:
        return self.functions[name]

    def name_of(self, name: str) -> str:
        return C.function_name(self._settings.node_name, name)

    # --- construction ----------------------------------------------------------------------------

    def add_role(self, role: str, *, in_vpc: bool = False) -> iam.Role:
        """A Lambda role. Its default policy never holds a '*' resource but X-Ray's (added by CDK for
        tracing); every other unscoped statement goes into a policy of its own, with its own reason."""
        construct_name = _pascal(role)
        created = iam.Role(
            self,
            f"{construct_name}Role",
            description=f"pennflow {role.replace('_', ' ')} functions",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
        )
        acknowledge(
            created,
            "AwsSolutions-IAM5[Resource::*]",
            "X-Ray PutTraceSegments and PutTelemetryRecords have no resource-level permissions; active tracing "
            "needs them on '*' (the statement CDK adds to the default policy for Tracing.ACTIVE).",
        )
        if in_vpc:
            self._network_interfaces[created.node.id] = self.allow_unscoped(
                created,
                f"{construct_name}NetworkInterfaces",
                [iam.PolicyStatement(actions=ENI_ACTIONS, resources=["*"])],
                "A VPC-attached function manages its own network interfaces; EC2 Describe* and the ENI actions "
                "Lambda performs do not support resource-level permissions (as AWSLambdaVPCAccessExecutionRole).",
            )
        self.roles[role] = created
        return created

    def add_function(
        self,
        name: str,
        role: iam.Role,
        environment: dict[str, str],
        *,
        in_vpc: bool = False,
        root: bool = False,
    ) -> lambda_.Function:
        """A function running lambdas/<name>.py: python3.12 on arm64, traced, with its own log group, the
        project asset and the layers; in the VPC with the runs access point mounted when `in_vpc`."""
        construct_name = _pascal(name)
        log_group = node_log_group(self, f"{construct_name}Logs", self._settings)
        log_group.grant_write(role)
        is_async = name in C.ASYNC_LAMBDAS
        reserved = C.RESERVED_CONCURRENCY.get(name) if self._settings.reserve_concurrency else None
        function = lambda_.Function(
            self,
            construct_name,
            function_name=self.name_of(name),
            description=f"pennflow: {name}",
            runtime=lambda_.Runtime.PYTHON_3_12,
            architecture=lambda_.Architecture.ARM_64,
            handler=f"lambdas.{name}.handler",
            code=self._code,
            layers=self._lambda_layers,
            role=role,
            memory_size=C.LAMBDA_MEMORY_OVERRIDES_MB.get(name, C.LAMBDA_MEMORY_MB),
            timeout=Duration.seconds(C.LAMBDA_TIMEOUT_SECONDS[name]),
            tracing=lambda_.Tracing.ACTIVE,
            log_group=log_group,
            environment={**environment, **self._powertools_environment()},
            reserved_concurrent_executions=reserved,
            vpc=self._network.vpc if in_vpc else None,
            vpc_subnets=self._network.private_subnets if in_vpc else None,
            security_groups=[self._network.lambda_security_group] if in_vpc else None,
            filesystem=self._runs_mount(root=root) if in_vpc else None,
            dead_letter_queue=self.dead_letter_queue if is_async else None,
            retry_attempts=C.ASYNC_RETRY_ATTEMPTS if is_async else None,
            max_event_age=Duration.hours(C.EVENT_MAX_AGE_HOURS) if is_async else None,
        )
        if in_vpc:  # Lambda checks the role's ENI permissions when it creates the function
            function.node.add_dependency(self._network_interfaces[role.node.id])
        acknowledge(
            function,
            "AwsSolutions-L1",
            "The functions run on python3.12 on purpose: the Powertools layer is pinned to its python3.12 build "
            "and the project's supported interpreters; moving runtimes is a deliberate, tested upgrade.",
        )
        self.functions[name] = function
        return function

    def _dependencies_layer(self, settings: NodeSettings, folder: Path) -> lambda_.LayerVersion | None:
        if (folder / "python").is_dir():
            return lambda_.LayerVersion(
                self,
                "Dependencies",
                code=lambda_.Code.from_asset(str(folder)),
                compatible_runtimes=[lambda_.Runtime.PYTHON_3_12],
                compatible_architectures=[lambda_.Architecture.ARM_64],
                description="pennflow: PyYAML and requests for python3.12 on arm64",
            )
        if not settings.dependency_layer_arns:
            Annotations.of(self).add_warning_v2(
                "pennflow:lambda-dependencies",
                f"No {C.DEPENDENCY_LAYER_DIR}/python folder and no dependencyLayerArns: the functions will miss "
                f"PyYAML and requests. Before deploying, run: {C.DEPENDENCY_LAYER_BUILD}",
            )
        return None

    def _layers(self, settings: NodeSettings) -> list[lambda_.ILayerVersion]:
        powertools_arn = (
            settings.powertools_layer_arn
            or CfnDynamicReference(CfnDynamicReferenceService.SSM, C.POWERTOOLS_LAYER_PARAMETER).to_string()
        )
        layers = [lambda_.LayerVersion.from_layer_version_arn(self, "Powertools", powertools_arn)]
        if self.dependencies_layer is not None:
            layers.append(self.dependencies_layer)
        layers += [
            lambda_.LayerVersion.from_layer_version_arn(self, f"ExtraDependencies{i}", arn)
            for i, arn in enumerate(settings.dependency_layer_arns)
        ]
        return layers

    def _runs_mount(self, *, root: bool) -> lambda_.FileSystem:
        """Mount the /runs access point; unlike `FileSystem.from_efs_access_point`, every grant is scoped
        to this file system and this access point."""
        storage = self._storage
        actions = [CLIENT_MOUNT, CLIENT_WRITE] + ([CLIENT_ROOT] if root else [])
        return lambda_.FileSystem(
            arn=storage.runs_access_point.access_point_arn,
            local_mount_path=C.LAMBDA_RUNS_MOUNT,
            dependency=[storage.file_system.mount_targets_available],
            policies=[
                iam.PolicyStatement(
                    actions=actions,
                    resources=[storage.file_system.file_system_arn],
                    conditions={
                        **VIA_MOUNT_TARGET,
                        "StringEquals": {
                            "elasticfilesystem:AccessPointArn": storage.runs_access_point.access_point_arn
                        },
                    },
                )
            ],
        )

    # --- environment (names and ids only; see lambdas/settings.py) --------------------------------

    def _powertools_environment(self) -> dict[str, str]:
        return {
            "POWERTOOLS_SERVICE_NAME": self._settings.node_name,  # the `service` dimension of custom metrics
            "POWERTOOLS_METRICS_NAMESPACE": C.METRICS_NAMESPACE,
            "POWERTOOLS_LOG_LEVEL": "INFO",
        }

    def api_environment(self) -> dict[str, str]:
        """What ApiSettings reads (also given to the functions that start runs the way the API does)."""
        s, storage = self._settings, self._storage
        values = {
            "node": s.node_name,
            "runs_table": storage.runs_table.table_name,
            "workflows_table": storage.workflows_table.table_name,
            "state_machine_prefix": C.api_state_machine_prefix(s.node_name),  # what POST /workflows creates
            "processors_table": storage.processors_table.table_name,
            "idempotency_table": storage.idempotency_table.table_name,
            "layers_table": storage.layers_table.table_name,
            "results_bucket": storage.results_bucket.bucket_name,  # runs' download manifests
            "pennsieve_secret": self._compute.pennsieve_secret.secret_arn,  # lists a run's input files
            "prepare_function": self.name_of("prepare"),
            "cancel_function": self.name_of("cancel"),
            "resume_function": self.name_of("resume"),
            "cost_prices": s.cost_prices.model_dump_json(by_alias=True, exclude_none=True),
            "layer_price_standard": str(s.layer_storage_prices.standard),
            "layer_price_ia": str(s.layer_storage_prices.infrequent_access),
            "layer_ia_after_days": str(
                C.EFS_IA_AFTER_DAYS
            ),  # the file system's lifecycle, for cost estimates
        }
        if s.run_cost_ceiling is not None:
            values["run_cost_ceiling"] = str(s.run_cost_ceiling)
        return {**{C.ENV[key]: value for key, value in values.items()}, **self._state_machine_environment}

    def node_environment(self) -> dict[str, str]:
        """What NodeSettings reads: the whole node, for the functions that may start queued runs."""
        s, storage, compute, network = self._settings, self._storage, self._compute, self._network
        values = {
            "node": s.node_name,
            "runs_table": storage.runs_table.table_name,
            "workflows_table": storage.workflows_table.table_name,
            "state_machine_prefix": C.state_machine_prefix(s.node_name),
            "slots_table": storage.slots_table.table_name,
            "layers_table": storage.layers_table.table_name,
            "results_bucket": storage.results_bucket.bucket_name,
            "log_bucket": storage.log_bucket.bucket_name,
            "cluster": compute.cluster.cluster_arn,
            "processor_log_group": compute.processor_log_group.log_group_name,
            "execution_role": compute.execution_role.role_arn,
            "slot_task_roles": compute.slot_role_arn_template,
            "builtin_image": s.builtin_image,
            "file_system": storage.file_system.file_system_id,
            "runs_access_point": storage.runs_access_point.access_point_id,
            "layers_access_point": storage.layers_access_point.access_point_id,
            "runs_mount": C.LAMBDA_RUNS_MOUNT,
            "run_slots": str(s.run_slots),
            "run_retention_days": str(s.retention_days.run_files),
            "failed_run_retention_days": str(s.failed_run_retention_days),
            "subnets": ",".join(network.private_subnet_ids),
            "task_security_group": network.task_security_group.security_group_id,
            "task_family_prefix": C.task_family_prefix(s.node_name),
            "pennsieve_secret": compute.pennsieve_secret.secret_arn,
            "slot_parameter_prefix": C.slot_parameter_prefix(s.node_name),
            "cost_prices": s.cost_prices.model_dump_json(by_alias=True, exclude_none=True),
            # Pennsieve's DEPLOYMENT_MODE: private subnets with a NAT are "secure", without "compliant"
            "deployment_mode": "secure" if s.nat_gateways else "compliant",
            "pennsieve_api_host": s.pennsieve_api_host,
            "pennsieve_api2_host": s.pennsieve_api2_host,
            "pennsieve_environment": s.pennsieve_environment,
            "pennsieve_organization_id": s.pennsieve_organization_id,
            "finalize_function": self.name_of("finalize"),
            "prepare_function": self.name_of("prepare"),  # resumes a preparation handed on (out of time)
            "list_batches_function": self.name_of("list_batches"),
            "download_function": self.name_of("download"),
            "layer_jobs_function": self.name_of("layer_jobs"),
        }
        return {C.ENV[key]: value for key, value in values.items()}

    # --- grants ----------------------------------------------------------------------------------

    def allow(
        self, role: iam.Role, actions: Sequence[str], resources: Sequence[str], **conditions: dict
    ) -> None:
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=list(actions), resources=list(resources), conditions=conditions or None
            )
        )

    def allow_table(
        self, role: iam.Role, table: dynamodb.TableV2, actions: Sequence[str], indexes: Sequence[str] = ()
    ) -> None:
        index_arns = [f"{table.table_arn}/index/{index}" for index in indexes]
        self.allow(role, actions, [table.table_arn, *index_arns])

    def allow_wildcard(self, role: iam.Role, statement: iam.PolicyStatement, reason: str) -> None:
        """A statement whose resource is a pattern (never '*'), acknowledged finding by finding."""
        role.add_to_principal_policy(statement)
        acknowledge_wildcards(role.node.find_child("DefaultPolicy"), statement, reason)

    def allow_unscoped(
        self, role: iam.Role, construct_id: str, statements: list[iam.PolicyStatement], reason: str
    ) -> iam.Policy:
        """Actions without resource-level permissions: a policy of their own, acknowledged with why."""
        policy = iam.Policy(self, construct_id, roles=[role], statements=statements)
        acknowledge(policy, "AwsSolutions-IAM5[Resource::*]", reason)
        return policy

    def states_arn(self, resource: str, suffix: str) -> str:
        return Stack.of(self).format_arn(
            service="states",
            resource=resource,
            resource_name=f"{C.state_machine_prefix(self._settings.node_name)}{suffix}",
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )

    def _grant_api(self) -> None:
        storage = self._storage
        run_indexes = (C.RUNS_BY_WORKFLOW_INDEX, C.RUNS_BY_STATUS_INDEX, C.RUNS_BY_CONTENT_KEY_INDEX)
        self.allow_table(self.roles["api"], storage.runs_table, READ + WRITE, run_indexes)
        self.allow_run_keys(self.roles["api"])
        for table in (storage.workflows_table, storage.processors_table, storage.layers_table):
            self.allow_table(self.roles["api"], table, READ + WRITE + SCAN)
        self.allow_table(self.roles["api"], storage.idempotency_table, READ + WRITE)
        # Exact function ARNs (grant_invoke would add every version and alias, ':*').
        self.allow(
            self.roles["api"],
            ["lambda:InvokeFunction"],
            [self.functions[t].function_arn for t in ("prepare", "cancel", "resume")],
        )
        self.allow_wildcard(
            self.roles["api"],
            iam.PolicyStatement(
                actions=[
                    "states:CreateStateMachine",
                    "states:UpdateStateMachine",
                    "states:DescribeStateMachine",
                    "states:PublishStateMachineVersion",
                    "states:TagResource",
                ],
                resources=[self.states_arn("stateMachine", f"{C.API_STATE_MACHINE_MARK}*")],
            ),
            "The API registers workflows at runtime as state machines named '<node>_api_<workflow>' (and their "
            "published versions); the pattern keeps it to that namespace, off the stack's own state machines.",
        )
        self.allow_wildcard(
            self.roles["api"],
            iam.PolicyStatement(
                actions=["states:DescribeExecution", "states:StopExecution"],
                resources=[self.states_arn("execution", "*:*")],
            ),
            "Runs are executions named by their run id on the node's state machines; the API reads and stops "
            "them by run id, within this node's state machine name prefix.",
        )
        self.allow_unscoped(
            self.roles["api"],
            "ApiLogDelivery",
            [iam.PolicyStatement(actions=LOG_DELIVERY_ACTIONS, resources=["*"])],
            "Creating a state machine with logging makes the caller set up CloudWatch Logs vended-log "
            "delivery; those logs:*LogDelivery and resource-policy actions have no resource-level permissions.",
        )

    def allow_run_keys(self, role: iam.Role) -> None:
        """Keying a run (pennflow.data.content_key): list its dataset's files with the node's Pennsieve secret,
        read its images' digests and its layers' versions, and write the download manifest its prepare
        step reuses. Whoever starts runs (the API, a trigger) keys them the same way."""
        self.allow_table(role, self._storage.layers_table, READ)
        self.allow(role, ["secretsmanager:GetSecretValue"], [self._compute.pennsieve_secret.secret_arn])
        self.allow_wildcard(
            role,
            iam.PolicyStatement(
                actions=["s3:PutObject"],
                resources=[self._storage.results_bucket.arn_for_objects(f"{C.RESULTS_PREFIX}*")],
            ),
            "Starting a run writes its download manifest to runs/<run_id>/manifest.json; the run id is "
            "made per request, and the prefix keeps the starter out of the rest of the results bucket.",
        )
        self.allow_wildcard(
            role,
            iam.PolicyStatement(
                actions=["ecr:DescribeImages"],
                resources=[
                    Stack.of(self).format_arn(
                        service="ecr", region="*", resource="repository", resource_name="*"
                    )
                ],
            ),
            "A run's content key covers each processor's image digest; the images are ECR repositories named "
            "by workflows registered at runtime, in any region of this account. DescribeImages reads metadata only.",
        )

    def _grant_runs_manager(self) -> None:
        storage, compute = self._storage, self._compute
        role = self.roles["runs_manager"]
        self.allow_table(role, storage.runs_table, READ + WRITE)
        self.allow_table(role, storage.slots_table, READ + WRITE + SCAN)
        self.allow_table(role, storage.layers_table, READ + WRITE)
        self.allow_table(role, storage.workflows_table, READ)
        self.allow_table(role, storage.processors_table, ["dynamodb:GetItem"])  # pinned images' manifests
        self.allow(role, ["elasticfilesystem:DescribeAccessPoints"], [storage.file_system.file_system_arn])
        self.allow(role, ["secretsmanager:GetSecretValue"], [compute.pennsieve_secret.secret_arn])
        self.allow_wildcard(
            role,
            iam.PolicyStatement(actions=["ssm:PutParameter"], resources=[compute.slot_parameters_arn]),
            "At lease time the runs manager writes the leased slot's run id and SESSION_TOKEN "
            "(pennflow.node.session_tokens); slots are numbered at runtime, so the resource is the node's "
            "slot-parameter path, and the only action is writing a value.",
        )
        self.allow(
            role, ["logs:GetLogEvents", "logs:FilterLogEvents"], [compute.processor_log_group.log_group_arn]
        )
        self.allow_wildcard(
            role,
            iam.PolicyStatement(
                actions=["iam:PassRole"],
                resources=[compute.execution_role.role_arn, compute.slot_roles_pattern],
                conditions={"StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}},
            ),
            "Task definitions name their run slot's task role; the pattern '<node>_<region>_*' is the fixed "
            "names of exactly this node's slot roles here (a node name holds no '_'), and nothing else.",
        )
        # A preparation out of time hands its run on to a new prepare invocation; the ARN is built from
        # the fixed name, since the prepare function itself depends on this role's policy.
        self.allow(
            role,
            ["lambda:InvokeFunction"],
            [
                Stack.of(self).format_arn(
                    service="lambda",
                    resource="function",
                    resource_name=self.name_of("prepare"),
                    arn_format=ArnFormat.COLON_RESOURCE_NAME,
                )
            ],
        )
        self._allow_task_definitions()
        self._allow_task_control()
        self._allow_executions()
        # prepare reuses the manifest the API wrote, and builds it when there is none: that fallback
        # needs to read it, and to list the prefix so that a missing key is NoSuchKey, not a 403.
        self._allow_run_objects(role, RUN_OBJECT_WRITE, (storage.results_bucket, storage.log_bucket))
        self._allow_run_objects(role, ["s3:GetObject"], (storage.results_bucket,), C.RUN_MANIFEST_KEYS)
        self._allow_run_listing(role)

    def _allow_task_definitions(self) -> None:
        """Task definitions are registered per processor content hash at runtime (DESIGN §4)."""
        self.allow_unscoped(
            self.roles["runs_manager"],
            "RunsManagerTaskDefinitions",
            [
                iam.PolicyStatement(
                    actions=["ecs:RegisterTaskDefinition", "ecs:DescribeTaskDefinition"], resources=["*"]
                ),
                iam.PolicyStatement(
                    actions=["ecs:TagResource"],
                    resources=["*"],
                    conditions={"StringEquals": {"ecs:CreateAction": "RegisterTaskDefinition"}},
                ),
            ],
            "ecs:RegisterTaskDefinition and ecs:DescribeTaskDefinition do not support resource-level permissions "
            "(AWS service authorization reference); tagging is allowed only while registering.",
        )

    def _allow_task_control(self) -> None:
        cluster = self._compute.cluster
        on_cluster = {"ArnEquals": {"ecs:cluster": cluster.cluster_arn}}
        tasks = Stack.of(self).format_arn(
            service="ecs", resource="task", resource_name=f"{cluster.cluster_name}/*"
        )
        self.allow_wildcard(
            self.roles["runs_manager"],
            iam.PolicyStatement(
                actions=["ecs:DescribeTasks", "ecs:StopTask"], resources=[tasks], conditions=on_cluster
            ),
            "A run's ECS tasks exist only at runtime: the runs manager checks they stopped before freeing a slot "
            "and stops them on cancel; the resource and the ecs:cluster condition keep it to this cluster.",
        )
        # The Service Authorization Reference lists ListTasks under container-instance, but a
        # ListTasks by cluster and family names no container instance: IAM authorizes it against
        # '*', so only a '*' statement allows it; the ecs:cluster condition keeps it to this cluster.
        self.allow_unscoped(
            self.roles["runs_manager"],
            "RunsManagerListTasks",
            [iam.PolicyStatement(actions=["ecs:ListTasks"], resources=["*"], conditions=on_cluster)],
            "ecs:ListTasks filtered by cluster and family is authorized on '*' (no container instance is "
            "named); the ecs:cluster condition keeps it to this node's cluster, to find a run's live tasks.",
        )

    def _allow_executions(self) -> None:
        self.allow_wildcard(
            self.roles["runs_manager"],
            iam.PolicyStatement(
                actions=["states:StartExecution"], resources=[self.states_arn("stateMachine", "*")]
            ),
            "A run starts on the published version of its workflow's state machine, chosen at runtime among this "
            "node's state machines (name prefix '<node>_').",
        )
        self.allow_wildcard(
            self.roles["runs_manager"],
            iam.PolicyStatement(
                actions=[
                    "states:StopExecution",
                    "states:DescribeExecution",
                    "states:GetExecutionHistory",
                    "states:RedriveExecution",
                ],
                resources=[self.states_arn("execution", "*:*")],
            ),
            "Cancel stops a run's execution, finalize reads its history to name the failed state, and a resume "
            "redrives it; the execution is named by the run id at runtime; the ARN pattern keeps it to the "
            "node's name prefix.",
        )

    def _allow_run_objects(
        self,
        role: iam.Role,
        actions: Sequence[str],
        buckets: Sequence[s3.IBucket],
        keys: str = f"{C.RESULTS_PREFIX}*",
    ) -> None:
        """S3 objects of runs live under runs/<run_id>/ (manifest, provenance, archived logs)."""
        self.allow_wildcard(
            role,
            iam.PolicyStatement(
                actions=list(actions), resources=[bucket.arn_for_objects(keys) for bucket in buckets]
            ),
            "Each run's objects (download manifest, provenance, archived logs) are keyed runs/<run_id>/...; the "
            "run id is only known at runtime and the prefix keeps the role out of the rest of the buckets.",
        )

    def _allow_run_listing(self, role: iam.Role) -> None:
        """ListBucket on the results bucket, for keys under runs/ only (S3 answers a GetObject of a
        missing key with NoSuchKey only to a caller that may list the bucket)."""
        self.allow(
            role,
            ["s3:ListBucket"],
            [self._storage.results_bucket.bucket_arn],
            StringLike={"s3:prefix": [f"{C.RESULTS_PREFIX}*"]},
        )

    def _grant_list_batches(self) -> None:
        storage = self._storage
        self.allow_table(self.roles["list_batches"], storage.slots_table, READ + SCAN)
        self.allow_table(self.roles["list_batches"], storage.runs_table, READ)
        self.allow_table(self.roles["list_batches"], storage.workflows_table, READ)
        self.allow_wildcard(
            self.roles["list_batches"],
            iam.PolicyStatement(
                actions=["s3:PutObject"],
                resources=[storage.results_bucket.arn_for_objects(f"{C.RESULTS_PREFIX}*")],
            ),
            "A scatter's batch list goes to runs/<run_id>/<processor_id>/batches.json, which its Distributed Map "
            "reads; the run id is only known at runtime and the prefix keeps the role out of the rest of the bucket.",
        )

    def _grant_download(self) -> None:
        # A batch lands in its run's slot folder: the function finds the slot the run holds
        # (pennflow.data.datasource.slot_task_path reads the slots with BatchGetItem), and never writes it.
        self.allow_table(self.roles["download"], self._storage.slots_table, READ)
        self.allow(
            self.roles["download"],
            ["secretsmanager:GetSecretValue"],
            [self._compute.pennsieve_secret.secret_arn],
        )
        self._allow_run_objects(self.roles["download"], ["s3:GetObject"], (self._storage.results_bucket,))

    def allow_orchestration(self, *, state_machine_role: iam.IRole, state_machine_log_group_arn: str) -> None:
        """The API creates state machines with the shared role; the runs manager passes it nothing."""
        self.allow(
            self.roles["api"],
            ["iam:PassRole"],
            [state_machine_role.role_arn],
            StringEquals={"iam:PassedToService": "states.amazonaws.com"},
        )
        self._state_machine_environment = {
            C.ENV["state_machine_role"]: state_machine_role.role_arn,
            C.ENV["state_machine_log_group"]: state_machine_log_group_arn,
        }
        for name, value in self._state_machine_environment.items():
            self.functions["api"].add_environment(name, value)


def _pascal(name: str) -> str:
    return "".join(part.title() for part in name.split("_"))
