"""computeType lambda: each run slot's processor-function role, the Lambda variant of every processor
build, and what the runs manager and the state machines may do with the functions.

The functions themselves are made at runtime (``pennflow.node.lambda_functions``: one per image digest,
slot and size, named ``<node>_fn-<slot>-<hash>``), so IAM names them by that prefix:

* each slot's function role (``<node>_<region>-fn_<slot>``, trusted by Lambda only) mounts that slot's
  access point and no other, reads that slot's run parameters (run id, SESSION_TOKEN) and no other,
  writes the processor log group (the bootstrap's per-invocation stream, named as an ECS task's), puts
  only ``pennflow.processor`` step events on the default bus and manages its network interfaces;
* the step events rule sends this node's functions' step events to the status function, the tracker
  of ECS task events (``pennflow.node.tracking``);
* the runs manager creates, reads, tags and deletes only ``<node>_fn-*`` functions, passes only the
  slot function roles, to Lambda only, and reads only the node's processor images;
* the state machines invoke only ``<node>_fn-*`` functions;
* the processor repository lets Lambda pull images for those functions only;
* the build project makes, after each image, ``FROM`` it the same image with the bootstrap
  (``pennflow/processors/lambda_bootstrap.py``, an S3 asset) as its entry point and the original
  ENTRYPOINT + CMD recorded beside it, and exports its digest (or why it could not: no python3).
"""

from __future__ import annotations

from pathlib import Path

from aws_cdk import ArnFormat, Duration, Stack, Tags
from aws_cdk import aws_codebuild as codebuild
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3_assets as s3_assets
from constructs import Construct

from pennflow.processors.lambda_bootstrap import EVENT_DETAIL_TYPE, EVENT_SOURCE
from stacks import constants as C
from stacks.compute import NodeCompute
from stacks.events import TARGET_RETRY_ATTEMPTS
from stacks.functions import ENI_ACTIONS, NodeFunctions
from stacks.nag import acknowledge_wildcards
from stacks.network import NodeNetwork
from stacks.settings import NodeSettings
from stacks.storage import CLIENT_MOUNT, CLIENT_WRITE, VIA_MOUNT_TARGET, NodeStorage

BOOTSTRAP = Path(__file__).resolve().parents[1] / "pennflow" / "processors" / "lambda_bootstrap.py"
# The variables pennflow.node.processor_builds reads from a finished build.
LAMBDA_EXPORTS = ["LAMBDA_IMAGE_DIGEST", "LAMBDA_IMAGE_PROBLEM"]
ENV_PREFIX, ENV_ROLE_TEMPLATE = C.ENV["processor_function_prefix"], C.ENV["processor_function_roles"]
FUNCTION_ACTIONS = [
    "lambda:CreateFunction",
    "lambda:GetFunction",
    "lambda:DeleteFunction",
    "lambda:TagResource",  # CreateFunction with Tags
    "lambda:ListTags",
]
PULL_FOR_LAMBDA = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]
VPC_DESCRIBE = ["ec2:DescribeSecurityGroups", "ec2:DescribeSubnets", "ec2:DescribeVpcs"]
PRUNE_EVENT = {"action": "pruneFunctions"}
PRUNE_EVERY_HOURS = 24

# Run after the image is pushed (bash, the project's shell; IMAGE is the pushed tag). Each step that
# cannot make the variant says why in LAMBDA_IMAGE_PROBLEM and leaves the build itself green: the
# image still runs on ECS, and pennflow.node.processor_builds fails only an app.yml that asks for lambda.
LAMBDA_VARIANT_COMMANDS = [
    'LAMBDA_IMAGE_DIGEST=""; LAMBDA_IMAGE_PROBLEM=""; mkdir -p lambda',
    "if ! docker run --rm --entrypoint python3 \"$IMAGE\" -c 'import sys; sys.exit(sys.version_info < (3, 8))'; "
    'then LAMBDA_IMAGE_PROBLEM="the image has no python3 (3.8 or later), which the Lambda bootstrap needs"; fi',
    'if [ -z "$LAMBDA_IMAGE_PROBLEM" ]; then '
    'aws s3 cp --quiet "s3://$BOOTSTRAP_BUCKET/$BOOTSTRAP_KEY" lambda/bootstrap.py && '
    "python3 -c 'import json, sys; e, c, w = (json.loads(a) for a in sys.argv[1:]); "
    'json.dump({"command": (e or []) + (c or []), "workdir": w or ""}, open("lambda/command.json", "w"))\' '
    '"$(docker inspect --format \'{{json .Config.Entrypoint}}\' "$IMAGE")" '
    '"$(docker inspect --format \'{{json .Config.Cmd}}\' "$IMAGE")" '
    '"$(docker inspect --format \'{{json .Config.WorkingDir}}\' "$IMAGE")" '
    '|| LAMBDA_IMAGE_PROBLEM="the image\'s command could not be read"; fi',
    'if [ -z "$LAMBDA_IMAGE_PROBLEM" ] && grep -q \'"command": \\[\\]\' lambda/command.json; '
    'then LAMBDA_IMAGE_PROBLEM="the image has no ENTRYPOINT or CMD to run"; fi',
    'if [ -z "$LAMBDA_IMAGE_PROBLEM" ]; then '
    "printf 'FROM %s\\nCOPY bootstrap.py command.json /opt/pennflow/\\n"
    'ENTRYPOINT ["python3", "/opt/pennflow/bootstrap.py"]\\nCMD []\\n\' "$IMAGE" > lambda/Dockerfile && '
    'docker build --quiet --tag "$IMAGE-lambda" lambda && docker push "$IMAGE-lambda" && '
    "LAMBDA_IMAGE_DIGEST=$(docker inspect --format '{{index .RepoDigests 0}}' \"$IMAGE-lambda\" | cut -d@ -f2) "
    '|| LAMBDA_IMAGE_PROBLEM="the Lambda variant of the image could not be built or pushed"; fi',
    'echo "lambda variant: ${LAMBDA_IMAGE_DIGEST:-none} ${LAMBDA_IMAGE_PROBLEM}"',
]


