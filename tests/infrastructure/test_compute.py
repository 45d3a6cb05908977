"""Compute: the cluster, the task roles (nothing for processors but their slot) and the log group."""

from __future__ import annotations

import json

from stacks import constants as C
from tests.infrastructure.conftest import as_list

EFS_CLIENT = {"elasticfilesystem:ClientMount", "elasticfilesystem:ClientWrite"}


def test_cluster_has_enhanced_container_insights(node):
    node.template.has_resource_properties(
        "AWS::ECS::Cluster", {"ClusterSettings": [{"Name": "containerInsights", "Value": "enhanced"}]}
    )


def _access_point_arns(statement) -> list:
    return as_list(
        {**statement["Condition"].get("StringEquals", {}), **statement["Condition"].get("ArnNotEquals", {})}[
            "elasticfilesystem:AccessPointArn"
        ]
    )


def test_each_slot_has_a_processor_and_a_builtin_role_of_its_own(node):
    compute, storage = node.stack.compute, node.stack.storage
    assert list(compute.slot_roles) == list(storage.slot_access_points)
    ids = {node.logical_id(role) for role in compute.task_roles}
    assert len(ids) == 2 * node.stack.settings.run_slots
    for slot, roles in compute.slot_roles.items():
        for kind, role in roles.items():
            properties = node.json["Resources"][node.logical_id(role)]["Properties"]
            assert properties["RoleName"]["Fn::Join"][1][-1] == f"_{slot}-{kind}"
            assert {"Key": C.SLOT_TAG_KEY, "Value": slot} in properties["Tags"]


def test_processor_role_has_nothing_but_efs_client_access(node):
    for roles in node.stack.compute.slot_roles.values():
        assert node.role_actions(roles["processor"]) == EFS_CLIENT


def test_a_slot_role_writes_only_through_its_own_slot_access_point(node):
    compute, storage = node.stack.compute, node.stack.storage
    file_system = {"Fn::GetAtt": [node.logical_id(storage.file_system), "Arn"]}
    for slot, roles in compute.slot_roles.items():
        own = node.stack.resolve(storage.slot_access_points[slot].access_point_arn)
        for kind, role in roles.items():
            statements = node.role_statements(role)
            writes = [s for s in statements if "elasticfilesystem:ClientWrite" in as_list(s["Action"])]
            slot_writes = [s for s in writes if s.get("Sid") == "OwnRunSlotReadWrite"]
            (write,) = slot_writes
            assert write["Resource"] == file_system
            assert _access_point_arns(write) == [own]
            # the built-in role's only other write is a persistent layer's, through /layers
            others = [s for s in writes if s is not write]
            layers = node.stack.resolve(storage.layers_access_point.access_point_arn)
            assert [_access_point_arns(s) for s in others] == ([[layers]] if kind == "builtin" else [])


def test_layer_versions_are_mounted_read_only_and_never_a_slot_runs_or_layers(node):
    compute, storage = node.stack.compute, node.stack.storage
    (read_only,) = [
        s
        for s in node.role_statements(compute.slot_roles["slot-00"]["processor"])
        if s.get("Sid") == "LayersReadOnly"
    ]
    assert read_only["Action"] == "elasticfilesystem:ClientMount"
    assert read_only["Condition"]["ArnLike"]["elasticfilesystem:AccessPointArn"]["Fn::Join"][1][-1] == (
        ":access-point/*"
    )
    excluded = read_only["Condition"]["ArnNotEquals"]["elasticfilesystem:AccessPointArn"]
    every_other = [
        storage.runs_access_point,
        storage.layers_access_point,
        *storage.slot_access_points.values(),
    ]
    assert excluded == [node.stack.resolve(ap.access_point_arn) for ap in every_other]


def test_shared_task_grants_fit_an_iam_managed_policy_at_the_most_slots(node):
    """The read-only statement lists every slot's access point: at 50 slots it must stay within the
    6,144 characters of a managed policy, with ARNs as long as GovCloud's."""
    (read_only,) = [
        s
        for s in node.role_statements(node.stack.compute.slot_roles["slot-00"]["processor"])
        if s.get("Sid") == "LayersReadOnly"
    ]
    longest_arn = (
        "arn:aws-us-gov:elasticfilesystem:us-gov-west-1:123456789012:access-point/fsap-0123456789abcdef0"
    )
    statement = json.loads(json.dumps(read_only))
    statement["Resource"] = longest_arn.replace(
        "access-point/fsap-0123456789abcdef0", "file-system/fs-0123456789abcdef0"
    )
    statement["Condition"]["ArnLike"]["elasticfilesystem:AccessPointArn"] = longest_arn
    statement["Condition"]["ArnNotEquals"]["elasticfilesystem:AccessPointArn"] = [longest_arn] * (
        C.MAX_RUN_SLOTS + 2
    )
    document = {"Version": "2012-10-17", "Statement": [statement]}
    assert len(json.dumps(document, separators=(",", ":"))) < 6144


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
    builtin = compute.slot_roles["slot-03"]["builtin"]
    statements = node.role_statements(builtin)
    (secret,) = [s for s in statements if "secretsmanager:GetSecretValue" in as_list(s["Action"])]
    assert secret["Resource"] == {"Ref": node.logical_id(compute.pennsieve_secret)}
    (publish,) = [s for s in statements if "s3:PutObject" in as_list(s["Action"])]
    bucket = node.logical_id(node.stack.storage.results_bucket)
    assert publish["Resource"] == {"Fn::Join": ["", [{"Fn::GetAtt": [bucket, "Arn"]}, "/runs/*"]]}
    assert {a.split(":")[0] for a in node.role_actions(builtin)} == {
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
