"""Run-end notifications, the monthly budget and the cost settings, in the synthesized templates."""

from __future__ import annotations

import json

from stacks import constants as C


def _subscriptions(node) -> dict[str, dict]:
    return {
        p["Protocol"]: p
        for p in (r["Properties"] for r in node.resources("AWS::SNS::Subscription").values())
        if p["TopicArn"] == {"Ref": node.logical_id(node.stack.notifications.topic)}
    }


def test_run_ends_go_to_an_encrypted_topic_the_runs_manager_may_publish_to(node, variant):
    for synthesized, email in ((node, None), (variant, "runs@example.org")):
        topic = node_topic = synthesized.stack.notifications.topic
        (props,) = [
            r["Properties"]
            for lid, r in synthesized.resources("AWS::SNS::Topic").items()
            if lid == synthesized.logical_id(node_topic)
        ]
        assert props["KmsMasterKeyId"]  # SNS's managed key
        statements = synthesized.role_statements(synthesized.stack.functions.roles["runs_manager"])
        publish = [s for s in statements if "sns:Publish" in json.dumps(s["Action"])]
        assert publish and all(s["Resource"] == {"Ref": synthesized.logical_id(topic)} for s in publish)
        for name in C.RUNS_MANAGER_LAMBDAS:
            env = synthesized.resources("AWS::Lambda::Function")[
                synthesized.logical_id(synthesized.stack.functions[name])
            ]["Properties"]["Environment"]["Variables"]
            assert env[C.ENV["notify_topic"]] == {"Ref": synthesized.logical_id(topic)}
        subscriptions = _subscriptions(synthesized)
        if email is None:
            assert "email" not in subscriptions and "lambda" not in subscriptions  # cdk.json: no alarmEmail
        else:
            assert subscriptions["email"]["Endpoint"] == email  # notifyEmail wins over alarmEmail


def test_the_webhook_function_reads_its_secret_retries_and_dead_letters(variant):
    notifications = variant.stack.notifications
    function = variant.resources("AWS::Lambda::Function")[variant.logical_id(notifications.function)][
        "Properties"
    ]
    assert function["Handler"] == "lambdas.notify.handler"
    secret = variant.logical_id(notifications.webhook_secret)
    assert function["Environment"]["Variables"][C.ENV["notify_webhook_secret"]] == {"Ref": secret}
    assert "VpcConfig" not in function  # it reaches the chat service over the internet, not the NAT
    (subscription,) = [s for s in _subscriptions(variant).values() if s["Protocol"] == "lambda"]
    dlq = variant.logical_id(variant.stack.functions.dead_letter_queue)
    assert subscription["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": [dlq, "Arn"]}
    (invoke_config,) = [
        r["Properties"]
        for r in variant.resources("AWS::Lambda::EventInvokeConfig").values()
        if r["Properties"]["FunctionName"] == {"Ref": variant.logical_id(notifications.function)}
    ]
    assert invoke_config["MaximumRetryAttempts"] == C.ASYNC_RETRY_ATTEMPTS
    actions = variant.role_actions(variant.stack.functions.roles["notify"])
    assert "secretsmanager:GetSecretValue" in actions and not any(
        a.endswith("*") for a in actions if "secrets" in a
    )
    assert "WebhookUrlSecretArn" in variant.template.to_json()["Outputs"]


def test_a_monthly_budget_alerts_the_alarms_topic(node, variant):
    assert node.resources("AWS::Budgets::Budget") == {}
    (budget,) = [r["Properties"] for r in variant.resources("AWS::Budgets::Budget").values()]
    assert budget["Budget"]["BudgetLimit"] == {"Amount": 300, "Unit": "USD"}
    assert budget["Budget"]["CostFilters"] == {"TagKeyValue": ["user:pennflow:node$lab"]}
    alarms = {"Ref": variant.logical_id(variant.stack.monitoring.topic)}
    assert {n["Notification"]["NotificationType"] for n in budget["NotificationsWithSubscribers"]} == {
        "ACTUAL",
        "FORECASTED",
    }
    for entry in budget["NotificationsWithSubscribers"]:
        assert entry["Subscribers"] == [{"SubscriptionType": "SNS", "Address": alarms}]
    policy = json.dumps(list(variant.resources("AWS::SNS::TopicPolicy").values()))
    assert "budgets.amazonaws.com" in policy
    keys = json.dumps(list(variant.resources("AWS::KMS::Key").values()))
    assert "budgets.amazonaws.com" in keys  # the alarms topic's key lets Budgets publish


def test_the_api_gets_the_ceiling_and_every_function_the_prices(variant):
    env = variant.resources("AWS::Lambda::Function")[variant.logical_id(variant.stack.functions["api"])][
        "Properties"
    ]["Environment"]["Variables"]
    assert env[C.ENV["run_cost_ceiling"]] == "10.0"
    assert json.loads(env[C.ENV["cost_prices"]]) == {"natGbProcessed": 0.048}
    finalize = variant.resources("AWS::Lambda::Function")[
        variant.logical_id(variant.stack.functions["finalize"])
    ]
    assert json.loads(finalize["Properties"]["Environment"]["Variables"][C.ENV["cost_prices"]]) == {
        "natGbProcessed": 0.048
    }
