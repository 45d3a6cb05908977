"""Monitoring: dashboard, alarms and the encrypted SSL-only alarm topic."""

from __future__ import annotations

import json

from stacks import constants as C


def dashboard_body(node) -> str:
    (dashboard,) = node.resources("AWS::CloudWatch::Dashboard").values()
    return json.dumps(dashboard["Properties"]["DashboardBody"])


def test_dashboard_shows_runs_durations_functions_dlq_and_efs(node):
    body = dashboard_body(node)
    for metric in (*C.CUSTOM_METRICS, "ExecutionsStarted", "ExecutionsFailed", "Errors", "Throttles"):
        assert metric in body, metric
    assert "ApproximateNumberOfMessagesVisible" in body
    assert "PercentIOLimit" in body and "MeteredIOBytes" in body
    assert "processor" in body  # ProcessorDuration by processor (SEARCH expression)
    assert C.RUN_COST_METRIC in body and "workflow" in body and "86400" in body  # cost per workflow per day


def test_alarms_cover_failed_runs_function_errors_and_dead_letters(node):
    alarms = [a["Properties"] for a in node.resources("AWS::CloudWatch::Alarm").values()]
    metrics = {a.get("MetricName") for a in alarms}
    assert {"RunsFailed", "Errors", "ApproximateNumberOfMessagesVisible", "ExecutionsFailed"} <= metrics
    assert sum(a.get("MetricName") == "Errors" for a in alarms) == len(node.stack.functions.functions)
    topic = node.logical_id(node.stack.monitoring.topic)
    for alarm in alarms:
        assert alarm["AlarmActions"] == [{"Ref": topic}]
        assert alarm["TreatMissingData"] == "notBreaching"


def test_runs_failed_alarm_reads_the_powertools_metric(node):
    (alarm,) = [
        a["Properties"]
        for a in node.resources("AWS::CloudWatch::Alarm").values()
        if a["Properties"].get("MetricName") == "RunsFailed"
    ]
    assert alarm["Namespace"] == "pennflow"
    assert alarm["Dimensions"] == [{"Name": "service", "Value": "pennflow"}]


def test_topic_is_encrypted_with_a_rotating_key_cloudwatch_may_use(node):
    topic = node.json["Resources"][node.logical_id(node.stack.monitoring.topic)]["Properties"]
    key_id = topic["KmsMasterKeyId"]["Fn::GetAtt"][0]
    key = node.json["Resources"][key_id]["Properties"]
    assert key["EnableKeyRotation"] is True
    assert any(
        s.get("Principal") == {"Service": "cloudwatch.amazonaws.com"} for s in key["KeyPolicy"]["Statement"]
    )


def test_topic_accepts_only_tls_publishers(node):
    topics = {node.logical_id(node.stack.monitoring.topic), node.logical_id(node.stack.notifications.topic)}
    policies = [p for p in node.resources("AWS::SNS::TopicPolicy").values()]
    assert {
        t["Ref"] for p in policies for t in p["Properties"]["Topics"]
    } == topics  # the alarms' and run ends'
    for policy in policies:
        assert any(
            s["Effect"] == "Deny" and s.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}
            for s in policy["Properties"]["PolicyDocument"]["Statement"]
        )


def test_email_subscription_only_when_configured(node, variant):
    assert node.resources("AWS::SNS::Subscription") == {}
    alarms = {"Ref": variant.logical_id(variant.stack.monitoring.topic)}
    (subscription,) = [
        s
        for s in variant.resources("AWS::SNS::Subscription").values()
        if s["Properties"]["TopicArn"] == alarms
    ]
    assert subscription["Properties"]["Protocol"] == "email"
    assert subscription["Properties"]["Endpoint"] == "ops@example.org"
