"""Resuming runs on the node: the retention setting, the kept-slot cleanup schedule, and the IAM that
lets the runs manager redrive (and only its own node's executions) and the API reach the resume function."""

from __future__ import annotations

import json

import pytest

from stacks.resume import RELEASE_EXPIRED_EVENT
from stacks.settings import SettingsError, load_settings
from tests.infrastructure.conftest import as_list


def environment_of(node, name: str) -> dict[str, str]:
    function = node.json["Resources"][node.logical_id(node.stack.functions[name])]
    return function["Properties"]["Environment"]["Variables"]


def test_runs_manager_functions_get_the_retention_setting(node, variant):
    for name in ("finalize", "resume", "status", "cancel", "prepare"):
        assert environment_of(node, name)["FAILED_RUN_RETENTION_DAYS"] == "7"
    assert "FAILED_RUN_RETENTION_DAYS" not in environment_of(node, "api")


def test_the_setting_is_refused_beyond_what_redrive_allows():
    assert load_settings({"failedRunRetentionDays": 0}).failed_run_retention_days == 0
    with pytest.raises(SettingsError, match=r"pennflow.failedRunRetentionDays: .*less than or equal to 14"):
        load_settings({"failedRunRetentionDays": 15})


def test_the_cleanup_runs_the_resume_function_on_a_schedule_with_the_dlq(node):
    rule = node.json["Resources"][node.logical_id(node.stack.resume.release_rule)]["Properties"]
    assert rule["ScheduleExpression"] == "rate(15 minutes)"
    (target,) = rule["Targets"]
    resume = node.logical_id(node.stack.functions["resume"])
    assert target["Arn"] == {"Fn::GetAtt": [resume, "Arn"]}
    assert json.loads(target["Input"]) == RELEASE_EXPIRED_EVENT
    queue = node.logical_id(node.stack.functions.dead_letter_queue)
    assert target["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": [queue, "Arn"]}}


def test_only_the_runs_manager_may_redrive_and_only_this_node_s_executions(node, variant):
    for synthesized in (node, variant):
        roles = synthesized.stack.functions.roles
        redrive = [
            statement
            for statement in synthesized.role_statements(roles["runs_manager"])
            if "states:RedriveExecution" in as_list(statement["Action"])
        ]
        assert len(redrive) == 1
        for other in set(roles) - {"runs_manager"}:
            assert "states:RedriveExecution" not in synthesized.role_actions(roles[other]), other
    (resource,) = as_list(redrive[0]["Resource"])
    assert resource == "arn:aws:states:eu-west-1:123456789012:execution:lab_*:*"  # the variant's, concrete


def test_the_api_may_invoke_the_resume_function_and_knows_its_name(node):
    api_role = node.stack.functions.roles["api"]
    resume = node.logical_id(node.stack.functions["resume"])
    invokes = [
        statement
        for statement in node.role_statements(api_role)
        if "lambda:InvokeFunction" in as_list(statement["Action"])
    ]
    resources = [r for statement in invokes for r in as_list(statement["Resource"])]
    assert {"Fn::GetAtt": [resume, "Arn"]} in resources
    assert environment_of(node, "api")["RESUME_FUNCTION_NAME"] == "pennflow_resume"
