"""Intrinsics resolve to the names the moto node creates, and roles read every kind of policy."""

from __future__ import annotations

from tests.iam.template import Names, NodeTemplate

TEMPLATE = {
    "Resources": {
        "Table1A2B3C4D": {"Type": "AWS::DynamoDB::GlobalTable", "Properties": {}},
        "Secret9F8E7D6C": {"Type": "AWS::SecretsManager::Secret", "Properties": {"Name": "node/secret"}},
        "Role11223344": {
            "Type": "AWS::IAM::Role",
            "Properties": {
                "Policies": [
                    {"PolicyDocument": {"Statement": [{"Effect": "Allow", "Action": "a:B", "Resource": "*"}]}}
                ],
                "ManagedPolicyArns": [
                    {
                        "Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
                    }
                ],
            },
        },
        "Policy55667788": {
            "Type": "AWS::IAM::Policy",
            "Properties": {
                "Roles": [{"Ref": "Role11223344"}],
                "PolicyDocument": {
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Action": "dynamodb:GetItem",
                            "Resource": {"Fn::GetAtt": ["Table1A2B3C4D", "Arn"]},
                        }
                    ]
                },
            },
        },
    }
}


def test_refs_attributes_and_functions_resolve_to_one_set_of_names():
    names = Names(TEMPLATE, suffix="t1")
    names.set("Secret9F8E7D6C", Ref="arn:aws:secretsmanager:us-east-1:123456789012:secret:node/secret-XyZ123")
    assert names.resolve({"Ref": "Table1A2B3C4D"}) == "table1a2b3c4d-t1"
    assert names.resolve({"Fn::Sub": "${Table1A2B3C4D.Arn}/index/*"}) == (
        "arn:aws:dynamodb:us-east-1:123456789012:table/table1a2b3c4d-t1/index/*"
    )
    assert names.resolve(
        {"Fn::Sub": ["${X}:${AWS::Region}:${!Literal}", {"X": {"Ref": "Secret9F8E7D6C"}}]}
    ) == ("arn:aws:secretsmanager:us-east-1:123456789012:secret:node/secret-XyZ123:us-east-1:${Literal}")
    assert names.resolve(
        {"Fn::Select": [1, {"Fn::Split": [",", {"Fn::Join": [",", ["a", {"Ref": "AWS::AccountId"}]]}]}]}
    ) == ("123456789012")


def test_a_role_has_its_inline_attached_and_managed_statements():
    statements = NodeTemplate(TEMPLATE).role_statements("Role11223344")
    assert [s["Action"] for s in statements] == [
        "a:B",
        "dynamodb:GetItem",
        ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
    ]
    assert statements[1]["Resource"] == "arn:aws:dynamodb:us-east-1:123456789012:table/table1a2b3c4d"
