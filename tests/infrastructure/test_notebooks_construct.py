"""Notebook sessions (stacks/notebooks.py): nothing with the interactive setting off (the default
node), and with it on (the variant) a no-ingress security group, per-slot session roles with ECS
Exec's channels, the notebooks function and its rule, and the notebook users' policy."""

from __future__ import annotations

import pytest

from pennflow.api import notebooks as notebooks_api
from pennflow.node import notebook_runs as sessions
from stacks import constants as C
from stacks.settings import SettingsError, load_settings
from tests.infrastructure.conftest import as_list


def properties(node, construct) -> dict:
    return node.json["Resources"][node.logical_id(construct)]["Properties"]


def api_environment(node) -> dict:
    return properties(node, node.stack.functions["api"])["Environment"]["Variables"]


def test_with_interactive_off_the_node_has_no_notebook_resource(node):
    assert node.stack.notebooks is None
    assert "notebooks" not in node.stack.functions.functions
    assert not [k for k in node.json["Resources"] if "Notebook" in k or "Session" in k]
    assert notebooks_api.ENV_FUNCTION not in api_environment(node)  # so the API answers 409


def test_the_session_security_group_has_no_ingress_and_reaches_efs(variant):
    group = variant.stack.notebooks.security_group
    group_id = variant.logical_id(group)
    assert "SecurityGroupIngress" not in properties(variant, group)
    ingress_to_group = [
        r for r in variant.resources("AWS::EC2::SecurityGroupIngress").values()
        if r["Properties"]["GroupId"] == {"Fn::GetAtt": [group_id, "GroupId"]}
    ]  # fmt: skip
    assert ingress_to_group == []
    from_sessions = {
        r["Properties"]["FromPort"]
        for r in variant.resources("AWS::EC2::SecurityGroupIngress").values()
        if r["Properties"].get("SourceSecurityGroupId") == {"Fn::GetAtt": [group_id, "GroupId"]}
    }
    assert from_sessions == {2049, 443}  # EFS, and the interface endpoints (the variant has no NAT)
    endpoints = [
        r for r in variant.resources("AWS::EC2::VPCEndpoint").values()
        if "ssmmessages" in str(r["Properties"]["ServiceName"])
    ]  # fmt: skip
    assert len(endpoints) == 1


def test_each_slot_has_a_session_role_with_its_own_folder_layers_and_ecs_exec(variant):
    roles = variant.stack.notebooks.task_roles
    assert sorted(roles) == ["slot-00", "slot-01", "slot-02"]
    for slot, role in roles.items():
        props = properties(variant, role)
        assert props["RoleName"] == f"lab_eu-west-1_{slot}-{sessions.ROLE_KIND}"
        statements = variant.role_statements(role)
        actions = {a for s in statements for a in as_list(s["Action"])}
        assert {
            "ssmmessages:CreateControlChannel",
            "ssmmessages:CreateDataChannel",
            "ssmmessages:OpenControlChannel",
            "ssmmessages:OpenDataChannel",
        } <= actions
        assert not [a for a in actions if a.startswith(("s3:", "dynamodb:", "secretsmanager:", "ecs:"))]
        (own,) = [s for s in statements if s.get("Sid") == "OwnRunSlotReadWrite"]
        access_point = variant.stack.storage.slot_access_points[slot]
        assert own["Condition"]["StringEquals"]["elasticfilesystem:AccessPointArn"] == variant.stack.resolve(
            access_point.access_point_arn
        )


def test_the_runtime_and_the_stack_agree_on_the_names():
    assert (C.NOTEBOOK_GROUP, C.NOTEBOOK_TAG_KEY, C.NOTEBOOK_ROLE_KIND, C.NOTEBOOK_TOKEN_PARAMETER) == (
        sessions.GROUP,
        sessions.SESSION_TAG,
        sessions.ROLE_KIND,
        sessions.TOKEN_PARAMETER,
    )
    assert C.PORT_FORWARDING_DOCUMENT == sessions.PORT_FORWARDING_DOCUMENT
    assert C.ENV["notebooks_function"] == notebooks_api.ENV_FUNCTION
    assert C.ENV["notebook_principals"] == notebooks_api.ENV_PRINCIPALS


def test_the_notebooks_function_gets_the_stopped_session_tasks_and_runs_them_only(variant):
    notebooks = variant.stack.notebooks
    rule = properties(variant, notebooks.rule)
    assert rule["EventPattern"]["detail"]["group"] == [sessions.GROUP]
    assert rule["EventPattern"]["detail"]["lastStatus"] == ["STOPPED"]
    env = properties(variant, notebooks.function)["Environment"]["Variables"]
    assert env["NOTEBOOK_IDLE_MINUTES"] == "30" and env["NOTEBOOK_FAMILY_PREFIX"] == "lab_nb-"
    manager = properties(variant, notebooks.manager_policy)["PolicyDocument"]["Statement"]
    (run,) = [s for s in manager if s["Action"] == "ecs:RunTask"]
    assert run["Resource"] == "arn:aws:ecs:eu-west-1:123456789012:task-definition/lab_nb-*:*"
    assert "ecs:cluster" in run["Condition"]["ArnEquals"]


def test_the_api_knows_the_principals_and_may_hand_sessions_on(variant):
    env = api_environment(variant)
    assert env[notebooks_api.ENV_PRINCIPALS] == (
        "arn:aws:iam::123456789012:role/lab/analyst,arn:aws:iam::123456789012:user/jo"
    )
    assert env[notebooks_api.ENV_FUNCTION] == "lab_notebooks"
    statements = properties(variant, variant.stack.notebooks.users_policy)["PolicyDocument"]["Statement"]
    assert {s["Sid"] for s in statements} == {
        "CallSessionRoutes",
        "PortForwardToSessionTasks",
        "PortForwardingDocumentOnly",
        "EndOwnSessions",
        "ReadSessionTokens",
    }


def test_the_users_policy_lets_only_tagged_session_tasks_be_port_forwarded(variant):
    users = properties(variant, variant.stack.notebooks.users_policy)
    assert users["Roles"] == ["analyst"] and users["Users"] == ["jo"]
    statements = {s["Sid"]: s for s in users["PolicyDocument"]["Statement"]}
    forward = statements["PortForwardToSessionTasks"]
    assert forward["Action"] == "ssm:StartSession"
    assert forward["Condition"] == {"StringLike": {f"aws:ResourceTag/{sessions.SESSION_TAG}": "*"}}
    document = statements["PortForwardingDocumentOnly"]
    assert document["Resource"] == "arn:aws:ssm:eu-west-1::document/AWS-StartPortForwardingSession"
    assert statements["ReadSessionTokens"]["Action"] == "ssm:GetParameter"
    assert statements["ReadSessionTokens"]["Resource"].endswith("/*/notebook-token")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"interactive": True}, "pennflow: interactive true needs notebookPrincipals"),
        ({"notebookPrincipals": ["arn:aws:iam::123:role/x"]}, "pennflow.notebookPrincipals.0"),
        ({"notebookIdleMinutes": 1}, "pennflow.notebookIdleMinutes"),
        ({"notebookPython": "python3"}, "pennflow.notebookPython"),
    ],
)
def test_bad_notebook_settings_stop_the_synth_naming_the_field(raw, message):
    with pytest.raises(SettingsError) as refused:
        load_settings(raw)
    assert message in str(refused.value)
