"""The run-lifecycle Lambda functions: runtime, layer, tracing, logs, DLQ, asset and least privilege."""

from __future__ import annotations

import json

from aws_cdk.assertions import Annotations, Match

from stacks import constants as C
from tests.infrastructure.conftest import as_list


def function_properties(node, name: str) -> dict:
    return node.json["Resources"][node.logical_id(node.stack.functions[name])]["Properties"]


def test_python312_arm64_functions_with_their_handlers_and_names(node):
    functions = node.stack.functions.functions
    assert set(C.LAMBDA_NAMES) <= set(functions)
    # Two more: the custom resources that restrict the VPC's default security group and that record the
    # folder's workflows in the workflows table (stacks/workflow_records.py).
    assert len(node.resources("AWS::Lambda::Function")) == len(functions) + 2
    for name in node.stack.functions.functions:
        properties = function_properties(node, name)
        assert properties["FunctionName"] == f"pennflow_{name.replace('_', '-')}"
        assert properties["Runtime"] == "python3.12"
        assert properties["Architectures"] == ["arm64"]
        assert properties["Handler"] == f"lambdas.{name}.handler"
        assert properties["TracingConfig"] == {"Mode": "Active"}


def test_powertools_comes_from_the_public_v3_layer_of_the_pinned_release(node):
    for name in node.stack.functions.functions:
        (layer,) = function_properties(node, name)["Layers"]
        assert layer == "{{resolve:ssm:/aws/service/powertools/python/arm64/python3.12/3.37.0}}"


def test_dependency_layer_ships_when_built_and_synth_warns_when_not(node, variant):
    for name in node.stack.functions.functions:
        (layer,) = [x for x in function_properties(variant, name)["Layers"] if isinstance(x, dict)]
        assert layer == {"Ref": variant.logical_id(variant.stack.functions.dependencies_layer)}
    (layer,) = variant.resources("AWS::Lambda::LayerVersion").values()
    assert layer["Properties"]["CompatibleRuntimes"] == ["python3.12"]
    assert layer["Properties"]["CompatibleArchitectures"] == ["arm64"]
    Annotations.from_stack(node.stack).has_warning(
        "/PennflowNode/Functions", Match.string_like_regexp("PyYAML and requests")
    )
    assert node.resources("AWS::Lambda::LayerVersion") == {}


def test_each_function_logs_to_its_own_group_with_retention(node):
    groups = set()
    for name in node.stack.functions.functions:
        group_id = function_properties(node, name)["LoggingConfig"]["LogGroup"]["Ref"]
        assert node.json["Resources"][group_id]["Properties"]["RetentionInDays"] == 30
        groups.add(group_id)
    assert len(groups) == len(node.stack.functions.functions)


def test_asynchronously_invoked_functions_have_the_encrypted_ssl_only_dlq(node):
    queue = node.stack.functions.dead_letter_queue
    queue_arn = {"Fn::GetAtt": [node.logical_id(queue), "Arn"]}
    for name in node.stack.functions.functions:
        has_dlq = function_properties(node, name).get("DeadLetterConfig") == {"TargetArn": queue_arn}
        assert has_dlq == (name in C.ASYNC_LAMBDAS), name
    assert node.json["Resources"][node.logical_id(queue)]["Properties"]["SqsManagedSseEnabled"] is True
    (policy,) = [
        p
        for p in node.resources("AWS::SQS::QueuePolicy").values()
        if p["Properties"]["Queues"] == [{"Ref": node.logical_id(queue)}]
    ]
    assert any(
        s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        for s in policy["Properties"]["PolicyDocument"]["Statement"]
    )


def test_reserved_concurrency_where_configured(node, variant):
    for name in node.stack.functions.functions:
        assert function_properties(node, name).get(
            "ReservedConcurrentExecutions"
        ) == C.RESERVED_CONCURRENCY.get(name)
        assert "ReservedConcurrentExecutions" not in function_properties(variant, name)


def test_only_efs_functions_join_the_vpc_and_mount_runs(node):
    runs_access_point = node.logical_id(node.stack.storage.runs_access_point)
    for name in node.stack.functions.functions:
        properties = function_properties(node, name)
        assert ("VpcConfig" in properties) == (name in C.EFS_LAMBDAS), name
        if name in C.EFS_LAMBDAS:
            (mount,) = properties["FileSystemConfigs"]
            assert mount["LocalMountPath"] == "/mnt/runs"
            assert {"Ref": runs_access_point} in mount["Arn"]["Fn::Join"][1]


