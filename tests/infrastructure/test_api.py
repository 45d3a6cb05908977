"""REST API: IAM auth on every method, validation, throttling, JSON access logs, tracing, output."""

from __future__ import annotations

import json

from stacks import constants as C


def stage(node) -> dict:
    (properties,) = [r["Properties"] for r in node.resources("AWS::ApiGateway::Stage").values()]
    return properties


def test_every_method_but_the_webhook_requires_iam_signatures(node):
    methods = node.resources("AWS::ApiGateway::Method")
    webhook = node.logical_id(node.stack.api.webhook_method)
    assert {m["Properties"]["HttpMethod"] for m in methods.values()} == {"GET", "POST", "PUT", "DELETE"}
    assert {k for k, m in methods.items() if m["Properties"]["AuthorizationType"] != "AWS_IAM"} == {webhook}


def test_webhook_is_a_public_post_to_the_webhook_function(node):
    method = node.json["Resources"][node.logical_id(node.stack.api.webhook_method)]["Properties"]
    assert (method["HttpMethod"], method["AuthorizationType"]) == ("POST", "NONE")
    webhook = node.logical_id(node.stack.triggers.webhook)
    assert {"Fn::GetAtt": [webhook, "Arn"]} in method["Integration"]["Uri"]["Fn::Join"][1]
    resource = node.json["Resources"][method["ResourceId"]["Ref"]]["Properties"]
    assert resource["PathPart"] == "webhook"
    assert "WebhookUrl" in node.json["Outputs"]


def test_methods_proxy_to_the_api_function(node):
    api_function = node.logical_id(node.stack.functions["api"])
    webhook = node.logical_id(node.stack.api.webhook_method)
    for logical_id, method in node.resources("AWS::ApiGateway::Method").items():
        if logical_id == webhook:
            continue
        integration = method["Properties"]["Integration"]
        assert integration["Type"] == "AWS_PROXY"
        assert {"Fn::GetAtt": [api_function, "Arn"]} in integration["Uri"]["Fn::Join"][1]


def test_post_bodies_are_validated_as_json_objects(node):
    validators = node.resources("AWS::ApiGateway::RequestValidator")
    body_validators = {k for k, v in validators.items() if v["Properties"].get("ValidateRequestBody")}
    webhook = node.logical_id(node.stack.api.webhook_method)
    for logical_id, method in node.resources("AWS::ApiGateway::Method").items():
        properties = method["Properties"]
        if logical_id == webhook:
            continue  # the function reads the raw body: its signature covers the exact bytes
        if properties["HttpMethod"] in ("POST", "PUT"):
            assert properties["RequestValidatorId"]["Ref"] in body_validators
            assert "application/json" in properties["RequestModels"]
        else:
            assert properties["RequestValidatorId"]["Ref"] in validators


def test_stage_is_throttled_traced_and_logs_errors(node):
    properties = stage(node)
    assert properties["StageName"] == C.API_STAGE_NAME
    assert properties["TracingEnabled"] is True
    (settings,) = properties["MethodSettings"]
    assert settings["ThrottlingRateLimit"] == C.API_RATE_LIMIT
    assert settings["ThrottlingBurstLimit"] == C.API_BURST_LIMIT
    assert settings["LoggingLevel"] == "ERROR"
    assert settings["DataTraceEnabled"] is False


def test_access_logs_are_json_in_a_retained_log_group(node):
    access = stage(node)["AccessLogSetting"]
    fields = json.loads(access["Format"])
    assert {"requestId", "caller", "httpMethod", "status", "user"} <= set(fields)
    group_id = node.logical_id(node.stack.api.access_logs)
    assert {"Ref": group_id} in access["DestinationArn"]["Fn::Join"][1]
    assert node.json["Resources"][group_id]["Properties"]["RetentionInDays"] == 30


def test_api_gateway_can_write_to_cloudwatch(node):
    (account,) = node.resources("AWS::ApiGateway::Account").values()
    assert "CloudWatchRoleArn" in account["Properties"]


def test_api_url_is_an_output(node):
    outputs = node.json["Outputs"]
    assert "ApiUrl" in outputs
    assert [k for k in outputs if "Endpoint" in k] == []
