"""The run-lifecycle Lambda functions (lambdas/<name>.py) and what each one may touch.

Each function has its own role, granted only the actions its step of a run needs:
api (REST entry) -> prepare (slot lease, task definitions, start) -> status (events) -> finalize
(logs, slot release); cancel stops a run; list_batches splits a scattered processor's inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from aws_cdk import ArnFormat, CfnDynamicReference, CfnDynamicReferenceService, Duration, IgnoreMode, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from stacks import constants as C
from stacks.compute import NodeCompute
from stacks.log_groups import node_log_group
from stacks.nag import acknowledge, acknowledge_wildcards
from stacks.network import NodeNetwork
from stacks.settings import NodeSettings
from stacks.storage import CLIENT_MOUNT, CLIENT_ROOT, CLIENT_WRITE, VIA_MOUNT_TARGET, NodeStorage

PROJECT_ROOT = Path(__file__).resolve().parents[1]

READ = ["dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query"]
WRITE = ["dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:ConditionCheckItem"]
UPDATE = ["dynamodb:GetItem", "dynamodb:Query", "dynamodb:UpdateItem"]
IDEMPOTENCY = ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"]
ENI_ACTIONS = [
    "ec2:CreateNetworkInterface",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeSubnets",
    "ec2:DeleteNetworkInterface",
    "ec2:AssignPrivateIpAddresses",
    "ec2:UnassignPrivateIpAddresses",
]


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
    ) -> None:
        super().__init__(scope, construct_id)
        self._settings = settings
        self._network = network
        self._storage = storage
        self._compute = compute
        self.dead_letter_queue = self._dead_letter_queue()
        code = lambda_.Code.from_asset(
            str(PROJECT_ROOT), exclude=list(C.LAMBDA_ASSET_EXCLUDES), ignore_mode=IgnoreMode.GIT
        )
        layers = self._layers(settings)
        self.functions = {name: self._function(name, code, layers) for name in C.LAMBDA_NAMES}
        self._grant_api()
        self._grant_prepare()
        self._grant_status()
        self._grant_finalize()
        self._grant_cancel()

    def __getitem__(self, name: str) -> lambda_.Function:
        return self.functions[name]

    # --- construction ----------------------------------------------------------------------------

    def _dead_letter_queue(self) -> sqs.Queue:
        queue = sqs.Queue(
            self,
            "DeadLetterQueue",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=Duration.days(14),
        )
        return queue

    def _layers(self, settings: NodeSettings) -> list[lambda_.ILayerVersion]:
        powertools_arn = (
            settings.powertools_layer_arn
            or CfnDynamicReference(CfnDynamicReferenceService.SSM, C.POWERTOOLS_LAYER_PARAMETER).to_string()
        )
        layers = [lambda_.LayerVersion.from_layer_version_arn(self, "Powertools", powertools_arn)]
        layers += [
            lambda_.LayerVersion.from_layer_version_arn(self, f"Dependencies{i}", arn)
            for i, arn in enumerate(settings.dependency_layer_arns)
        ]
        return layers

    def _function(
        self, name: str, code: lambda_.Code, layers: list[lambda_.ILayerVersion]
    ) -> lambda_.Function:
        construct_name = "".join(part.title() for part in name.split("_"))
        role = iam.Role(
            self,
            f"{construct_name}Role",
            description=f"pennflow {name} function",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
        )
        log_group = node_log_group(self, f"{construct_name}Logs", self._settings)
        log_group.grant_write(role)
        in_vpc = name in C.EFS_LAMBDAS
        is_async = name in C.ASYNC_LAMBDAS
        reserved = C.RESERVED_CONCURRENCY.get(name) if self._settings.reserve_concurrency else None
        network_policy = self._network_interfaces_policy(construct_name, role) if in_vpc else None
        function = lambda_.Function(
            self,
            construct_name,
            description=f"pennflow run lifecycle: {name}",
            runtime=lambda_.Runtime.PYTHON_3_12,
            architecture=lambda_.Architecture.ARM_64,
            handler=f"lambdas.{name}.handler",
            code=code,
            layers=layers,
            role=role,
            memory_size=C.LAMBDA_MEMORY_MB,
            timeout=Duration.seconds(C.LAMBDA_TIMEOUT_SECONDS[name]),
            tracing=lambda_.Tracing.ACTIVE,
            log_group=log_group,
            environment=self._environment(),
            reserved_concurrent_executions=reserved,
            vpc=self._network.vpc if in_vpc else None,
            vpc_subnets=self._network.private_subnets if in_vpc else None,
            security_groups=[self._network.lambda_security_group] if in_vpc else None,
            filesystem=self._runs_mount(root=name == "prepare") if in_vpc else None,
            dead_letter_queue=self.dead_letter_queue if is_async else None,
            retry_attempts=C.ASYNC_RETRY_ATTEMPTS if is_async else None,
            max_event_age=Duration.hours(C.EVENT_MAX_AGE_HOURS) if is_async else None,
        )
        if network_policy is not None:
            function.node.add_dependency(network_policy)
        acknowledge_wildcards(
            role.node.find_child("DefaultPolicy"),
            iam.PolicyStatement(actions=["xray:PutTraceSegments"], resources=["*"]),
            "X-Ray PutTraceSegments and PutTelemetryRecords have no resource-level permissions; active tracing "
            "needs them on '*' (this is the statement CDK adds for Tracing.ACTIVE).",
        )
        acknowledge(
            function,
            "AwsSolutions-L1",
            "The functions run on python3.12 on purpose: the Powertools layer is pinned to its python3.12 build "
            "and the project's supported interpreters; moving runtimes is a deliberate, tested upgrade.",
        )
        return function

    def _network_interfaces_policy(self, construct_name: str, role: iam.Role) -> iam.Policy:
        policy = iam.Policy(
            self,
            f"{construct_name}NetworkInterfaces",
            roles=[role],
            statements=[iam.PolicyStatement(actions=ENI_ACTIONS, resources=["*"])],
        )
        acknowledge(
            policy,
            "AwsSolutions-IAM5[Resource::*]",
            "A VPC-attached function manages its own network interfaces; EC2 Describe* and the ENI actions Lambda "
            "performs do not support resource-level permissions (same scope as AWSLambdaVPCAccessExecutionRole).",
        )
        return policy

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

    def _environment(self) -> dict[str, str]:
        s, storage, compute, network = self._settings, self._storage, self._compute, self._network
        values = {
            "node": s.node_name,
            "runs_table": storage.runs_table.table_name,
            "workflows_table": storage.workflows_table.table_name,
            "processors_table": storage.processors_table.table_name,
            "slots_table": storage.slots_table.table_name,
            "idempotency_table": storage.idempotency_table.table_name,
            "results_bucket": storage.results_bucket.bucket_name,
            "log_bucket": storage.log_bucket.bucket_name,
            "cluster": compute.cluster.cluster_arn,
            "processor_log_group": compute.processor_log_group.log_group_name,
            "execution_role": compute.execution_role.role_arn,
            "processor_role": compute.processor_role.role_arn,
            "builtin_role": compute.builtin_role.role_arn,
            "file_system": storage.file_system.file_system_id,
            "runs_access_point": storage.runs_access_point.access_point_id,
            "layers_access_point": storage.layers_access_point.access_point_id,
            "runs_mount": C.LAMBDA_RUNS_MOUNT,
            "run_slots": str(s.run_slots),
            "subnets": ",".join(network.private_subnet_ids),
            "task_security_group": network.task_security_group.security_group_id,
            "task_family_prefix": C.task_family_prefix(s.node_name),
            "state_machine_prefix": C.state_machine_prefix(s.node_name),
            "pennsieve_secret": compute.pennsieve_secret.secret_arn,
            "layer_price_standard": str(s.layer_storage_prices.standard),
            "layer_price_ia": str(s.layer_storage_prices.infrequent_access),
        }
        return {
            **{C.ENV[key]: value for key, value in values.items()},
            "POWERTOOLS_SERVICE_NAME": s.node_name,  # also the `service` dimension of custom metrics
            "POWERTOOLS_METRICS_NAMESPACE": C.METRICS_NAMESPACE,
            "POWERTOOLS_LOG_LEVEL": "INFO",
        }

    # --- grants ----------------------------------------------------------------------------------

    def _allow(self, name: str, actions: Sequence[str], resources: Sequence[str], **conditions: dict) -> None:
        self.functions[name].add_to_role_policy(
            iam.PolicyStatement(
                actions=list(actions), resources=list(resources), conditions=conditions or None
            )
        )

    def _allow_table(
        self, name: str, table: dynamodb.TableV2, actions: Sequence[str], indexes: Sequence[str] = ()
    ) -> None:
        index_arns = [f"{table.table_arn}/index/{index}" for index in indexes]
        self._allow(name, actions, [table.table_arn, *index_arns])

    def _state_machine_arn(self, resource: str, suffix: str) -> str:
        prefix = C.state_machine_prefix(self._settings.node_name)
        return Stack.of(self).format_arn(
            service="states",
            resource=resource,
            resource_name=f"{prefix}{suffix}",
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )

    def _grant_api(self) -> None:
        storage = self._storage
        run_indexes = (C.RUNS_BY_WORKFLOW_INDEX, C.RUNS_BY_STATUS_INDEX)
        self._allow_table("api", storage.runs_table, READ + WRITE, run_indexes)
        for table in (storage.workflows_table, storage.processors_table):
            self._allow_table("api", table, [*READ, *WRITE, "dynamodb:Scan"])
        self._allow_table("api", storage.slots_table, ["dynamodb:GetItem", "dynamodb:Scan"])
        self._allow_table("api", storage.idempotency_table, IDEMPOTENCY)
        # Exact function ARNs (grant_invoke would add every version and alias, ':*').
        self._allow(
            "api", ["lambda:InvokeFunction"], [self.functions[t].function_arn for t in ("prepare", "cancel")]
        )
        self.functions["api"].add_environment(
            C.ENV["prepare_function"], self.functions["prepare"].function_name
        )
        self.functions["api"].add_environment(
            C.ENV["cancel_function"], self.functions["cancel"].function_name
        )

    def _grant_prepare(self) -> None:
        storage, compute = self._storage, self._compute
        self._allow_table("prepare", storage.runs_table, UPDATE + ["dynamodb:PutItem"])
        self._allow_table("prepare", storage.slots_table, [*READ, *WRITE, "dynamodb:Scan"])
        for table in (storage.workflows_table, storage.processors_table):
            self._allow_table("prepare", table, READ)
        self._allow_table("prepare", storage.idempotency_table, IDEMPOTENCY)
        self._allow_task_definitions()
        roles = [compute.execution_role, *compute.task_roles]
        self._allow(
            "prepare",
            ["iam:PassRole"],
            [role.role_arn for role in roles],
            StringEquals={"iam:PassedToService": "ecs-tasks.amazonaws.com"},
        )
        self._allow_layer_access_points()

    def _allow_task_definitions(self) -> None:
        """Task definitions are registered per processor content hash at runtime (DESIGN §4)."""
        policy = iam.Policy(
            self,
            "PrepareTaskDefinitions",
            roles=[self.functions["prepare"].role],
            statements=[
                iam.PolicyStatement(
                    actions=["ecs:RegisterTaskDefinition", "ecs:DescribeTaskDefinition"], resources=["*"]
                ),
                iam.PolicyStatement(
                    actions=["ecs:TagResource"],
                    resources=["*"],
                    conditions={"StringEquals": {"ecs:CreateAction": "RegisterTaskDefinition"}},
                ),
            ],
        )
        acknowledge(
            policy,
            "AwsSolutions-IAM5[Resource::*]",
            "ecs:RegisterTaskDefinition and ecs:DescribeTaskDefinition do not support resource-level permissions "
            "(AWS service authorization reference); tagging is allowed only while registering.",
        )

    def _allow_layer_access_points(self) -> None:
        """Per-layer access points are created at runtime with a runtime tag naming this node, and only
        access points carrying that tag may be deleted (never the stack's own runs, layers and slots)."""
        stack = Stack.of(self)
        node_tag = {C.RUNTIME_ACCESS_POINT_TAG_KEY: self._settings.node_name}
        file_system_arn = self._storage.file_system.file_system_arn
        any_access_point = stack.format_arn(
            service="elasticfilesystem", resource="access-point", resource_name="*"
        )
        self._allow(
            "prepare",
            ["elasticfilesystem:CreateAccessPoint"],
            [file_system_arn],
            StringEquals={f"aws:RequestTag/{key}": value for key, value in node_tag.items()},
        )
        self._allow(
            "prepare",
            ["elasticfilesystem:DescribeAccessPoints"],
            [file_system_arn],
        )
        tag_on_create = iam.PolicyStatement(
            actions=["elasticfilesystem:TagResource"],
            resources=[any_access_point],
            conditions={"StringEquals": {"elasticfilesystem:CreateAction": "CreateAccessPoint"}},
        )
        delete_tagged = iam.PolicyStatement(
            actions=["elasticfilesystem:DeleteAccessPoint"],
            resources=[any_access_point],
            conditions={"StringEquals": {f"aws:ResourceTag/{key}": value for key, value in node_tag.items()}},
        )
        role = self.functions["prepare"].role
        for statement in (tag_on_create, delete_tagged):
            role.add_to_principal_policy(statement)
        acknowledge_wildcards(
            role.node.find_child("DefaultPolicy"),
            delete_tagged,
            "Layer access points are created at runtime, so their ids are unknown at deploy; tagging is allowed "
            "only while creating one, and deleting only those carrying this node's runtime tag.",
        )

    def _grant_status(self) -> None:
        self._allow_table("status", self._storage.runs_table, UPDATE)

    def _grant_finalize(self) -> None:
        storage, compute = self._storage, self._compute
        self._allow_table("finalize", storage.runs_table, UPDATE + ["dynamodb:PutItem"])
        self._allow_table("finalize", storage.slots_table, UPDATE)
        self._allow(
            "finalize",
            ["logs:GetLogEvents", "logs:FilterLogEvents"],
            [compute.processor_log_group.log_group_arn],
        )
        archive = iam.PolicyStatement(
            actions=["s3:PutObject", "s3:AbortMultipartUpload"],
            resources=[storage.log_bucket.arn_for_objects(f"{C.RESULTS_PREFIX}*")],
        )
        role = self.functions["finalize"].role
        role.add_to_principal_policy(archive)
        acknowledge_wildcards(
            role.node.find_child("DefaultPolicy"),
            archive,
            "Finalize archives each run's processor logs under runs/<run_id>/ in the log bucket; the run id is "
            "only known at runtime, and the prefix keeps the role out of the rest of the bucket.",
        )

    def _grant_cancel(self) -> None:
        compute = self._compute
        self._allow_table("cancel", self._storage.runs_table, UPDATE)
        stop_tasks = iam.PolicyStatement(
            actions=["ecs:StopTask", "ecs:DescribeTasks"],
            resources=[
                Stack.of(self).format_arn(
                    service="ecs", resource="task", resource_name=f"{compute.cluster.cluster_name}/*"
                )
            ],
            conditions={"ArnEquals": {"ecs:cluster": compute.cluster.cluster_arn}},
        )
        stop_executions = iam.PolicyStatement(
            actions=["states:StopExecution", "states:DescribeExecution"],
            resources=[self._state_machine_arn("execution", "*:*")],
        )
        role = self.functions["cancel"].role
        for statement in (stop_tasks, stop_executions):
            role.add_to_principal_policy(statement)
        policy = role.node.find_child("DefaultPolicy")
        acknowledge_wildcards(
            policy,
            stop_tasks,
            "Cancel stops the run's ECS tasks, whose ids exist only at runtime; the resource is limited to tasks "
            "of this node's cluster and the ecs:cluster condition repeats that limit.",
        )
        acknowledge_wildcards(
            policy,
            stop_executions,
            "Cancel stops a run's execution, named at runtime, of any of this node's state machines; the ARN "
            "pattern keeps it to state machines carrying the node's name prefix.",
        )

    def allow_orchestration(self, *, state_machine_role: iam.IRole, state_machine_log_group_arn: str) -> None:
        """Let the API create and update the node's state machines at runtime and prepare start them."""
        api = self.functions["api"]
        manage = iam.PolicyStatement(
            actions=[
                "states:CreateStateMachine",
                "states:UpdateStateMachine",
                "states:DescribeStateMachine",
                "states:TagResource",
            ],
            resources=[self._state_machine_arn("stateMachine", "*")],
        )
        start = iam.PolicyStatement(
            actions=["states:StartExecution"], resources=[self._state_machine_arn("stateMachine", "*")]
        )
        describe = iam.PolicyStatement(
            actions=["states:DescribeExecution", "states:StopExecution"],
            resources=[self._state_machine_arn("execution", "*:*")],
        )
        for statement in (manage, describe):
            api.role.add_to_principal_policy(statement)
        self.functions["prepare"].role.add_to_principal_policy(start)
        self._allow(
            "api",
            ["iam:PassRole"],
            [state_machine_role.role_arn],
            StringEquals={"iam:PassedToService": "states.amazonaws.com"},
        )
        api.add_environment(C.ENV["state_machine_role"], state_machine_role.role_arn)
        api.add_environment(C.ENV["state_machine_log_group"], state_machine_log_group_arn)
        for name in ("finalize", "list_batches"):
            api.add_environment(C.ENV[f"{name}_function"], self.functions[name].function_arn)
        reason = (
            "The API registers workflows at runtime as state machines named '<node>-<workflow>', and reads or "
            "stops their executions; the ARN pattern keeps it to this node's name prefix."
        )
        for statement in (manage, describe):
            acknowledge_wildcards(api.role.node.find_child("DefaultPolicy"), statement, reason)
        acknowledge_wildcards(
            self.functions["prepare"].role.node.find_child("DefaultPolicy"),
            start,
            "Prepare starts the execution of a run on the workflow's state machine, chosen at runtime among "
            "this node's state machines (name prefix '<node>-').",
        )
