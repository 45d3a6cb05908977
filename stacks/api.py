"""The node's REST API: API Gateway in front of the `api` Lambda, IAM (SigV4) auth on every method."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aws_cdk import CfnOutput
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from constructs import Construct

from stacks import constants as C
from stacks.log_groups import node_log_group
from stacks.nag import acknowledge, acknowledge_wildcards
from stacks.settings import NodeSettings

if TYPE_CHECKING:
    from stacks.functions import NodeFunctions

BODY_METHODS = ("POST", "PUT")
OTHER_METHODS = ("GET", "DELETE")


class NodeApi(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: NodeSettings,
        handler: lambda_.IFunction,
        webhook: lambda_.IFunction,
    ) -> None:
        super().__init__(scope, construct_id)
        self.access_logs = access_logs = node_log_group(self, "AccessLogs", settings)
        self.rest_api = apigw.RestApi(
            self,
            "RestApi",
            rest_api_name=f"{settings.node_name}-api",
            description="pennflow compute node: workflows, runs, layers, processors",
            endpoint_types=[apigw.EndpointType.REGIONAL],
            cloud_watch_role=True,
            deploy_options=apigw.StageOptions(
                stage_name=C.API_STAGE_NAME,
                throttling_rate_limit=C.API_RATE_LIMIT,
                throttling_burst_limit=C.API_BURST_LIMIT,
                access_log_destination=apigw.LogGroupLogDestination(access_logs),
                access_log_format=apigw.AccessLogFormat.json_with_standard_fields(
                    caller=True,
                    http_method=True,
                    ip=True,
                    protocol=True,
                    request_time=True,
                    resource_path=True,
                    response_length=True,
                    status=True,
                    user=True,
                ),
                logging_level=apigw.MethodLoggingLevel.ERROR,
                data_trace_enabled=False,  # request bodies stay out of the logs
                metrics_enabled=True,
                tracing_enabled=True,
            ),
            default_method_options=apigw.MethodOptions(authorization_type=apigw.AuthorizationType.IAM),
        )
        self._routes(handler)
        self.webhook_method = self._webhook_route(webhook)
        self._acknowledge()
        # One output under a stable name (`ApiUrl`), instead of the construct's generated `Endpoint`.
        self.rest_api.node.try_remove_child("Endpoint")
        output = CfnOutput(
            self, "ApiUrl", value=self.rest_api.url, description="pennflow node API (SigV4 requests)"
        )
        output.override_logical_id("ApiUrl")

    def _routes(self, handler: lambda_.IFunction) -> None:
        api = self.rest_api
        integration = apigw.LambdaIntegration(handler, proxy=True)
        json_body = api.add_model(
            "JsonObject",
            content_type="application/json",
            model_name="JsonObject",
            schema=apigw.JsonSchema(schema=apigw.JsonSchemaVersion.DRAFT4, type=apigw.JsonSchemaType.OBJECT),
        )
        body_validator = api.add_request_validator(
            "BodyValidator",
            request_validator_name="json-body-and-parameters",
            validate_request_body=True,
            validate_request_parameters=True,
        )
        params_validator = api.add_request_validator(
            "ParamsValidator", request_validator_name="parameters", validate_request_parameters=True
        )
        # The Lambda routes by path (Powertools resolver); API Gateway authenticates and validates.
        api.root.add_method("GET", integration, request_validator=params_validator)
        proxy = api.root.add_resource("{proxy+}")
        for method in OTHER_METHODS:
            proxy.add_method(method, integration, request_validator=params_validator)
        for method in BODY_METHODS:
            proxy.add_method(
                method,
                integration,
                request_validator=body_validator,
                request_models={"application/json": json_body},
            )

    def _webhook_route(self, webhook: lambda_.IFunction) -> apigw.Method:
        """POST /webhook is the one public method: the sender signs each delivery with the shared HMAC
        key, and the function verifies the signature before it reads anything else."""
        resource = self.rest_api.root.add_resource(C.WEBHOOK_PATH)
        method = resource.add_method(
            "POST",
            apigw.LambdaIntegration(webhook, proxy=True),
            authorization_type=apigw.AuthorizationType.NONE,
        )
        acknowledge(
            method,
            "AwsSolutions-APIG4",
            "The dataset-event webhook is called by Pennsieve, which has no AWS identity; each delivery carries "
            "an HMAC-SHA256 signature and timestamp that the function verifies before reading the body.",
        )
        acknowledge(
            method,
            "AwsSolutions-COG4",
            "The webhook's caller is a service, not a user: the shared-key HMAC signature authenticates each "
            "delivery, so a Cognito user pool has nothing to add here.",
        )
        output = CfnOutput(
            self,
            "WebhookUrl",
            value=self.rest_api.url_for_path(f"/{C.WEBHOOK_PATH}"),
            description="Signed webhook",
        )
        output.override_logical_id("WebhookUrl")
        return method

    def _acknowledge(self) -> None:
        stage = self.rest_api.deployment_stage
        acknowledge(
            stage,
            "AwsSolutions-APIG3",
            "Every method requires SigV4 (IAM) signatures from principals of the owner's account and the stage is "
            "throttled; a WAF web ACL would add cost without adding an authentication boundary.",
        )
        for method in self.rest_api.methods:
            if method.node.path == self.webhook_method.node.path:  # jsii proxies: compare paths
                continue
            acknowledge(
                method,
                "AwsSolutions-COG4",
                "The node authenticates with IAM (SigV4): researchers and the pennflow CLI call it with their AWS "
                "credentials; there is no Cognito user pool by design.",
            )
        cloud_watch_role = self.rest_api.node.try_find_child("CloudWatchRole")
        if isinstance(cloud_watch_role, iam.Role):
            acknowledge(
                cloud_watch_role,
                "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                "AmazonAPIGatewayPushToCloudWatchLogs]",
                "API Gateway has one logging role per account and region, shared by every REST API there; the "
                "AWS-managed push-to-CloudWatch policy is the documented one and a narrower one would break others.",
            )


def allow_run_reads(
    functions: NodeFunctions, *, log_bucket: s3.IBucket, results_bucket: s3.IBucket, log_group: logs.ILogGroup
) -> None:
    """GET /runs/{id}/logs and /runs/{id}/results: the API reads a run's archived logs and results, and
    its live events, and signs short-lived GET URLs for them (a presigned URL carries the signer's
    permissions, so the API role must itself be allowed the GetObject it hands out)."""
    role, function = functions.roles["api"], functions["api"]
    environment = {
        "log_bucket": log_bucket.bucket_name,
        "processor_log_group": log_group.log_group_name,
    }
    for key, value in environment.items():
        function.add_environment(C.ENV[key], value)
    # A policy of its own, so its findings are acknowledged with its own reasons.
    listing = [
        iam.PolicyStatement(
            actions=["s3:ListBucket"],
            resources=[bucket.bucket_arn],
            conditions={"StringLike": {"s3:prefix": [keys]}},
        )
        for bucket, keys in ((log_bucket, C.LOG_ARCHIVE_KEYS), (results_bucket, f"{C.RESULTS_PREFIX}*"))
    ]
    reads = iam.PolicyStatement(
        actions=["s3:GetObject"],
        resources=[
            log_bucket.arn_for_objects(C.LOG_ARCHIVE_KEYS),
            results_bucket.arn_for_objects(f"{C.RESULTS_PREFIX}*"),
        ],
    )
    # Live logs of a running run: its tasks' streams, within the node's processor log group only.
    events = iam.PolicyStatement(
        actions=["logs:FilterLogEvents", "logs:GetLogEvents"], resources=[log_group.log_group_arn]
    )
    policy = iam.Policy(functions, "ApiRunReads", roles=[role], statements=[*listing, reads, events])
    acknowledge_wildcards(
        policy,
        reads,
        "A run's archived logs (runs/<run_id>/logs/...) and results (runs/<run_id>/...) are keyed by a run id "
        "known only at runtime; the prefixes keep the API to runs' objects, read-only.",
    )
