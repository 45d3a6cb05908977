"""Every policy statement in the template: no wildcard data access anywhere."""

from __future__ import annotations

from typing import Any

from tests.infrastructure.conftest import as_list

DATA_SERVICES = ("s3", "dynamodb", "elasticfilesystem", "secretsmanager")
POLICY_DOCUMENT_PROPERTIES = ("PolicyDocument", "FileSystemPolicy", "KeyPolicy")


def all_statements(template: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(logical id, statement) for identity policies, inline role policies and resource policies."""
    found = []
    for logical_id, resource in template["Resources"].items():
        properties = resource.get("Properties", {})
        documents = [properties[key] for key in POLICY_DOCUMENT_PROPERTIES if key in properties]
        documents += [inline["PolicyDocument"] for inline in properties.get("Policies", [])]
        for document in documents:
            found += [(logical_id, statement) for statement in as_list(document.get("Statement", []))]
    return found


def allowed_data_statements(template: dict[str, Any]) -> list[tuple[str, dict[str, Any], list[str]]]:
    result = []
    for logical_id, statement in all_statements(template):
        if statement.get("Effect") != "Allow":
            continue
        actions = [
            a for a in as_list(statement.get("Action", [])) if a == "*" or a.split(":")[0] in DATA_SERVICES
        ]
        if actions:
            result.append((logical_id, statement, actions))
    return result


def test_walk_sees_the_policies_it_must_check(node):
    services = {a.split(":")[0] for _, _, actions in allowed_data_statements(node.json) for a in actions}
    assert set(DATA_SERVICES) <= services


def test_no_allow_statement_has_an_all_actions_wildcard(node):
    offenders = [
        (logical_id, statement["Action"])
        for logical_id, statement in all_statements(node.json)
        if statement.get("Effect") == "Allow" and "*" in as_list(statement.get("Action", []))
    ]
    assert offenders == []


def test_data_actions_name_actions_without_wildcards(node):
    offenders = [
        (logical_id, action)
        for logical_id, _, actions in allowed_data_statements(node.json)
        for action in actions
        if "*" in action
    ]
    assert offenders == []


def test_data_actions_never_apply_to_every_resource(node):
    offenders = [
        (logical_id, actions)
        for logical_id, statement, actions in allowed_data_statements(node.json)
        if "*" in as_list(statement.get("Resource", []))
    ]
    assert offenders == []


def test_the_variant_node_follows_the_same_rules(variant):
    bad = [
        (logical_id, actions)
        for logical_id, statement, actions in allowed_data_statements(variant.json)
        if "*" in as_list(statement.get("Resource", [])) or any("*" in a for a in actions)
    ]
    assert bad == []
