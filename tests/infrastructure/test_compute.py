"""Compute: the cluster, the task roles (nothing for processors but their slot) and the log group."""

from __future__ import annotations

from tests.infrastructure.conftest import as_list

EFS_CLIENT = {"elasticfilesystem:ClientMount", "elasticfilesystem:ClientWrite"}


def test_cluster_has_enhanced_container_insights(node):
    node.template.has_resource_properties(
        "AWS::ECS::Cluster", {"ClusterSettings": [{"Name": "containerInsights", "Value": "enhanced"}]}
    )


def test_processor_role_has_nothing_but_efs_client_access(node):
    assert node.role_actions(node.stack.compute.processor_role) == EFS_CLIENT


def test_processor_role_writes_only_through_the_run_slot_access_points(node):
    compute, storage = node.stack.compute, node.stack.storage
    statements = node.role_statements(compute.processor_role)
    (write,) = [s for s in statements if "elasticfilesystem:ClientWrite" in as_list(s["Action"])]
    assert write["Resource"] == {"Fn::GetAtt": [node.logical_id(storage.file_system), "Arn"]}
    slots = write["Condition"]["StringEquals"]["elasticfilesystem:AccessPointArn"]
    assert len(slots) == len(storage.slot_access_points)
    (read_only,) = [s for s in statements if s["Action"] == "elasticfilesystem:ClientMount"]
    assert "ArnLike" in read_only["Condition"]


def test_execution_role_only_pulls_images_writes_logs_and_reads_slot_parameters(node):
    actions = node.role_actions(node.stack.compute.execution_role)
    assert actions == {
        "ssm:GetParameters",  # each slot's run id and SESSION_TOKEN, into the container (secrets)
        "ecr:GetAuthorizationToken",
        "ecr:BatchCheckLayerAvailability",
        "ecr:GetDownloadUrlForLayer",
        "ecr:BatchGetImage",
        "logs:CreateLogStream",
        "logs:PutLogEvents",
    }


def test_builtin_role_reads_the_pennsieve_secret_and_publishes_under_runs(node):
    compute = node.stack.compute
    statements = node.role_statements(compute.builtin_role)
    (secret,) = [s for s in statements if "secretsmanager:GetSecretValue" in as_list(s["Action"])]
    assert secret["Resource"] == {"Ref": node.logical_id(compute.pennsieve_secret)}
    (publish,) = [s for s in statements if "s3:PutObject" in as_list(s["Action"])]
    bucket = node.logical_id(node.stack.storage.results_bucket)
    assert publish["Resource"] == {"Fn::Join": ["", [{"Fn::GetAtt": [bucket, "Arn"]}, "/runs/*"]]}
    assert {a.split(":")[0] for a in node.role_actions(compute.builtin_role)} == {
        "secretsmanager",
        "s3",
        "elasticfilesystem",
        "lambda",  # only to publish a persistent-layer target through the layer jobs function
    }
    (invoke,) = [s for s in statements if "lambda:InvokeFunction" in as_list(s["Action"])]
    assert invoke["Resource"] == {"Fn::GetAtt": [node.logical_id(node.stack.layers.function), "Arn"]}


def test_task_roles_trust_only_ecs_tasks_of_this_account(node):
    compute = node.stack.compute
    for role in (compute.execution_role, *compute.task_roles):
        (statement,) = node.json["Resources"][node.logical_id(role)]["Properties"][
            "AssumeRolePolicyDocument"
        ]["Statement"]
        assert statement["Principal"] == {"Service": "ecs-tasks.amazonaws.com"}
        assert statement["Condition"]["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}


def test_processor_logs_are_kept_for_the_configured_days(node, variant):
    for synthesized, days in ((node, 30), (variant, 7)):
        log_group_id = synthesized.logical_id(synthesized.stack.compute.processor_log_group)
        assert synthesized.json["Resources"][log_group_id]["Properties"]["RetentionInDays"] == days
