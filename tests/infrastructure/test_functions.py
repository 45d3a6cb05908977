"""The run-lifecycle Lambda functions: runtime, layer, tracing, logs, DLQ, asset and least privilege."""

from __future__ import annotations

import json

from stacks import constants as C
from tests.infrastructure.conftest import as_list


def function_properties(node, name: str) -> dict:
    return node.json["Resources"][node.logical_id(node.stack.functions[name])]["Properties"]


def test_six_python312_arm64_functions_with_their_handlers(node):
    for name in C.LAMBDA_NAMES:
        properties = function_properties(node, name)
        assert properties["Runtime"] == "python3.12"
        assert properties["Architectures"] == ["arm64"]
        assert properties["Handler"] == f"lambdas.{name}.handler"
        assert properties["TracingConfig"] == {"Mode": "Active"}


def test_powertools_comes_from_the_public_v3_layer_of_the_pinned_release(node):
    for name in C.LAMBDA_NAMES:
        (layer,) = function_properties(node, name)["Layers"]
        assert layer == "{{resolve:ssm:/aws/service/powertools/python/arm64/python3.12/3.37.0}}"


def test_each_function_logs_to_its_own_group_with_retention(node):
    groups = set()
    for name in C.LAMBDA_NAMES:
        group_id = function_properties(node, name)["LoggingConfig"]["LogGroup"]["Ref"]
        assert node.json["Resources"][group_id]["Properties"]["RetentionInDays"] == 30
        groups.add(group_id)
    assert len(groups) == len(C.LAMBDA_NAMES)


def test_asynchronously_invoked_functions_have_the_encrypted_ssl_only_dlq(node):
    queue = node.stack.functions.dead_letter_queue
    queue_arn = {"Fn::GetAtt": [node.logical_id(queue), "Arn"]}
    for name in C.LAMBDA_NAMES:
        has_dlq = function_properties(node, name).get("DeadLetterConfig") == {"TargetArn": queue_arn}
        assert has_dlq == (name in C.ASYNC_LAMBDAS), name
    assert node.json["Resources"][node.logical_id(queue)]["Properties"]["SqsManagedSseEnabled"] is True
    (policy,) = node.resources("AWS::SQS::QueuePolicy").values()
    assert any(
        s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        for s in policy["Properties"]["PolicyDocument"]["Statement"]
    )


def test_reserved_concurrency_where_configured(node, variant):
    for name in C.LAMBDA_NAMES:
        assert function_properties(node, name).get(
            "ReservedConcurrentExecutions"
        ) == C.RESERVED_CONCURRENCY.get(name)
        assert "ReservedConcurrentExecutions" not in function_properties(variant, name)


def test_only_efs_functions_join_the_vpc_and_mount_runs(node):
    runs_access_point = node.logical_id(node.stack.storage.runs_access_point)
    for name in C.LAMBDA_NAMES:
        properties = function_properties(node, name)
        assert ("VpcConfig" in properties) == (name in C.EFS_LAMBDAS), name
        if name in C.EFS_LAMBDAS:
            (mount,) = properties["FileSystemConfigs"]
            assert mount["LocalMountPath"] == "/mnt/runs"
            assert {"Ref": runs_access_point} in mount["Arn"]["Fn::Join"][1]


def test_environment_carries_names_never_secret_values(node):
    secret_id = node.logical_id(node.stack.compute.pennsieve_secret)
    for name in C.LAMBDA_NAMES:
        variables = function_properties(node, name)["Environment"]["Variables"]
        assert variables["RUNS_TABLE"] == {"Ref": node.logical_id(node.stack.storage.runs_table)}
        assert variables["POWERTOOLS_METRICS_NAMESPACE"] == "pennflow"
        # The secret travels as its ARN (a Ref); its value is read at runtime by the built-ins.
        assert variables["PENNSIEVE_SECRET_ARN"] == {"Ref": secret_id}
        assert "SecretString" not in json.dumps(variables)


