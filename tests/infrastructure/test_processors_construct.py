"""Processors from source: the repository, the build project, the outcome function, their IAM."""

from __future__ import annotations

import json

from pennflow.node import processor_builds
from stacks import processors as construct
from tests.infrastructure.conftest import as_list


def properties(node, resource) -> dict:
    return node.json["Resources"][node.logical_id(resource)]["Properties"]


def statements_with(node, role, action: str) -> list[dict]:
    return [s for s in node.role_statements(role) if action in as_list(s["Action"])]


def test_the_repository_scans_on_push_and_keeps_tags_immutable(node):
    repository = properties(node, node.stack.processors.repository)
    assert repository["ImageScanningConfiguration"] == {"ScanOnPush": True}
    assert repository["ImageTagMutability"] == "IMMUTABLE"
    assert repository["RepositoryName"] == "pennflow_processors"


def test_the_project_builds_privileged_and_exports_the_digest_with_no_token_in_plain_text(node):
    project = properties(node, node.stack.processors.project)
    assert project["Environment"]["PrivilegedMode"] is True
    spec = json.loads(project["Source"]["BuildSpec"])
    assert spec["env"]["exported-variables"][0] == processor_builds.ENV_DIGEST
    commands = "\n".join(spec["phases"]["build"]["commands"])
    for variable in (
        processor_builds.ENV_SOURCE_URL,
        processor_builds.ENV_SOURCE_TAG,
        processor_builds.ENV_IMAGE_TAG,
        processor_builds.ENV_MANIFEST_KEY,
    ):
        assert f"${variable}" in commands, variable
    assert "GIT_TOKEN" in commands and "GIT_TOKEN" not in {
        v["Name"] for v in project["Environment"]["EnvironmentVariables"]
    }


def test_the_build_role_pushes_only_to_the_nodes_repository(node):
    processors = node.stack.processors
    role = processors.project.role
    repository = {"Fn::GetAtt": [node.logical_id(processors.repository), "Arn"]}
    for statement in statements_with(node, role, "ecr:PutImage"):
        assert as_list(statement["Resource"]) == [repository]
    (login,) = statements_with(node, role, "ecr:GetAuthorizationToken")
    assert as_list(login["Action"]) == ["ecr:GetAuthorizationToken"]
    (tokens,) = statements_with(node, role, "secretsmanager:GetSecretValue")
    assert "pennflow_processor-tokens/*" in json.dumps(tokens["Resource"])
    (manifests,) = statements_with(node, role, "s3:PutObject")
    assert json.dumps(manifests["Resource"]).endswith('"/processors/*"]]}')


def test_the_api_may_start_only_this_project(node):
    processors, functions = node.stack.processors, node.stack.functions
    (start,) = statements_with(node, functions.roles["api"], "codebuild:StartBuild")
    assert as_list(start["Resource"]) == [{"Fn::GetAtt": [node.logical_id(processors.project), "Arn"]}]
    variables = properties(node, functions["api"])["Environment"]["Variables"]
    for name in (construct.ENV_TABLE, construct.ENV_PROJECT, construct.ENV_BUCKET, construct.ENV_REPOSITORY):
        assert name in variables, name


def test_the_outcome_function_reads_builds_and_writes_the_table(node):
    processors = node.stack.processors
    function = properties(node, processors.function)
    assert function["Handler"] == "lambdas.processor_builds.handler"
    assert "VpcConfig" not in function
    role = node.stack.functions.roles["processor_builds"]
    actions = node.role_actions(role)
    assert {"dynamodb:UpdateItem", "codebuild:BatchGetBuilds", "logs:GetLogEvents", "s3:GetObject"} <= actions
    assert not {a for a in actions if a.startswith(("codebuild:Start", "ecr:", "secretsmanager:"))}


def test_the_environment_names_agree_with_the_runtime():
    assert (construct.ENV_TABLE, construct.ENV_PROJECT, construct.ENV_BUCKET, construct.ENV_REPOSITORY) == (
        processor_builds.ENV_TABLE,
        processor_builds.ENV_PROJECT,
        processor_builds.ENV_BUCKET,
        processor_builds.ENV_REPOSITORY,
    )
    assert construct.MANIFEST_PREFIX == processor_builds.MANIFEST_PREFIX


def test_finished_builds_of_the_project_reach_the_function(node):
    processors = node.stack.processors
    rule = properties(node, processors.rule)
    pattern = rule["EventPattern"]
    assert pattern["source"] == ["aws.codebuild"]
    assert pattern["detail"]["project-name"] == [{"Ref": node.logical_id(processors.project)}]
    assert set(pattern["detail"]["build-status"]) == {"SUCCEEDED", "FAILED", "FAULT", "STOPPED", "TIMED_OUT"}
    (target,) = rule["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": [node.logical_id(processors.function), "Arn"]}
    assert "DeadLetterConfig" in target
