"""The tier's policy evaluation follows AWS's rules (IAM User Guide, "Policy evaluation logic")."""

from __future__ import annotations

import pytest

from tests.iam.evaluator import Request, evaluate, wildcard_match

TABLE = "arn:aws:dynamodb:us-east-1:123456789012:table/runs"
CLUSTER = "arn:aws:ecs:us-east-1:123456789012:cluster/node"


def allow(action, resource, **condition):
    return {
        "Effect": "Allow",
        "Action": action,
        "Resource": resource,
        **({"Condition": condition} if condition else {}),
    }


def test_nothing_is_allowed_without_a_statement():
    decision = evaluate([], Request("dynamodb:GetItem", TABLE))
    assert not decision.allowed and decision.reason == "no statement allows it"


def test_actions_match_case_insensitively_with_wildcards_and_resources_case_sensitively():
    statements = [allow("DynamoDB:Get*", TABLE)]
    assert evaluate(statements, Request("dynamodb:getitem", TABLE)).allowed
    assert not evaluate(statements, Request("dynamodb:PutItem", TABLE)).allowed
    assert not evaluate(statements, Request("dynamodb:GetItem", TABLE.upper())).allowed
    assert wildcard_match("arn:aws:s3:::b/runs/*", "arn:aws:s3:::b/runs/r-1/manifest.json")
    assert not wildcard_match("arn:aws:s3:::b/runs/*", "arn:aws:s3:::b/layers/x")
    assert wildcard_match("slot-0?", "slot-07") and not wildcard_match("slot-0?", "slot-007")


def test_an_explicit_deny_beats_any_allow():
    statements = [
        allow("s3:*", "*"),
        {"Effect": "Deny", "Sid": "NoDelete", "Action": "s3:DeleteObject", "Resource": "*"},
    ]
    decision = evaluate(statements, Request("s3:DeleteObject", "arn:aws:s3:::b/k"))
    assert not decision.allowed and "NoDelete" in decision.reason
    assert evaluate(statements, Request("s3:GetObject", "arn:aws:s3:::b/k")).allowed


def test_not_action_and_not_resource_match_everything_else():
    statements = [{"Effect": "Allow", "NotAction": "s3:Delete*", "NotResource": "arn:aws:s3:::secret/*"}]
    assert evaluate(statements, Request("s3:GetObject", "arn:aws:s3:::b/k")).allowed
    assert not evaluate(statements, Request("s3:DeleteObject", "arn:aws:s3:::b/k")).allowed
    assert not evaluate(statements, Request("s3:GetObject", "arn:aws:s3:::secret/k")).allowed


def test_every_condition_must_hold_and_values_of_one_key_are_alternatives():
    statement = allow(
        "iam:PassRole",
        "*",
        StringEquals={"iam:PassedToService": ["ecs-tasks.amazonaws.com", "states.amazonaws.com"]},
    )
    assert evaluate(
        [statement], Request("iam:PassRole", "r", {"iam:passedtoservice": "states.amazonaws.com"})
    ).allowed
    assert not evaluate(
        [statement], Request("iam:PassRole", "r", {"iam:PassedToService": "lambda.amazonaws.com"})
    ).allowed
    assert not evaluate([statement], Request("iam:PassRole", "r")).allowed  # the key is absent


def test_arn_conditions_compare_part_by_part():
    statement = allow("ecs:ListTasks", "*", ArnEquals={"ecs:cluster": CLUSTER})
    assert evaluate([statement], Request("ecs:ListTasks", "*", {"ecs:cluster": CLUSTER})).allowed
    assert not evaluate(
        [statement], Request("ecs:ListTasks", "*", {"ecs:cluster": CLUSTER + "-other"})
    ).allowed
    like = allow("x:Y", "*", ArnLike={"aws:SourceArn": "arn:aws:states:*:123456789012:*"})
    assert evaluate(
        [like], Request("x:Y", "*", {"aws:SourceArn": "arn:aws:states:eu-west-1:123456789012:x:y"})
    ).allowed
    assert not evaluate(
        [like], Request("x:Y", "*", {"aws:SourceArn": "arn:aws:states:eu:1:123456789012:x"})
    ).allowed


def test_negated_operators_hold_when_the_key_is_absent_and_if_exists_skips_absent_keys():
    negated = allow("x:Y", "*", StringNotEquals={"aws:ResourceTag/team": "other"})
    assert evaluate([negated], Request("x:Y", "*")).allowed
    assert not evaluate([negated], Request("x:Y", "*", {"aws:ResourceTag/team": "other"})).allowed
    if_exists = allow("x:Y", "*", StringEqualsIfExists={"aws:ResourceTag/team": "mine"})
    assert evaluate([if_exists], Request("x:Y", "*")).allowed
    assert not evaluate([if_exists], Request("x:Y", "*", {"aws:ResourceTag/team": "yours"})).allowed


def test_null_bool_and_multivalued_keys():
    tagged = allow("elasticfilesystem:DeleteAccessPoint", "*", Null={"aws:ResourceTag/layer": "false"})
    assert evaluate(
        [tagged], Request("elasticfilesystem:DeleteAccessPoint", "*", {"aws:ResourceTag/layer": "x"})
    ).allowed
    assert not evaluate([tagged], Request("elasticfilesystem:DeleteAccessPoint", "*")).allowed
    secure = {
        "Effect": "Deny",
        "Action": "*",
        "Resource": "*",
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }
    assert not evaluate(
        [allow("*", "*"), secure], Request("s3:GetObject", "*", {"aws:SecureTransport": False})
    ).allowed
    assert evaluate(
        [allow("*", "*"), secure], Request("s3:GetObject", "*", {"aws:SecureTransport": True})
    ).allowed
    any_value = allow("x:Y", "*", **{"ForAnyValue:StringLike": {"aws:TagKeys": "pennflow:*"}})
    assert evaluate([any_value], Request("x:Y", "*", {"aws:TagKeys": ["Name", "pennflow:node"]})).allowed
    all_values = allow("x:Y", "*", **{"ForAllValues:StringLike": {"aws:TagKeys": "pennflow:*"}})
    assert not evaluate([all_values], Request("x:Y", "*", {"aws:TagKeys": ["Name", "pennflow:node"]})).allowed
    with pytest.raises(ValueError, match="multivalued"):
        evaluate(
            [allow("x:Y", "*", StringLike={"aws:TagKeys": "a"})],
            Request("x:Y", "*", {"aws:TagKeys": ["a", "b"]}),
        )


def test_an_operator_the_tier_does_not_evaluate_fails_loudly():
    with pytest.raises(NotImplementedError, match="NumericLessThan"):
        evaluate(
            [allow("x:Y", "*", NumericLessThan={"s3:max-keys": "10"})],
            Request("x:Y", "*", {"s3:max-keys": "5"}),
        )


def test_resource_policies_match_their_principal():
    role = "arn:aws:iam::123456789012:role/download"
    policy = [{"Effect": "Allow", "Principal": {"AWS": [role]}, "Action": "elasticfilesystem:ClientMount"}]
    assert evaluate(policy, Request("elasticfilesystem:ClientMount", "fs", principal=role)).allowed
    assert not evaluate(policy, Request("elasticfilesystem:ClientMount", "fs", principal=role + "-x")).allowed
