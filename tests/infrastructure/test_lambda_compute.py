"""computeType lambda in the template: slot function roles, the runs manager's and state machines'
grants on '<node>_fn-*' only, the repository's pull for those functions, the build's Lambda variant."""

from __future__ import annotations

import json

from pennflow.node import processor_builds
from pennflow.processors import lambda_bootstrap as boot
from stacks import lambda_compute
from tests.infrastructure.conftest import as_list


def properties(node, resource) -> dict:
    return node.json["Resources"][node.logical_id(resource)]["Properties"]


def statements_with(node, role, action: str) -> list[dict]:
    return [s for s in node.role_statements(role) if action in as_list(s["Action"])]


def test_each_slot_function_role_mounts_its_own_access_point_and_reads_its_own_parameters(node):
    storage, roles = node.stack.storage, node.stack.lambda_compute.roles
    assert set(roles) == set(storage.slot_access_points)
    for slot, role in roles.items():
        template_role = properties(node, role)
        assert template_role["RoleName"] == {
            "Fn::Join": ["", ["pennflow_", {"Ref": "AWS::Region"}, f"-fn_{slot}"]]
        }
        trust = template_role["AssumeRolePolicyDocument"]["Statement"]
        assert [s["Principal"] for s in trust] == [{"Service": "lambda.amazonaws.com"}]
        (mount,) = statements_with(node, role, "elasticfilesystem:ClientMount")
        condition = json.dumps(mount["Condition"]["StringEquals"]["elasticfilesystem:AccessPointArn"])
        for other, access_point in storage.slot_access_points.items():
            assert (node.logical_id(access_point) in condition) == (other == slot)
        (parameters,) = statements_with(node, role, "ssm:GetParameter")
        text = json.dumps(parameters["Resource"])
        assert f"/slots/{slot}/run-id" in text and f"/slots/{slot}/session-token" in text and "*" not in text
        assert not statements_with(node, role, "secretsmanager:GetSecretValue")  # no Pennsieve secret


def test_the_runs_manager_manages_only_the_nodes_processor_functions_and_passes_only_their_roles(node):
    role = node.stack.functions.roles["runs_manager"]
    (manage,) = statements_with(node, role, "lambda:CreateFunction")
    assert set(as_list(manage["Action"])) == set(lambda_compute.FUNCTION_ACTIONS)
    assert json.dumps(manage["Resource"]).endswith(':function:pennflow_fn-*"]]}')
    passes = [s for s in statements_with(node, role, "iam:PassRole") if "lambda" in json.dumps(s)]
    (to_lambda,) = passes
    assert to_lambda["Condition"] == {"StringEquals": {"iam:PassedToService": "lambda.amazonaws.com"}}
    text = json.dumps(to_lambda["Resource"])
    assert ':role/pennflow_", {"Ref": "AWS::Region"}, "-fn_*"' in text
    (pull,) = statements_with(node, role, "ecr:BatchGetImage")
    repository = {"Fn::GetAtt": [node.logical_id(node.stack.processors.repository), "Arn"]}
    assert as_list(pull["Resource"]) == [repository]


def test_the_state_machines_invoke_only_processor_functions_and_the_repository_lets_only_them_pull(node):
    (invoke,) = [
        s
        for s in statements_with(node, node.stack.orchestration.role, "lambda:InvokeFunction")
        if "pennflow_fn-" in json.dumps(s["Resource"])
    ]
    assert all("pennflow_fn-*" in json.dumps(r) for r in as_list(invoke["Resource"]))
    policy = properties(node, node.stack.processors.repository)["RepositoryPolicyText"]
    (lambda_pull,) = [
        s for s in policy["Statement"] if s.get("Principal") == {"Service": "lambda.amazonaws.com"}
    ]
    assert set(as_list(lambda_pull["Action"])) == set(lambda_compute.PULL_FOR_LAMBDA)
    assert "pennflow_fn-*" in json.dumps(lambda_pull["Condition"]["ArnLike"]["aws:sourceArn"])


def test_the_runs_manager_functions_know_the_prefix_and_role_template(node):
    functions = node.stack.functions
    for name in ("prepare", "resume"):
        variables = properties(node, functions[name])["Environment"]["Variables"]
        assert variables[lambda_compute.ENV_PREFIX] == "pennflow_fn-"
        assert "-fn_{slot}" in json.dumps(variables[lambda_compute.ENV_ROLE_TEMPLATE])


def test_the_build_makes_the_lambda_variant_and_exports_what_the_outcome_function_reads(node):
    project = properties(node, node.stack.processors.project)
    spec = json.loads(project["Source"]["BuildSpec"])
    assert spec["env"]["exported-variables"] == [
        processor_builds.ENV_DIGEST,
        processor_builds.ENV_LAMBDA_DIGEST,
        processor_builds.ENV_LAMBDA_PROBLEM,
    ]
    assert spec["phases"]["build"]["commands"][-len(lambda_compute.LAMBDA_VARIANT_COMMANDS) :] == (
        lambda_compute.LAMBDA_VARIANT_COMMANDS
    )
    names = {v["Name"] for v in project["Environment"]["EnvironmentVariables"]}
    assert {"BOOTSTRAP_BUCKET", "BOOTSTRAP_KEY"} <= names
    (read,) = statements_with(node, node.stack.processors.project.role, "s3:GetObject")
    assert "*" not in json.dumps(read["Resource"])  # the bootstrap's one object


def test_a_daily_rule_prunes_unused_functions(node):
    rule = properties(node, node.stack.lambda_compute.prune_rule)
    assert rule["ScheduleExpression"] == "rate(1 day)"
    (target,) = rule["Targets"]
    assert json.loads(target["Input"]) == lambda_compute.PRUNE_EVENT


def test_slot_function_roles_put_only_processor_step_events_and_write_the_processor_log_group(node):
    log_group = node.logical_id(node.stack.compute.processor_log_group)
    for role in node.stack.lambda_compute.roles.values():
        (put,) = statements_with(node, role, "events:PutEvents")
        assert as_list(put["Action"]) == ["events:PutEvents"]
        assert put["Condition"] == {
            "StringEquals": {"events:source": boot.EVENT_SOURCE, "events:detail-type": boot.EVENT_DETAIL_TYPE}
        }
        (bus,) = as_list(put["Resource"])
        assert json.dumps(bus).endswith(':event-bus/default"]]}')
        (write,) = statements_with(node, role, "logs:PutLogEvents")
        assert "logs:CreateLogStream" in as_list(write["Action"])
        assert log_group in json.dumps(write["Resource"])


def test_the_step_events_of_the_nodes_functions_reach_the_status_function(node):
    rule = properties(node, node.stack.lambda_compute.step_events_rule)
    assert rule["EventPattern"] == {
        "source": [boot.EVENT_SOURCE],
        "detail-type": [boot.EVENT_DETAIL_TYPE],
        "detail": {"functionName": [{"prefix": "pennflow_fn-"}]},
    }
    (target,) = rule["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": [node.logical_id(node.stack.functions["status"]), "Arn"]}
    assert "DeadLetterConfig" in target and target["RetryPolicy"]["MaximumRetryAttempts"] >= 1
