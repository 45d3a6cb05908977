"""Processors from source: the node's ECR repository, the CodeBuild project that builds a repository at
a tag into it, and the function that records each build's outcome (pennflow.node.processor_builds).

The project clones SOURCE_URL at SOURCE_TAG (a private repository with GIT_TOKEN, which the API passes
as a SECRETS_MANAGER variable: CodeBuild resolves the ARN itself), builds the Dockerfile in privileged
mode, pushes ``<repository>:<id>-b<build number>`` (tags are immutable, every build has its own),
exports IMAGE_DIGEST and copies app.yml to the results bucket. Its role may push only to this
repository, write only under ``processors/`` and read only the node's processor-token secrets. The API
may start only this project; the outcome function may only read its builds, logs and app.yml files
and write the Processors table.
"""

from __future__ import annotations

from aws_cdk import ArnFormat, Duration, RemovalPolicy, Stack
from aws_cdk import aws_codebuild as codebuild
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from constructs import Construct

from stacks import constants as C
from stacks.functions import READ, WRITE, NodeFunctions
from stacks.lambda_compute import (
    LAMBDA_EXPORTS,
    LAMBDA_VARIANT_COMMANDS,
    allow_bootstrap_read,
    bootstrap_asset,
    build_environment,
)
from stacks.log_groups import node_log_group
from stacks.nag import acknowledge, acknowledge_wildcards
from stacks.settings import NodeSettings
from stacks.storage import NodeStorage

# The variables pennflow.node.processor_builds reads (tests/infrastructure checks they agree).
ENV_TABLE, ENV_PROJECT = "PROCESSORS_TABLE", "PROCESSOR_BUILD_PROJECT"
ENV_BUCKET, ENV_REPOSITORY = "PROCESSOR_MANIFEST_BUCKET", "PROCESSOR_REPOSITORY_URI"
MANIFEST_PREFIX = "processors/"
TOKEN_SECRETS = "processor-tokens/"  # secrets named <node>_processor-tokens/... hold private repos' tokens
COMPUTE_TYPES = {
    "small": codebuild.ComputeType.SMALL,
    "medium": codebuild.ComputeType.MEDIUM,
    "large": codebuild.ComputeType.LARGE,
}
FINAL_STATES = ["SUCCEEDED", "FAILED", "FAULT", "STOPPED", "TIMED_OUT"]
TARGET_RETRY_ATTEMPTS = 8
PUSH_ACTIONS = [
    "ecr:BatchCheckLayerAvailability",
    "ecr:InitiateLayerUpload",
    "ecr:UploadLayerPart",
    "ecr:CompleteLayerUpload",
    "ecr:PutImage",
    "ecr:BatchGetImage",
    "ecr:GetDownloadUrlForLayer",
]

BUILD_COMMANDS = [
    'aws ecr get-login-password | docker login --username AWS --password-stdin "${REPOSITORY_URI%%/*}"',
    # A token (private repositories) reaches git through a credential helper, never the URL or the log.
    'if [ -n "${GIT_TOKEN:-}" ]; then git config --global credential.helper '
    "'!f() { echo username=x-access-token; echo \"password=${GIT_TOKEN}\"; }; f'; fi",
    'git clone --quiet --depth 1 --branch "$SOURCE_TAG" -- "$SOURCE_URL" src',
    'IMAGE="$REPOSITORY_URI:$IMAGE_TAG-b$CODEBUILD_BUILD_NUMBER"',
    'docker build --tag "$IMAGE" src',
    'docker push "$IMAGE"',
    "IMAGE_DIGEST=$(docker inspect --format '{{index .RepoDigests 0}}' \"$IMAGE\" | cut -d@ -f2)",
    'if [ -f src/app.yml ]; then aws s3 cp src/app.yml "s3://$MANIFEST_BUCKET/$MANIFEST_KEY"; fi',
]