def function_prefix(node_name: str) -> str:
    return f"{C.node_prefix(node_name)}fn-"


def function_role_name(node_name: str, region: str, slot: str) -> str:
    """Outside the ECS slot roles' '<node>_<region>_*' pattern, so neither grant covers the other."""
    return f"{C.node_prefix(node_name)}{region}-fn_{slot}"


def bootstrap_asset(scope: Construct) -> s3_assets.Asset:
    return s3_assets.Asset(scope, "LambdaBootstrap", path=str(BOOTSTRAP))


def build_environment(asset: s3_assets.Asset) -> dict[str, codebuild.BuildEnvironmentVariable]:
    return {
        "BOOTSTRAP_BUCKET": codebuild.BuildEnvironmentVariable(value=asset.s3_bucket_name),
        "BOOTSTRAP_KEY": codebuild.BuildEnvironmentVariable(value=asset.s3_object_key),
    }


def allow_bootstrap_read(project: codebuild.Project, asset: s3_assets.Asset) -> None:
    """The build reads the bootstrap's one object (not the asset bucket, as ``asset.grant_read`` would)."""
    assert project.role is not None
    project.role.add_to_principal_policy(
        iam.PolicyStatement(
            sid="ReadLambdaBootstrap",
            actions=["s3:GetObject"],
            resources=[asset.bucket.arn_for_objects(asset.s3_object_key)],
        )
    )


