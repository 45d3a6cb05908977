"""Triggers: rule and state tables, the fire queue, the dataset-event rule and the trigger functions."""

from __future__ import annotations

from tests.infrastructure.conftest import as_list


def properties_of(node, construct) -> dict:
    return node.json["Resources"][node.logical_id(construct)]["Properties"]


def test_tables_use_the_trigger_store_key_names(node):
    triggers = node.stack.triggers
    rules = properties_of(node, triggers.rules_table)
    assert rules["KeySchema"] == [{"AttributeName": "rule_id", "KeyType": "HASH"}]
    (index,) = rules["GlobalSecondaryIndexes"]
    assert index["IndexName"] == "by-dataset"
    assert index["KeySchema"] == [
        {"AttributeName": "dataset_id", "KeyType": "HASH"},
        {"AttributeName": "created_at", "KeyType": "RANGE"},
    ]
    state = properties_of(node, triggers.state_table)
    assert state["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"}]
    assert state["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}


def test_fire_queue_is_encrypted_redrives_to_the_dlq_and_outlasts_the_function(node):
    triggers, functions = node.stack.triggers, node.stack.functions
    queue = properties_of(node, triggers.fire_queue)
    assert queue["SqsManagedSseEnabled"] is True
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {
        "Fn::GetAtt": [node.logical_id(functions.dead_letter_queue), "Arn"]
    }
    timeout = properties_of(node, triggers.fire)["Timeout"]
    assert queue["VisibilityTimeout"] >= 6 * timeout


def test_fire_function_reads_the_queue_reporting_partial_failures(node):
    (mapping,) = node.resources("AWS::Lambda::EventSourceMapping").values()
    properties = mapping["Properties"]
    assert properties["FunctionName"] == {"Ref": node.logical_id(node.stack.triggers.fire)}
    assert properties["FunctionResponseTypes"] == ["ReportBatchItemFailures"]


def test_dataset_events_go_to_the_intake_function(node):
    rule = properties_of(node, node.stack.triggers.dataset_rule)
    assert rule["EventPattern"] == {"source": ["pennflow.datasets"], "detail-type": ["Dataset Files Added"]}
    (target,) = rule["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": [node.logical_id(node.stack.triggers.events_function), "Arn"]}
    assert "DeadLetterConfig" in target


def test_only_the_webhook_reads_the_webhook_secret(node):
    triggers = node.stack.triggers
    secret = {"Ref": node.logical_id(triggers.webhook_secret)}
    readers = []
    for name, role in node.stack.functions.roles.items():
        for statement in node.role_statements(role):
            if statement["Resource"] == secret:
                readers.append((name, as_list(statement["Action"])))
    assert readers == [("triggers", ["secretsmanager:GetSecretValue"])]


def test_firing_starts_runs_through_prepare_only(node):
    functions = node.stack.functions
    statements = node.role_statements(functions.roles["trigger_fire"])
    (invoke,) = [s for s in statements if s["Action"] == "lambda:InvokeFunction"]
    assert invoke["Resource"] == {"Fn::GetAtt": [node.logical_id(functions["prepare"]), "Arn"]}
    services = {a.split(":")[0] for s in statements for a in as_list(s["Action"])}
    # secretsmanager, ecr and s3 key the run as POST /runs does (files, image digests, the manifest)
    assert services == {"dynamodb", "sqs", "lambda", "logs", "xray", "secretsmanager", "ecr", "s3"}
    (secret,) = [s for s in statements if s["Action"] == "secretsmanager:GetSecretValue"]
    assert secret["Resource"] == {"Ref": node.logical_id(node.stack.compute.pennsieve_secret)}