def test_environment_carries_names_never_secret_values(node):
    secret_id = node.logical_id(node.stack.compute.pennsieve_secret)
    for name in node.stack.functions.functions:
        variables = function_properties(node, name)["Environment"]["Variables"]
        runs_table = {"Ref": node.logical_id(node.stack.storage.runs_table)}
        assert variables.get("RUNS_TABLE", runs_table) == runs_table
        assert variables["POWERTOOLS_METRICS_NAMESPACE"] == "pennflow"
        # Secrets travel as their ARN (a Ref), to the functions that read them at runtime; never a value.
        assert variables.get("PENNSIEVE_SECRET_ARN", {"Ref": secret_id}) == {"Ref": secret_id}
        # trigger_fire gets the API's environment: it starts runs the way the API does.
        assert ("PENNSIEVE_SECRET_ARN" in variables) == (name in (*C.LAMBDA_NAMES, "trigger_fire"))
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
    assert (asset / "pennflow" / "workflow" / "asl.py").is_file()
    assert len({function_properties(node, n)["Code"]["S3Key"] for n in node.stack.functions.functions}) == 1


def test_functions_that_start_queued_runs_share_the_runs_manager_role(node):
    functions = node.stack.functions
    manager = node.logical_id(functions.roles["runs_manager"])
    for name in node.stack.functions.functions:
        role = function_properties(node, name)["Role"]["Fn::GetAtt"][0]
        assert (role == manager) == (name in C.RUNS_MANAGER_LAMBDAS), name


def test_api_role_reaches_no_compute_and_no_file_system(node):
    services = {a.split(":")[0] for a in node.role_actions(node.stack.functions.roles["api"])}
    # codebuild: StartBuild of the node's processor-builds project only (test_processors_construct)
    assert services == {
        "dynamodb",
        "lambda",
        "states",
        "iam",
        "logs",
        "xray",
        "s3",
        "secretsmanager",
        "ecr",
        "codebuild",
    }
    statements = node.role_statements(node.stack.functions.roles["api"])
    (pass_role,) = [s for s in statements if s["Action"] == "iam:PassRole"]
    assert pass_role["Condition"] == {"StringEquals": {"iam:PassedToService": "states.amazonaws.com"}}


def test_api_keys_runs_with_the_pennsieve_secret_image_digests_and_the_manifest_prefix(node):
    storage, compute = node.stack.storage, node.stack.compute
    statements = node.role_statements(node.stack.functions.roles["api"])
    by_action = {json.dumps(s["Action"]): s for s in statements}
    secret = by_action['"secretsmanager:GetSecretValue"']
    assert secret["Resource"] == {"Ref": node.logical_id(compute.pennsieve_secret)}
    manifest = by_action['"s3:PutObject"']
    results = node.logical_id(storage.results_bucket)
    assert manifest["Resource"] == {"Fn::Join": ["", [{"Fn::GetAtt": [results, "Arn"]}, "/runs/*"]]}
    images = json.dumps(by_action['"ecr:DescribeImages"']["Resource"])
    assert ":ecr:*:" in images and ":repository/*" in images
    runs = node.logical_id(storage.runs_table)
    index = {"Fn::Join": ["", [{"Fn::GetAtt": [runs, "Arn"]}, "/index/by-content-key"]]}
    assert any(
        "dynamodb:Query" in as_list(s["Action"]) and index in as_list(s["Resource"]) for s in statements
    )
    variables = function_properties(node, "api")["Environment"]["Variables"]
    assert variables["RESULTS_BUCKET"] == {"Ref": results}
    assert variables["LAYERS_TABLE"] == {"Ref": node.logical_id(storage.layers_table)}


