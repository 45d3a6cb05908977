"""cdk-nag acknowledgements, each with its written reason, scoped to one construct.

cdk-nag 3 reads CDK's own `Validations.of(construct).acknowledge(...)` records. Wildcard findings
(AwsSolutions-IAM5) are acknowledged one finding at a time, so a new wildcard added later still
fails the synth until someone writes down why it is needed.
"""

from __future__ import annotations

import json
from typing import Any

from aws_cdk import Acknowledgment, Stack, Validations
from aws_cdk import aws_iam as iam
from constructs import IConstruct

MIN_REASON_CHARS = 40  # a reason is a sentence that explains, not a label


def acknowledge(construct: IConstruct, rule_id: str, reason: str) -> None:
    if len(reason) < MIN_REASON_CHARS:
        raise ValueError(f"acknowledgement of {rule_id} needs a written reason, got {reason!r}")
    Validations.of(construct).acknowledge(Acknowledgment(id=rule_id, reason=reason))


def acknowledge_wildcards(construct: IConstruct, statement: iam.PolicyStatement, reason: str) -> None:
    """Acknowledge the IAM5 findings of one policy statement (its `*` actions and resources) only."""
    findings = wildcard_findings(Stack.of(construct).resolve(statement.to_statement_json()))
    if not findings:
        raise ValueError(f"statement has no wildcard to acknowledge: {statement.to_json()}")
    for finding in findings:
        acknowledge(construct, f"AwsSolutions-IAM5[{finding}]", reason)


def wildcard_findings(statement: dict[str, Any]) -> list[str]:
    """The finding ids cdk-nag's IAM5 rule reports for a resolved statement (same flattening)."""
    actions = _as_list(statement.get("Action"))
    resources = [_flatten(resource) for resource in _as_list(statement.get("Resource"))]
    return [f"Action::{a}" for a in actions if "*" in a] + [f"Resource::{r}" for r in resources if "*" in r]


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _flatten(node: Any) -> str:
    """Port of cdk-nag's flattenCfnReference: intrinsics become `<LogicalId.Attr>` / `<Ref>` text."""
    if isinstance(node, str):
        return node.replace("${", "<").replace("}", ">")
    if isinstance(node, dict):
        if "Fn::Join" in node:
            delimiter, items = node["Fn::Join"]
            return delimiter.join(_flatten(item) for item in items)
        if "Fn::Sub" in node:
            return _flatten(node["Fn::Sub"])
        if "Fn::GetAtt" in node:
            resource, attribute = node["Fn::GetAtt"]
            return f"<{_flatten(resource)}.{_flatten(attribute)}>"
        if "Fn::ImportValue" in node:
            return _flatten(node["Fn::ImportValue"])
        if "Ref" in node:
            return f"<{_flatten(node['Ref'])}>"
    return json.dumps(node, separators=(",", ":"))