class NodeLambdaCompute(Construct):
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
        state_machine_role: iam.IRole,
        repository: ecr.IRepository,
    ) -> None:
        super().__init__(scope, construct_id)
        self._settings, self._storage, self._compute, self._functions = settings, storage, compute, functions
        stack = Stack.of(self)
        self.prefix = function_prefix(settings.node_name)
        self.functions_arn = stack.format_arn(
            service="lambda",
            resource="function",
            resource_name=f"{self.prefix}*",
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        self.network_policy = self._network_policy()
        self.roles = {
            slot: self._slot_role(index, slot) for index, slot in enumerate(storage.slot_access_points)
        }
        self._grant_runs_manager(repository.repository_arn)
        self._grant_state_machines(state_machine_role)
        repository.add_to_resource_policy(
            iam.PolicyStatement(
                sid="LambdaPullsProcessorImages",
                principals=[iam.ServicePrincipal("lambda.amazonaws.com")],
                actions=PULL_FOR_LAMBDA,
                conditions={"ArnLike": {"aws:sourceArn": self.functions_arn}},
            )
        )
        for name in C.RUNS_MANAGER_LAMBDAS:
            functions[name].add_environment(ENV_PREFIX, self.prefix)
            functions[name].add_environment(ENV_ROLE_TEMPLATE, self.role_arn("{slot}"))
            # the registry: a run's pinned manifests at prepare, the images still in use when pruning
            functions[name].add_environment(C.ENV["processors_table"], storage.processors_table.table_name)
        self.step_events_rule = events.Rule(
            self,
            "StepEventsRule",
            description="pennflow: lambda processors' step start and end (their bootstrap) -> status",
            event_pattern=events.EventPattern(
                source=[EVENT_SOURCE],
                detail_type=[EVENT_DETAIL_TYPE],
                detail={"functionName": events.Match.prefix(self.prefix)},
            ),
            targets=[
                targets.LambdaFunction(
                    functions["status"],
                    dead_letter_queue=functions.dead_letter_queue,
                    retry_attempts=TARGET_RETRY_ATTEMPTS,
                    max_event_age=Duration.hours(C.EVENT_MAX_AGE_HOURS),
                )
            ],
        )
        self.prune_rule = events.Rule(
            self,
            "PruneFunctionsRule",
            description="pennflow: delete processor functions of images no READY processor or run uses",
            schedule=events.Schedule.rate(Duration.hours(PRUNE_EVERY_HOURS)),
            targets=[
                targets.LambdaFunction(
                    functions["resume"],
                    event=events.RuleTargetInput.from_object(PRUNE_EVENT),
                    dead_letter_queue=functions.dead_letter_queue,
                    retry_attempts=2,
                )
            ],
        )

    def role_arn(self, slot: str) -> str:
        name = function_role_name(self._settings.node_name, Stack.of(self).region, slot)
        return Stack.of(self).format_arn(service="iam", region="", resource="role", resource_name=name)

    @property
    def roles_pattern(self) -> str:
        return self.role_arn("*")

    def _network_policy(self) -> iam.ManagedPolicy:
        statement = iam.PolicyStatement(sid="FunctionNetworkInterfaces", actions=ENI_ACTIONS, resources=["*"])
        policy = iam.ManagedPolicy(
            self,
            "FunctionNetworkPolicy",
            description="pennflow processor functions: their network interfaces in the node's private subnets",
            statements=[statement],
        )
        acknowledge_wildcards(
            policy,
            statement,
            "A function in a VPC has Lambda create and delete its network interfaces with the function's role; "
            "ec2:DescribeNetworkInterfaces works only on '*', and the interfaces' ids are Lambda's, not known at "
            "deploy (the Lambda developer guide, configuration-vpc).",
        )
        return policy

    def _slot_role(self, index: int, slot: str) -> iam.Role:
        stack = Stack.of(self)
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
        parameters = C.slot_parameter_prefix(self._settings.node_name).strip("/")
        own_parameters = iam.PolicyStatement(
            sid="OwnRunParameters",
            actions=["ssm:GetParameter"],
            resources=[
                stack.format_arn(
                    service="ssm", resource="parameter", resource_name=f"{parameters}/{slot}/{leaf}"
                )
                for leaf in ("run-id", "session-token")
            ],
        )
        # The bootstrap's step events (lambda_bootstrap.StepEvents): the default bus, this source and
        # detail type only; the status function still checks the function's name and slot.
        step_events = iam.PolicyStatement(
            sid="StepEvents",
            actions=["events:PutEvents"],
            resources=[stack.format_arn(service="events", resource="event-bus", resource_name="default")],
            conditions={
                "StringEquals": {"events:source": EVENT_SOURCE, "events:detail-type": EVENT_DETAIL_TYPE}
            },
        )
        role = iam.Role(
            self,
            f"Slot{index:02d}FunctionRole",
            role_name=function_role_name(self._settings.node_name, stack.region, slot),
            description=f"{slot} processor functions: this slot's folder on EFS and run parameters",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            inline_policies={
                "RunSlot": iam.PolicyDocument(statements=[own_slot, own_parameters, step_events])
            },
            managed_policies=[self.network_policy],
        )
        self._compute.processor_log_group.grant_write(role)
        Tags.of(role).add(C.SLOT_TAG_KEY, slot)
        return role

    def _grant_runs_manager(self, repository_arn: str) -> None:
        functions = self._functions
        role = functions.roles["runs_manager"]
        functions.allow_wildcard(
            role,
            iam.PolicyStatement(actions=FUNCTION_ACTIONS, resources=[self.functions_arn]),
            "Processor functions are created per image digest and run slot at runtime "
            "(pennflow.node.lambda_functions); '<node>_fn-*' names exactly this node's processor functions.",
        )
        functions.allow_wildcard(
            role,
            iam.PolicyStatement(
                actions=["iam:PassRole"],
                resources=[self.roles_pattern],
                conditions={"StringEquals": {"iam:PassedToService": "lambda.amazonaws.com"}},
            ),
            "A processor function has its run slot's function role; '<node>_<region>-fn_*' is the fixed names "
            "of this node's slot function roles here and nothing else, passed to Lambda only.",
        )
        functions.allow(role, PULL_FOR_LAMBDA, [repository_arn])
        # pruning keeps every READY processor's images (pennflow.node.lambda_functions.images_in_use)
        functions.allow_table(role, self._storage.processors_table, ["dynamodb:Scan"])
        functions.allow(
            role, ["elasticfilesystem:DescribeMountTargets"], [self._storage.file_system.file_system_arn]
        )
        functions.allow_unscoped(
            role,
            "RunsManagerProcessorFunctions",
            [
                iam.PolicyStatement(actions=["lambda:ListFunctions"], resources=["*"]),
                iam.PolicyStatement(actions=VPC_DESCRIBE, resources=["*"]),
            ],
            "lambda:ListFunctions and the ec2:Describe* calls Lambda makes with the caller's permissions to "
            "check a function's VPC configuration have no resource-level permissions (Service "
            "Authorization Reference); pruning keeps only '<node>_fn-*' names from the list.",
        )

    def _grant_state_machines(self, state_machine_role: iam.IRole) -> None:
        statement = iam.PolicyStatement(
            actions=["lambda:InvokeFunction"], resources=[self.functions_arn, f"{self.functions_arn}:*"]
        )
        policy = iam.Policy(
            self, "StateMachineInvokePolicy", statements=[statement], roles=[state_machine_role]
        )
        acknowledge_wildcards(
            policy,
            statement,
            "A lambda processor's state invokes its run slot's function, made at runtime per image digest "
            "and slot; '<node>_fn-*' names exactly this node's processor functions (and their versions).",
        )