class NodeProcessors(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: NodeSettings,
        storage: NodeStorage,
        functions: NodeFunctions,
    ) -> None:
        super().__init__(scope, construct_id)
        self._settings = settings
        self._storage = storage
        self._functions = functions
        node = settings.node_name
        self.repository = ecr.Repository(
            self,
            "Repository",
            repository_name=f"{C.node_prefix(node)}processors",
            image_scan_on_push=True,
            image_tag_mutability=ecr.TagMutability.IMMUTABLE,
            removal_policy=RemovalPolicy.RETAIN,  # runs' provenance names these digests
        )
        self.project = self._project()
        role = functions.add_role("processor_builds")
        self.function = functions.add_function("processor_builds", role, self.environment())
        self._grant_function(role)
        self.rule = self._build_state_rule()
        self._wire_api()

    def environment(self) -> dict[str, str]:
        return {
            ENV_TABLE: self._storage.processors_table.table_name,
            ENV_PROJECT: self.project.project_name,
            ENV_BUCKET: self._storage.results_bucket.bucket_name,
            ENV_REPOSITORY: self.repository.repository_uri,
        }

    @property
    def token_secrets_arn(self) -> str:
        return Stack.of(self).format_arn(
            service="secretsmanager",
            resource="secret",
            resource_name=f"{C.node_prefix(self._settings.node_name)}{TOKEN_SECRETS}*",
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )

    # --- the build project -----------------------------------------------------------------------

    def _project(self) -> codebuild.Project:
        builds = self._settings.processor_builds
        log_group = node_log_group(self, "BuildLogs", self._settings)
        bootstrap = bootstrap_asset(self)
        project = codebuild.Project(
            self,
            "Builds",
            project_name=f"{C.node_prefix(self._settings.node_name)}processor-builds",
            description="pennflow: builds processors registered from source into the node's repository",
            build_spec=codebuild.BuildSpec.from_object(
                {
                    "version": "0.2",
                    "env": {"shell": "bash", "exported-variables": ["IMAGE_DIGEST", *LAMBDA_EXPORTS]},
                    # then the image's Lambda variant, for computeType lambda (stacks/lambda_compute.py)
                    "phases": {"build": {"commands": [*BUILD_COMMANDS, *LAMBDA_VARIANT_COMMANDS]}},
                }
            ),
            environment=codebuild.BuildEnvironment(
                build_image=codebuild.LinuxBuildImage.STANDARD_7_0,
                compute_type=COMPUTE_TYPES[builds.compute_type],
                privileged=True,  # docker build runs in the build container
            ),
            environment_variables={
                "REPOSITORY_URI": codebuild.BuildEnvironmentVariable(value=self.repository.repository_uri),
                "MANIFEST_BUCKET": codebuild.BuildEnvironmentVariable(
                    value=self._storage.results_bucket.bucket_name
                ),
                **build_environment(bootstrap),
            },
            timeout=Duration.minutes(builds.timeout_minutes),
            logging=codebuild.LoggingOptions(
                cloud_watch=codebuild.CloudWatchLoggingOptions(log_group=log_group)
            ),
        )
        self.log_group = log_group
        self.repository.grant(project, *PUSH_ACTIONS)  # this repository only
        allow_bootstrap_read(project, bootstrap)
        role = project.role
        assert role is not None
        role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="PushLogin",
                actions=["ecr:GetAuthorizationToken"],
                resources=["*"],
            )
        )
        manifests = iam.PolicyStatement(
            sid="WriteManifests",
            actions=["s3:PutObject"],
            resources=[self._storage.results_bucket.arn_for_objects(f"{MANIFEST_PREFIX}*")],
        )
        role.add_to_principal_policy(manifests)
        tokens = iam.PolicyStatement(
            sid="ReadRepositoryTokens",
            actions=["secretsmanager:GetSecretValue"],
            resources=[self.token_secrets_arn],
        )
        role.add_to_principal_policy(tokens)
        policy = role.node.find_child("DefaultPolicy")
        acknowledge(
            policy,
            "AwsSolutions-IAM5[Resource::*]",
            "ecr:GetAuthorizationToken has no resource-level permissions; what the token may push is limited by "
            "the repository statement, which names only the node's processors repository.",
        )
        acknowledge_wildcards(
            policy,
            manifests,
            "Each build copies its app.yml to processors/<id>/app.yml; ids are runtime values and the prefix keeps "
            "the build out of the runs' results.",
        )
        acknowledge_wildcards(
            policy,
            tokens,
            "A private repository's token is a secret the owner creates, named <node>_processor-tokens/...; the "
            "build reads only secrets of that prefix, never the node's Pennsieve secret.",
        )
        # CodeBuild's own grants to its project's default log group and report groups (added by the CDK).
        stack = Stack.of(self)
        defaults = iam.PolicyStatement(
            resources=[
                stack.format_arn(
                    service="logs",
                    resource="log-group",
                    resource_name=f"/aws/codebuild/{project.project_name}:*",
                    arn_format=ArnFormat.COLON_RESOURCE_NAME,
                ),
                stack.format_arn(
                    service="codebuild", resource="report-group", resource_name=f"{project.project_name}-*"
                ),
            ]
        )
        acknowledge_wildcards(
            policy,
            defaults,
            "The CDK grants every CodeBuild project its own default log group and report groups, named after "
            "the project; the builds log to the node's log group and write no reports.",
        )
        acknowledge(
            project,
            "AwsSolutions-CB4",
            "The project keeps no artifacts (the image goes to ECR, encrypted there) and its logs go to a "
            "CloudWatch log group; the AWS-managed key CodeBuild uses for its own cache is enough.",
        )
        return project

    # --- the outcome function --------------------------------------------------------------------

    def _grant_function(self, role: iam.Role) -> None:
        functions, storage = self._functions, self._storage
        functions.allow_table(role, storage.processors_table, READ + WRITE)
        functions.allow(role, ["codebuild:BatchGetBuilds"], [self.project.project_arn])
        streams = Stack.of(self).format_arn(
            service="logs",
            resource="log-group",
            resource_name=f"{self.log_group.log_group_name}:log-stream:*",
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        functions.allow_wildcard(
            role,
            iam.PolicyStatement(actions=["logs:GetLogEvents"], resources=[streams]),
            "Each build writes its own log stream in the project's log group; stream names are build ids, "
            "known only at runtime, and the group is this project's alone.",
        )
        manifests = iam.PolicyStatement(
            actions=["s3:GetObject"],
            resources=[storage.results_bucket.arn_for_objects(f"{MANIFEST_PREFIX}*")],
        )
        functions.allow_wildcard(
            role,
            manifests,
            "The function reads the app.yml each build left under processors/<id>/ (ids known at runtime only).",
        )
        # A build without app.yml leaves no key: NoSuchKey (the default manifest) rather than a 403.
        functions.allow(
            role,
            ["s3:ListBucket"],
            [storage.results_bucket.bucket_arn],
            StringLike={"s3:prefix": [f"{MANIFEST_PREFIX}*"]},
        )

    def _build_state_rule(self) -> events.Rule:
        return events.Rule(
            self,
            "BuildStateRule",
            description="pennflow: finished processor builds -> processor builds",
            event_pattern=events.EventPattern(
                source=["aws.codebuild"],
                detail_type=["CodeBuild Build State Change"],
                detail={"project-name": [self.project.project_name], "build-status": FINAL_STATES},
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
        """POST /processors (and workflow registration) start builds of this project, and only it."""
        functions = self._functions
        api = functions["api"]
        for name, value in self.environment().items():
            api.add_environment(name, value)
        functions.allow(functions.roles["api"], ["codebuild:StartBuild"], [self.project.project_arn])
