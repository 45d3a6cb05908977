"""Interactive notebook sessions (the ``interactive`` setting): built only when it is on.

A session is a Fargate task in a run slot (``pennflow.node.notebooks``), its task definition
registered at start and kept per slot like processors' (pennflow.node.taskdefs). This construct gives
what those task definitions and the session's life need:

- a task role per run slot (``<node>_<region>_<slot>-notebook``): its own slot's access point
  read-write, layer versions read-only (the processors' shared policy) and the four ``ssmmessages``
  actions ECS Exec needs (AWS, "Monitor Amazon ECS containers with ECS Exec": task IAM permissions);
- a security group with no ingress rule at all: the server listens on 127.0.0.1 in the task and is
  reached through SSM port forwarding only; no task gets a public IP (RunTask assignPublicIp DISABLED);
- the sessions' log group (retention and encryption as the node's other log groups);
- the ``notebooks`` function (the runs-manager role: ending a session frees a slot, which may start
  queued runs) and the rule that hands it a session task's STOPPED event;
- the notebook users' managed policy, attached to ``notebookPrincipals``: calling the /notebooks
  routes and /runs reads, ``ssm:StartSession`` with the ``AWS-StartPortForwardingSession`` document
  on this cluster's tasks tagged as sessions (``aws:ResourceTag/pennflow:notebook``), ending their
  own sessions, and reading a session's token parameter. The API checks the same principals.
"""

from __future__ import annotations

from aws_cdk import CfnOutput, Duration, Stack, Tags
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from constructs import Construct

from stacks import constants as C
from stacks.compute import NodeCompute
from stacks.functions import NodeFunctions
from stacks.log_groups import node_log_group
from stacks.nag import acknowledge, acknowledge_wildcards
from stacks.network import HTTPS_PORT, NFS_PORT, NodeNetwork
from stacks.settings import NodeSettings
from stacks.storage import CLIENT_MOUNT, CLIENT_WRITE, VIA_MOUNT_TARGET, NodeStorage

FUNCTION = "notebooks"
# ECS Exec's agent in the task opens its channels to Session Manager with these (no resource types).
EXEC_ACTIONS = [
    "ssmmessages:CreateControlChannel",
    "ssmmessages:CreateDataChannel",
    "ssmmessages:OpenControlChannel",
    "ssmmessages:OpenDataChannel",
]
SESSION_ROUTES = (
    ("POST", "notebooks"),
    ("GET", "notebooks/*"),
    ("POST", "notebooks/*/stop"),
    ("GET", "runs*"),
)