def test_asset_carries_only_pennflow_and_lambdas(node):
    key = function_properties(node, "api")["Code"]["S3Key"]
    asset = node.outdir / f"asset.{key.removesuffix('.zip')}"
    assert {p.name for p in asset.iterdir()} <= {"pennflow", "lambdas"}
    assert "pennflow" in {p.name for p in asset.iterdir()}
    assert not any(
        part in {"__pycache__", ".venv", "node_modules", "tests"}
        for p in asset.rglob("*")
        for part in p.parts
    )
    assert (asset / "pennflow" / "asl.py").is_file()
    assert len({function_properties(node, n)["Code"]["S3Key"] for n in C.LAMBDA_NAMES}) == 1


def test_status_only_updates_the_runs_table(node):
    functions, storage = node.stack.functions, node.stack.storage
    statements = node.role_statements(functions["status"].role)
    dynamodb = [s for s in statements if any(a.startswith("dynamodb:") for a in as_list(s["Action"]))]
    assert [s["Resource"] for s in dynamodb] == [{"Fn::GetAtt": [node.logical_id(storage.runs_table), "Arn"]}]
    assert {a for s in dynamodb for a in as_list(s["Action"])} == {
        "dynamodb:GetItem",
        "dynamodb:Query",
        "dynamodb:UpdateItem",
    }
    services = {a.split(":")[0] for a in node.role_actions(functions["status"].role)}
    assert services == {"dynamodb", "logs", "xray", "sqs"}


def test_prepare_registers_task_definitions_and_passes_only_the_task_roles(node):
    functions, compute = node.stack.functions, node.stack.compute
    statements = node.role_statements(functions["prepare"].role)
    (register,) = [s for s in statements if "ecs:RegisterTaskDefinition" in as_list(s["Action"])]
    assert register["Resource"] == "*"  # no resource-level permissions exist; acknowledged in stacks/
    (pass_role,) = [s for s in statements if s["Action"] == "iam:PassRole"]
    assert pass_role["Condition"] == {"StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}}
    passed = {r["Fn::GetAtt"][0] for r in pass_role["Resource"]}
    assert passed == {node.logical_id(r) for r in (compute.execution_role, *compute.task_roles)}


def test_prepare_manages_only_access_points_tagged_for_this_node(node):
    statements = node.role_statements(node.stack.functions["prepare"].role)
    (create,) = [s for s in statements if s["Action"] == "elasticfilesystem:CreateAccessPoint"]
    assert create["Condition"] == {"StringEquals": {"aws:RequestTag/pennflow:runtime-node": "pennflow"}}
    (delete,) = [s for s in statements if s["Action"] == "elasticfilesystem:DeleteAccessPoint"]
    assert delete["Condition"] == {"StringEquals": {"aws:ResourceTag/pennflow:runtime-node": "pennflow"}}
    # The stack's own access points (runs, layers, slots) never carry the runtime tag.
    for access_point in node.resources("AWS::EFS::AccessPoint").values():
        assert "pennflow:runtime-node" not in {
            t["Key"] for t in access_point["Properties"]["AccessPointTags"]
        }


def test_finalize_reads_processor_logs_and_writes_the_log_archive(node):
    functions, storage, compute = node.stack.functions, node.stack.storage, node.stack.compute
    statements = node.role_statements(functions["finalize"].role)
    (read_logs,) = [s for s in statements if "logs:GetLogEvents" in as_list(s["Action"])]
    assert read_logs["Resource"] == {"Fn::GetAtt": [node.logical_id(compute.processor_log_group), "Arn"]}
    (archive,) = [s for s in statements if "s3:PutObject" in as_list(s["Action"])]
    assert archive["Resource"]["Fn::Join"][1][0] == {
        "Fn::GetAtt": [node.logical_id(storage.log_bucket), "Arn"]
    }