def test_list_batches_and_download_reach_only_what_they_read(node):
    roles = node.stack.functions.roles
    assert {a.split(":")[0] for a in node.role_actions(roles["list_batches"])} == {
        "dynamodb",
        "elasticfilesystem",
        "logs",
        "xray",
        "ec2",
        "s3",
    }
    # list_batches writes a scatter's batch list under runs/ for its Distributed Map, and only that
    statements = node.role_statements(roles["list_batches"])
    (put,) = [s for s in statements if "s3:PutObject" in as_list(s["Action"])]
    assert as_list(put["Action"]) == ["s3:PutObject"]
    bucket = node.logical_id(node.stack.storage.results_bucket)
    assert put["Resource"] == {"Fn::Join": ["", [{"Fn::GetAtt": [bucket, "Arn"]}, "/runs/*"]]}
    download = node.role_actions(roles["download"])
    assert {a for a in download if a.startswith(("s3:", "secretsmanager:"))} == {
        "s3:GetObject",
        "secretsmanager:GetSecretValue",
    }
    assert not any(
        a.startswith("dynamodb:") for a in node.role_actions(roles["list_batches"]) if "Write" in a
    )


def test_runs_manager_registers_task_definitions_and_passes_only_the_task_roles(node):
    functions, compute = node.stack.functions, node.stack.compute
    statements = node.role_statements(functions.roles["runs_manager"])
    (register,) = [s for s in statements if "ecs:RegisterTaskDefinition" in as_list(s["Action"])]
    assert register["Resource"] == "*"  # no resource-level permissions exist; acknowledged in stacks/
    passes = [s for s in statements if s["Action"] == "iam:PassRole"]
    # the other passes the slot function roles to Lambda (tests/infrastructure/test_lambda_compute.py)
    (pass_role,) = [s for s in passes if "lambda.amazonaws.com" not in str(s["Condition"])]
    assert pass_role["Condition"] == {"StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}}
    execution, slot_roles = pass_role["Resource"]
    assert execution == {"Fn::GetAtt": [node.logical_id(compute.execution_role), "Arn"]}
    assert slot_roles == node.stack.resolve(compute.slot_roles_pattern)
    assert slot_roles["Fn::Join"][1][-3:] == [":role/pennflow_", {"Ref": "AWS::Region"}, "_*"]


def test_runs_manager_controls_only_this_clusters_tasks(node):
    cluster = {"Fn::GetAtt": [node.logical_id(node.stack.compute.cluster), "Arn"]}
    statements = node.role_statements(node.stack.functions.roles["runs_manager"])
    ecs = [s for s in statements if any(a.startswith("ecs:") for a in as_list(s["Action"]))]
    controls = [s for s in ecs if {"ecs:StopTask", "ecs:ListTasks"} & set(as_list(s["Action"]))]
    assert len(controls) == 2
    for statement in controls:
        assert statement["Condition"] == {"ArnEquals": {"ecs:cluster": cluster}}


def test_runs_manager_reads_processor_logs_and_writes_run_objects_under_runs(node):
    functions, storage, compute = node.stack.functions, node.stack.storage, node.stack.compute
    statements = node.role_statements(functions.roles["runs_manager"])
    (read_logs,) = [s for s in statements if "logs:GetLogEvents" in as_list(s["Action"])]
    assert read_logs["Resource"] == {"Fn::GetAtt": [node.logical_id(compute.processor_log_group), "Arn"]}
    (archive,) = [s for s in statements if "s3:PutObject" in as_list(s["Action"])]
    prefixes = {r["Fn::Join"][1][0]["Fn::GetAtt"][0]: r["Fn::Join"][1][1] for r in archive["Resource"]}
    assert prefixes == {
        node.logical_id(storage.log_bucket): "/runs/*",
        node.logical_id(storage.results_bucket): "/runs/*",
    }


def test_environment_matches_the_function_settings(node):
    """Each function reads its settings from these variables; a missing one fails its cold start."""
    from lambdas.download import DownloadFunctionSettings
    from lambdas.settings import ApiSettings, NodeSettings
    from pennflow.triggers.wiring import TriggerSettings

    def required(*models) -> set[str]:
        return {
            f.alias
            for model in models
            for f in model.model_fields.values()
            if f.is_required() and f.alias != "AWS_REGION"  # set by the Lambda runtime
        }

    trigger = required(TriggerSettings) | {"TRIGGER_FIRE_QUEUE_URL"}
    registry = {
        "PROCESSORS_TABLE",
        "PROCESSOR_BUILD_PROJECT",
        "PROCESSOR_MANIFEST_BUCKET",
        "PROCESSOR_REPOSITORY_URI",
    }
    expected = {
        "api": required(ApiSettings) | {"TRIGGERS_TABLE", "TRIGGER_STATE_TABLE", "LAYERS_TABLE"} | registry,
        "processor_builds": registry,
        "download": required(DownloadFunctionSettings),
        "webhook": trigger | {"WEBHOOK_SECRET_ARN"},
        "trigger_events": trigger,
        "trigger_fire": trigger | required(ApiSettings),
        "join": {"JOINS_TABLE"},  # its table only (stacks/joins.py)
    }
    for name in node.stack.functions.functions:
        variables = set(function_properties(node, name)["Environment"]["Variables"])
        wanted = expected.get(name, required(NodeSettings))
        assert wanted <= variables, (name, wanted - variables)


def test_lambda_default_policies_hold_no_wildcard_resource_but_x_ray(node):
    """Every other unscoped statement lives in a policy of its own, acknowledged with its own reason."""
    for role in node.stack.functions.roles.values():
        default = role.node.find_child("DefaultPolicy")
        statements = node.json["Resources"][node.logical_id(default)]["Properties"]["PolicyDocument"][
            "Statement"
        ]
        unscoped = {a for s in statements if s["Resource"] == "*" for a in as_list(s["Action"])}
        assert unscoped <= {"xray:PutTraceSegments", "xray:PutTelemetryRecords"}, role.node.path


def test_the_runs_manager_hands_a_preparation_on_to_prepare_only(node):
    functions = node.stack.functions
    statements = node.role_statements(functions.roles["runs_manager"])
    (invoke,) = [s for s in statements if s["Action"] == "lambda:InvokeFunction"]
    assert invoke["Resource"]["Fn::Join"][1][-1] == ":function:pennflow_prepare"
    for name in C.RUNS_MANAGER_LAMBDAS:
        variables = function_properties(node, name)["Environment"]["Variables"]
        assert variables["PREPARE_FUNCTION_NAME"] == "pennflow_prepare"


def test_api_reads_run_logs_and_results_only_under_runs_prefixes(node):
    """GET /runs/{id}/logs and /results: read-only, on the node's own buckets and processor log group."""
    storage, compute = node.stack.storage, node.stack.compute
    statements = node.role_statements(node.stack.functions.roles["api"])
    logs_bucket, results = node.logical_id(storage.log_bucket), node.logical_id(storage.results_bucket)

    def objects(bucket: str, keys: str) -> dict:
        return {"Fn::Join": ["", [{"Fn::GetAtt": [bucket, "Arn"]}, keys]]}

    (get,) = [s for s in statements if "s3:GetObject" in as_list(s["Action"])]
    assert as_list(get["Action"]) == ["s3:GetObject"]
    assert as_list(get["Resource"]) == [objects(logs_bucket, "/runs/*/logs/*"), objects(results, "/runs/*")]
    listings = {
        s["Resource"]["Fn::GetAtt"][0]: s["Condition"]
        for s in statements
        if as_list(s["Action"]) == ["s3:ListBucket"]
    }
    assert listings == {
        logs_bucket: {"StringLike": {"s3:prefix": ["runs/*/logs/*"]}},
        results: {"StringLike": {"s3:prefix": ["runs/*"]}},
    }
    (events,) = [s for s in statements if "logs:FilterLogEvents" in as_list(s["Action"])]
    assert sorted(as_list(events["Action"])) == ["logs:FilterLogEvents", "logs:GetLogEvents"]
    assert events["Resource"] == {"Fn::GetAtt": [node.logical_id(compute.processor_log_group), "Arn"]}
    assert not any(
        a.startswith("s3:") and a not in ("s3:GetObject", "s3:ListBucket", "s3:PutObject")
        for a in node.role_actions(node.stack.functions.roles["api"])
    )
    variables = function_properties(node, "api")["Environment"]["Variables"]
    assert variables["LOG_ARCHIVE_BUCKET"] == {"Ref": logs_bucket}
    assert variables["PROCESSOR_LOG_GROUP"] == {"Ref": node.logical_id(compute.processor_log_group)}