class NodeNotebooks(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: NodeSettings,
        network: NodeNetwork,
        storage: NodeStorage,
        compute: NodeCompute,
        functions: NodeFunctions,
        api: apigw.RestApi,
    ) -> None:
        super().__init__(scope, construct_id)
        self._settings, self._storage, self._compute, self._functions = settings, storage, compute, functions
        self.security_group = ec2.SecurityGroup(
            self,
            "SessionSecurityGroup",
            vpc=network.vpc,
            description="Notebook sessions: no ingress (reached through SSM port forwarding only)",
            allow_all_outbound=True,  # pip installs from PyPI, the Pennsieve API, SSM's channels
        )
        network.efs_security_group.add_ingress_rule(
            self.security_group, ec2.Port.tcp(NFS_PORT), "NFS from notebook sessions"
        )
        endpoints = network.node.try_find_child("EndpointsSecurityGroup")
        if isinstance(endpoints, ec2.SecurityGroup):
            endpoints.add_ingress_rule(
                self.security_group, ec2.Port.tcp(HTTPS_PORT), "HTTPS from notebook sessions"
            )
            if settings.nat_gateways == 0:  # without a NAT, ECS Exec's channels need their endpoint
                network.vpc.add_interface_endpoint(
                    "SsmMessagesEndpoint",
                    service=ec2.InterfaceVpcEndpointAwsService.SSM_MESSAGES,
                    subnets=network.private_subnets,
                    security_groups=[endpoints],
                    open=False,
                    private_dns_enabled=True,
                )
        self.log_group = node_log_group(self, "SessionLogs", settings)
        self.log_group.grant_write(compute.execution_role)
        self.exec_policy = self._exec_policy()
        self.task_roles = {
            slot: self._task_role(index, slot) for index, slot in enumerate(storage.slot_access_points)
        }
        self.function = functions.add_function(
            FUNCTION,
            functions.roles["runs_manager"],
            {**functions.node_environment(), **self.environment()},
            in_vpc=True,
            root=True,
        )
        self.manager_policy = self._manager_policy()
        self.rule = events.Rule(
            self,
            "SessionStoppedRule",
            description="pennflow: a notebook session's task stopped -> notebooks",
            event_pattern=events.EventPattern(
                source=["aws.ecs"],
                detail_type=["ECS Task State Change"],
                detail={
                    "clusterArn": [compute.cluster.cluster_arn],
                    "group": [C.NOTEBOOK_GROUP],
                    "lastStatus": ["STOPPED"],
                },
            ),
            targets=[
                targets.LambdaFunction(
                    self.function,
                    dead_letter_queue=functions.dead_letter_queue,
                    retry_attempts=8,
                    max_event_age=Duration.hours(C.EVENT_MAX_AGE_HOURS),
                )
            ],
        )
        self._allow_api(api)
        self.users_policy = self._users_policy(api)
        output = CfnOutput(
            self,
            "NotebookUsersPolicyArn",
            value=self.users_policy.managed_policy_arn,
            description="Attach to any other role that should start and connect to notebook sessions",
        )
        output.override_logical_id("NotebookUsersPolicyArn")

    def environment(self) -> dict[str, str]:
        s = self._settings
        values = {
            "notebook_image": s.notebook_image,
            "notebook_python": s.notebook_python,
            "notebook_idle_minutes": str(s.notebook_idle_minutes),
            "notebook_security_group": self.security_group.security_group_id,
            "notebook_log_group": self.log_group.log_group_name,
            "notebook_family_prefix": C.notebook_family_prefix(s.node_name),
        }
        return {C.ENV[key]: value for key, value in values.items()}

    # --- the sessions' own roles --------------------------------------------------------------------

    def _exec_policy(self) -> iam.ManagedPolicy:
        statement = iam.PolicyStatement(sid="EcsExecChannels", actions=EXEC_ACTIONS, resources=["*"])
        policy = iam.ManagedPolicy(
            self,
            "SessionExecPolicy",
            description="pennflow notebook sessions: the ECS Exec agent's Session Manager channels",
            statements=[statement],
        )
        acknowledge(
            policy,
            "AwsSolutions-IAM5[Resource::*]",
            "The ssmmessages channel actions ECS Exec's agent needs have no resource types (Service "
            "Authorization Reference); AWS's ECS Exec guide grants them on '*' for the task role.",
        )
        return policy

    def _task_role(self, index: int, slot: str) -> iam.Role:
        """A slot's session role: that slot's folder on EFS, layers read-only, ECS Exec; no other AWS API."""
        storage, stack = self._storage, Stack.of(self)
        own_slot = iam.PolicyStatement(
            sid="OwnRunSlotReadWrite",
            actions=[CLIENT_MOUNT, CLIENT_WRITE],
            resources=[storage.file_system.file_system_arn],
            conditions={
                **VIA_MOUNT_TARGET,
                "StringEquals": {
                    "elasticfilesystem:AccessPointArn": storage.slot_access_points[slot].access_point_arn
                },
            },
        )
        role = iam.Role(
            self,
            f"Slot{index:02d}SessionRole",
            role_name=C.slot_role_name(self._settings.node_name, stack.region, slot, C.NOTEBOOK_ROLE_KIND),
            description=f"{slot} notebook sessions: this slot's folder on EFS, layers read-only, ECS Exec",
            assumed_by=iam.ServicePrincipal(
                "ecs-tasks.amazonaws.com",
                conditions={
                    "StringEquals": {"aws:SourceAccount": stack.account},
                    "ArnLike": {"aws:SourceArn": stack.format_arn(service="ecs", resource="*")},
                },
            ),
            inline_policies={"RunSlot": iam.PolicyDocument(statements=[own_slot])},
            managed_policies=[self._compute.layers_read_policy, self.exec_policy],
        )
        Tags.of(role).add(C.SLOT_TAG_KEY, slot)
        return role

    # --- the runs manager, starting and ending sessions ---------------------------------------------

    def _manager_policy(self) -> iam.ManagedPolicy:
        """RunTask of session task definitions only, tagged as it runs; the rest (register, describe,
        stop, pass the slot roles, slot parameters) the runs manager has for processors already."""
        stack, cluster = Stack.of(self), self._compute.cluster
        run = iam.PolicyStatement(
            sid="RunSessionTasks",
            actions=["ecs:RunTask"],
            resources=[
                stack.format_arn(
                    service="ecs",
                    resource="task-definition",
                    resource_name=f"{C.notebook_family_prefix(self._settings.node_name)}*:*",
                )
            ],
            conditions={"ArnEquals": {"ecs:cluster": cluster.cluster_arn}},
        )
        tag = iam.PolicyStatement(
            sid="TagSessionTasksAtRun",
            actions=["ecs:TagResource"],
            resources=[
                stack.format_arn(service="ecs", resource="task", resource_name=f"{cluster.cluster_name}/*")
            ],
            conditions={"StringEquals": {"ecs:CreateAction": "RunTask"}},
        )
        policy = iam.ManagedPolicy(
            self,
            "SessionManagerPolicy",
            description="pennflow runs manager: start notebook session tasks",
            statements=[run, tag],
            roles=[self._functions.roles["runs_manager"]],
        )
        acknowledge_wildcards(
            policy,
            run,
            "Session task definitions are registered at start, content-addressed (family '<node>_nb-<hash>'); "
            "the pattern is that prefix and the condition this node's cluster.",
        )
        acknowledge_wildcards(
            policy,
            tag,
            "A session's task is tagged with its run id as RunTask creates it; the task id is known only then, "
            "and the condition allows tagging at creation only, on this cluster.",
        )
        return policy

    # --- the API ---------------------------------------------------------------------------------

    def _allow_api(self, api: apigw.RestApi) -> None:
        functions, compute, stack = self._functions, self._compute, Stack.of(self)
        handler = functions["api"]
        values = {
            "notebooks_function": functions.name_of(FUNCTION),
            "notebook_principals": ",".join(self._settings.notebook_principals),
            "notebook_python": self._settings.notebook_python,
            "notebook_idle_minutes": str(self._settings.notebook_idle_minutes),
            "cluster": compute.cluster.cluster_arn,
            "slot_parameter_prefix": C.slot_parameter_prefix(self._settings.node_name),
        }
        for key, value in values.items():
            handler.add_environment(C.ENV[key], value)
        describe = iam.PolicyStatement(
            sid="DescribeSessionTasks",
            actions=["ecs:DescribeTasks"],
            resources=[
                stack.format_arn(
                    service="ecs", resource="task", resource_name=f"{compute.cluster.cluster_name}/*"
                )
            ],
            conditions={"ArnEquals": {"ecs:cluster": compute.cluster.cluster_arn}},
        )
        invoke = iam.PolicyStatement(
            sid="HandSessionsOn", actions=["lambda:InvokeFunction"], resources=[self.function.function_arn]
        )
        policy = iam.ManagedPolicy(
            self,
            "ApiSessionsPolicy",
            description="pennflow API: hand sessions to the notebooks function, read their tasks",
            statements=[invoke, describe],
            roles=[functions.roles["api"]],
        )
        acknowledge_wildcards(
            policy,
            describe,
            "GET /notebooks/{id} describes the session's task (its container's runtime id is the SSM target); "
            "task ids exist only at runtime, and the resource and condition keep it to this cluster.",
        )

    # --- who may use sessions ----------------------------------------------------------------------

    def _users_policy(self, api: apigw.RestApi) -> iam.ManagedPolicy:
        stack, compute = Stack.of(self), self._compute
        routes = iam.PolicyStatement(
            sid="CallSessionRoutes",
            actions=["execute-api:Invoke"],
            resources=[api.arn_for_execute_api(method, f"/{path}") for method, path in SESSION_ROUTES],
        )
        session_tasks = stack.format_arn(
            service="ecs", resource="task", resource_name=f"{compute.cluster.cluster_name}/*"
        )
        document = stack.format_arn(
            service="ssm", account="", resource="document", resource_name=C.PORT_FORWARDING_DOCUMENT
        )
        forward = iam.PolicyStatement(
            sid="PortForwardToSessionTasks",
            actions=["ssm:StartSession"],
            resources=[session_tasks],
            conditions={"StringLike": {f"aws:ResourceTag/{C.NOTEBOOK_TAG_KEY}": "*"}},
        )
        with_document = iam.PolicyStatement(
            sid="PortForwardingDocumentOnly",
            actions=["ssm:StartSession"],
            resources=[document],
            conditions={"BoolIfExists": {"ssm:SessionDocumentAccessCheck": "true"}},
        )
        own_sessions = iam.PolicyStatement(
            sid="EndOwnSessions",
            actions=["ssm:TerminateSession", "ssm:ResumeSession"],
            resources=[stack.format_arn(service="ssm", resource="session", resource_name="${aws:userid}-*")],
        )
        token = iam.PolicyStatement(
            sid="ReadSessionTokens",
            actions=["ssm:GetParameter"],
            resources=[
                stack.format_arn(
                    service="ssm",
                    resource="parameter",
                    resource_name=(
                        f"{C.slot_parameter_prefix(self._settings.node_name).strip('/')}/*/{C.NOTEBOOK_TOKEN_PARAMETER}"
                    ),
                )
            ],
        )
        policy = iam.ManagedPolicy(
            self,
            "NotebookUsersPolicy",
            description=f"pennflow {self._settings.node_name}: start, follow and connect to notebook sessions",
            statements=[routes, forward, with_document, own_sessions, token],
        )
        for index, arn in enumerate(self._settings.notebook_principals):
            kind = arn.split(":", 5)[5].split("/", 1)[0]
            if kind == "role":
                policy.attach_to_role(iam.Role.from_role_arn(self, f"NotebookUser{index:02d}", arn))
            else:
                policy.attach_to_user(iam.User.from_user_arn(self, f"NotebookUser{index:02d}", arn))
        for statement, reason in (
            (routes, "The session routes take a run id in the path, known at runtime; the patterns are the "
             "/notebooks routes and the /runs reads of this API's stage only."),
            (forward, "Session tasks exist only at runtime: the pattern is this cluster's tasks, and the "
             "condition allows only tasks tagged pennflow:notebook (RunTask tags sessions, not processors)."),
            (own_sessions, "Session Manager names a session '<caller's user id>-<random>'; the pattern is the "
             "caller's own sessions, so a user can end only the port forwarding it started."),
            (token, "Each run slot has its session's token parameter, slots numbered at runtime; the pattern "
             "is the node's slot parameters' notebook-token leaf, read only."),
        ):  # fmt: skip
            acknowledge_wildcards(policy, statement, reason)
        return policy
