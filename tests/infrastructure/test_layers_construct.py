"""Layer jobs: the function, its task definitions and roles, the stopped-task rule, the API wiring."""

from __future__ import annotations

import pytest

from stacks import constants as C
from tests.infrastructure.conftest import as_list

WRITE = "elasticfilesystem:ClientWrite"


def properties(node, construct) -> dict:
    return node.json["Resources"][node.logical_id(construct)]["Properties"]


def containers(node, task) -> dict[str, dict]:
    return {c["Name"]: c for c in properties(node, task)["ContainerDefinitions"]}


def layer_rule(node) -> dict:
    return properties(node, node.stack.layers.rule)


def test_the_function_runs_the_layer_jobs_handler_out_of_the_vpc(node):
    layers = node.stack.layers
    function = properties(node, layers.function)
    assert function["FunctionName"] == "pennflow_layer-jobs"
    assert function["Handler"] == "lambdas.layer_jobs.handler"
    assert "VpcConfig" not in function and "FileSystemConfigs" not in function
    variables = function["Environment"]["Variables"]
    for kind, task in layers.task_definitions.items():
        assert variables[f"LAYER_{kind.upper()}_TASK_DEFINITION"] == {"Ref": node.logical_id(task)}
    assert variables["LAYERS_TABLE"] == {"Ref": node.logical_id(node.stack.storage.layers_table)}
    assert variables["LOG_ARCHIVE_BUCKET"] == {"Ref": node.logical_id(node.stack.storage.log_bucket)}
    assert "PENNSIEVE_SECRET_ARN" not in variables


def test_the_environment_is_what_the_function_reads(node):
    from pennflow.layers.jobs import JobSettings

    variables = set(properties(node, node.stack.layers.function)["Environment"]["Variables"])
    required = {f.alias for f in JobSettings.model_fields.values() if f.is_required()}
    assert required <= variables, required - variables


def test_the_api_hands_jobs_to_the_function_and_may_invoke_only_it_of_the_layer_pieces(node):
    functions, layers = node.stack.functions, node.stack.layers
    api = properties(node, functions["api"])["Environment"]["Variables"]
    assert api["LAYER_JOBS_FUNCTION_NAME"] == "pennflow_layer-jobs"
    invokes = [
        s for s in node.role_statements(functions.roles["api"]) if s["Action"] == "lambda:InvokeFunction"
    ]
    targets = {r["Fn::GetAtt"][0] for s in invokes for r in as_list(s["Resource"])}
    assert node.logical_id(layers.function) in targets


def test_stopped_tasks_of_the_layer_job_families_reach_the_function_with_retries(node):
    rule = layer_rule(node)
    pattern = rule["EventPattern"]
    assert pattern["source"] == ["aws.ecs"] and pattern["detail-type"] == ["ECS Task State Change"]
    assert pattern["detail"]["lastStatus"] == ["STOPPED"]
    assert pattern["detail"]["clusterArn"] == [
        {"Fn::GetAtt": [node.logical_id(node.stack.compute.cluster), "Arn"]}
    ]
    (prefix,) = pattern["detail"]["taskDefinitionArn"]
    assert prefix["prefix"]["Fn::Join"][1][-1] == ":task-definition/pennflow_layer-"
    (target,) = rule["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": [node.logical_id(node.stack.layers.function), "Arn"]}
    queue = node.logical_id(node.stack.functions.dead_letter_queue)
    assert target["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": [queue, "Arn"]}}
    assert target["RetryPolicy"]["MaximumRetryAttempts"] == 8


def test_every_family_starts_with_the_prefix_the_rule_matches(node, variant):
    for synthesized, name in ((node, "pennflow"), (variant, "lab")):
        families = {
            properties(synthesized, task)["Family"]
            for task in synthesized.stack.layers.task_definitions.values()
        }
        assert families == {f"{name}_layer-build", f"{name}_layer-populate", f"{name}_layer-clean"}
    (prefix,) = layer_rule(variant)["EventPattern"]["detail"]["taskDefinitionArn"]
    assert prefix == {"prefix": "arn:aws:ecs:eu-west-1:123456789012:task-definition/lab_layer-"}


def test_build_is_stage_then_the_layer_build_image_then_report(node):
    build = containers(node, node.stack.layers.build_task)
    assert list(build) == ["stage", "build", "report"]
    assert build["build"]["Image"] == "ghcr.io/pennflow/layer-build:0.1.0"
    assert "Command" not in build["build"]  # the image's own entry point: the processor contract
    assert build["stage"]["Image"] == build["report"]["Image"] == "ghcr.io/pennflow/builtin:0.1.0"
    assert build["stage"]["Command"][-1] == "stage" and build["report"]["Command"][-1] == "report"
    assert build["build"]["DependsOn"] == [{"Condition": "SUCCESS", "ContainerName": "stage"}]
    assert build["report"]["DependsOn"] == [{"Condition": "COMPLETE", "ContainerName": "build"}]
    assert [name for name, c in build.items() if c["Essential"]] == ["report"]
    task = properties(node, node.stack.layers.build_task)
    assert (task["Cpu"], task["Memory"]) == ("1024", "4096")


def test_every_job_task_mounts_only_the_layers_access_point_read_write(node):
    storage = node.stack.storage
    for task in node.stack.layers.task_definitions.values():
        (volume,) = properties(node, task)["Volumes"]
        config = volume["EFSVolumeConfiguration"]
        assert config["TransitEncryption"] == "ENABLED"
        assert config["AuthorizationConfig"]["IAM"] == "ENABLED"
        assert config["AuthorizationConfig"]["AccessPointId"] == {
            "Ref": node.logical_id(storage.layers_access_point)
        }
        for container in containers(node, task).values():
            assert container["MountPoints"] == [
                {"ContainerPath": "/mnt/layers-rw", "ReadOnly": False, "SourceVolume": "layers"}
            ]
            assert (
                container["LogConfiguration"]["Options"]["awslogs-stream-prefix"] == C.LAYER_JOBS_LOG_PREFIX
            )


def test_job_roles_write_efs_only_through_the_layers_access_point(node):
    storage, layers = node.stack.storage, node.stack.layers
    layers_point = {
        "Fn::Join": [
            "",
            [
                "arn:",
                {"Ref": "AWS::Partition"},
                ":elasticfilesystem:",
                {"Ref": "AWS::Region"},
                ":",
                {"Ref": "AWS::AccountId"},
                ":access-point/",
                {"Ref": node.logical_id(storage.layers_access_point)},
            ],
        ]
    }
    for role in layers.task_roles:
        writes = [s for s in node.role_statements(role) if WRITE in as_list(s["Action"])]
        assert len(writes) == 1
        (write,) = writes
        assert write["Resource"] == {"Fn::GetAtt": [node.logical_id(storage.file_system), "Arn"]}
        assert write["Condition"]["StringEquals"] == {"elasticfilesystem:AccessPointArn": layers_point}
        services = {a.split(":")[0] for a in node.role_actions(role)}
        assert services <= {"elasticfilesystem", "s3", "secretsmanager"}
    # The pip step's role never reads the Pennsieve secret; the populate role does.
    assert not any(a.startswith("secretsmanager:") for a in node.role_actions(layers.job_role))
    assert "secretsmanager:GetSecretValue" in node.role_actions(layers.populate_role)


def test_the_function_runs_only_its_task_definitions_and_passes_only_their_roles(node):
    layers, compute = node.stack.layers, node.stack.compute
    statements = node.role_statements(node.stack.functions.roles["layer_jobs"])
    (run,) = [s for s in statements if s["Action"] == "ecs:RunTask"]
    assert {r["Ref"] for r in run["Resource"]} == {
        node.logical_id(t) for t in layers.task_definitions.values()
    }
    assert run["Condition"] == {
        "ArnEquals": {"ecs:cluster": {"Fn::GetAtt": [node.logical_id(compute.cluster), "Arn"]}}
    }
    (passes,) = [s for s in statements if s["Action"] == "iam:PassRole"]
    passed = {r["Fn::GetAtt"][0] for r in passes["Resource"]}
    assert passed == {node.logical_id(r) for r in (compute.execution_role, *layers.task_roles)}
    assert passes["Condition"] == {"StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}}
    assert not any("RegisterTaskDefinition" in str(s["Action"]) for s in statements)


def test_the_function_deletes_only_this_nodes_layer_access_points_and_never_writes_files(node):
    role = node.stack.functions.roles["layer_jobs"]
    statements = node.role_statements(role)
    (delete,) = [s for s in statements if s["Action"] == "elasticfilesystem:DeleteAccessPoint"]
    assert delete["Condition"] == {
        "StringEquals": {"aws:ResourceTag/pennflow:node": "pennflow"},
        "Null": {"aws:ResourceTag/pennflow:layer": "false"},
    }
    (tag,) = [s for s in statements if s["Action"] == "elasticfilesystem:TagResource"]
    assert tag["Condition"] == {"StringEquals": {"elasticfilesystem:CreateAction": "CreateAccessPoint"}}
    actions = node.role_actions(role)
    assert not {WRITE, "elasticfilesystem:ClientMount", "elasticfilesystem:ClientRootAccess"} & actions
    (s3,) = [s for s in statements if "s3:GetObject" in as_list(s["Action"])]
    bucket = node.logical_id(node.stack.storage.log_bucket)
    assert s3["Resource"] == {"Fn::Join": ["", [{"Fn::GetAtt": [bucket, "Arn"]}, "/layer-jobs/*"]]}


def test_the_function_has_an_errors_alarm(node):
    alarms = [a["Properties"] for a in node.resources("AWS::CloudWatch::Alarm").values()]
    name = {"Name": "FunctionName", "Value": {"Ref": node.logical_id(node.stack.layers.function)}}
    assert any(a.get("MetricName") == "Errors" and name in a.get("Dimensions", []) for a in alarms)


def test_the_layer_build_image_is_a_validated_setting():
    from stacks.settings import SettingsError, load_settings

    image = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/layer-build:2"
    assert load_settings({"layerBuildImage": image}).layer_build_image == image
    with pytest.raises(SettingsError, match=r"^pennflow\.layerBuildImage: String should match pattern"):
        load_settings({"layerBuildImage": "Not An Image"})
