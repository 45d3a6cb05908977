"""The synthesized node as the IAM tier reads it: each role's policy statements and each function's
environment, with every intrinsic resolved to the concrete names the moto node is built with.

A resource's physical name is its explicit name in the template, else one derived from its logical
id; ids AWS generates (file systems, access points, secret ARNs) are set by the moto node as it
creates them (``Names.set``). Policies and environments are therefore resolved to the same names,
and a policy that grants the wrong table or key prefix is seen as such.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

ACCOUNT = "123456789012"  # moto's default account: the node is synthesized for it
REGION = "us-east-1"
PARTITION = "aws"

# AWS managed policies a role of the node attaches, narrowed to the statements that matter here.
MANAGED_POLICIES: dict[str, list[dict[str, Any]]] = {
    "service-role/AWSLambdaBasicExecutionRole": [
        {
            "Effect": "Allow",
            "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
            "Resource": "*",
        }
    ],
    "service-role/AmazonAPIGatewayPushToCloudWatchLogs": [
        {
            "Effect": "Allow",
            "Action": [
                "logs:CreateLogGroup",
                "logs:CreateLogStream",
                "logs:DescribeLogGroups",
                "logs:DescribeLogStreams",
                "logs:PutLogEvents",
                "logs:GetLogEvents",
                "logs:FilterLogEvents",
            ],
            "Resource": "*",
        }
    ],
}
PSEUDO = {
    "AWS::AccountId": ACCOUNT,
    "AWS::Region": REGION,
    "AWS::Partition": PARTITION,
    "AWS::URLSuffix": "amazonaws.com",
    "AWS::StackName": "pennflow-node",
    "AWS::NoValue": None,
}
# The property holding a resource's explicit name, per type.
NAME_PROPERTIES = {
    "AWS::DynamoDB::GlobalTable": "TableName",
    "AWS::DynamoDB::Table": "TableName",
    "AWS::S3::Bucket": "BucketName",
    "AWS::ECS::Cluster": "ClusterName",
    "AWS::Logs::LogGroup": "LogGroupName",
    "AWS::IAM::Role": "RoleName",
    "AWS::Lambda::Function": "FunctionName",
    "AWS::StepFunctions::StateMachine": "StateMachineName",
    "AWS::SecretsManager::Secret": "Name",
    "AWS::SQS::Queue": "QueueName",
    "AWS::SNS::Topic": "TopicName",
    "AWS::ECS::TaskDefinition": "Family",
    "AWS::Events::Rule": "Name",
    "AWS::IAM::ManagedPolicy": "ManagedPolicyName",
    "AWS::ECR::Repository": "RepositoryName",
    "AWS::CodeBuild::Project": "Name",
    "AWS::ECS::CapacityProvider": "Name",
}


def _arn(service: str, resource: str, *, region: str = REGION, account: str = ACCOUNT) -> str:
    return f"arn:{PARTITION}:{service}:{region}:{account}:{resource}"


def _refs_and_attributes(resource_type: str, name: str) -> dict[str, str]:
    """What Ref and Fn::GetAtt return for a resource of this type named ``name``."""
    if resource_type in ("AWS::DynamoDB::GlobalTable", "AWS::DynamoDB::Table"):
        arn = _arn("dynamodb", f"table/{name}")
        return {"Ref": name, "Arn": arn, "StreamArn": f"{arn}/stream/*"}
    if resource_type == "AWS::S3::Bucket":
        return {"Ref": name, "Arn": f"arn:{PARTITION}:s3:::{name}", "DomainName": f"{name}.s3.amazonaws.com"}
    if resource_type == "AWS::ECS::Cluster":
        return {"Ref": name, "Arn": _arn("ecs", f"cluster/{name}")}
    if resource_type == "AWS::Logs::LogGroup":
        return {"Ref": name, "Arn": _arn("logs", f"log-group:{name}:*")}
    if resource_type == "AWS::IAM::Role":
        return {"Ref": name, "Arn": f"arn:{PARTITION}:iam::{ACCOUNT}:role/{name}", "RoleId": f"AROA{name}"}
    if resource_type == "AWS::Lambda::Function":
        return {"Ref": name, "Arn": _arn("lambda", f"function:{name}")}
    if resource_type == "AWS::StepFunctions::StateMachine":
        arn = _arn("states", f"stateMachine:{name}")
        return {"Ref": arn, "Arn": arn, "Name": name}
    if resource_type == "AWS::SecretsManager::Secret":
        return {"Ref": _arn("secretsmanager", f"secret:{name}-AbCdEf")}
    if resource_type == "AWS::SQS::Queue":
        return {
            "Ref": f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{name}",
            "Arn": _arn("sqs", name),
            "QueueName": name,
        }
    if resource_type == "AWS::SNS::Topic":
        return {"Ref": _arn("sns", name), "TopicArn": _arn("sns", name), "TopicName": name}
    if resource_type == "AWS::ECS::TaskDefinition":
        arn = _arn("ecs", f"task-definition/{name}:1")
        return {"Ref": arn, "TaskDefinitionArn": arn}
    if resource_type == "AWS::Events::Rule":
        return {"Ref": name, "Arn": _arn("events", f"rule/{name}")}
    if resource_type == "AWS::EFS::FileSystem":
        return {"Ref": name, "Arn": _arn("elasticfilesystem", f"file-system/{name}"), "FileSystemId": name}
    if resource_type == "AWS::EFS::AccessPoint":
        return {"Ref": name, "Arn": _arn("elasticfilesystem", f"access-point/{name}"), "AccessPointId": name}
    if resource_type in ("AWS::EC2::Subnet", "AWS::EC2::VPC"):
        return {"Ref": name}
    if resource_type == "AWS::EC2::SecurityGroup":
        return {"Ref": name, "GroupId": name}
    if resource_type == "AWS::IAM::ManagedPolicy":
        return {
            "Ref": f"arn:{PARTITION}:iam::{ACCOUNT}:policy/{name}",
            "PolicyArn": f"arn:{PARTITION}:iam::{ACCOUNT}:policy/{name}",
        }
    if resource_type == "AWS::KMS::Key":
        return {"Ref": name, "Arn": _arn("kms", f"key/{name}")}
    if resource_type == "AWS::ECR::Repository":
        uri = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{name}"
        return {"Ref": name, "Arn": _arn("ecr", f"repository/{name}"), "RepositoryUri": uri}
    if resource_type == "AWS::CodeBuild::Project":
        return {"Ref": name, "Arn": _arn("codebuild", f"project/{name}")}
    if resource_type == "AWS::ECS::CapacityProvider":  # Ref: its name (what RunTask's strategy names)
        return {"Ref": name}
    if resource_type == "AWS::ApiGateway::RestApi":
        return {"Ref": name, "RootResourceId": f"{name}-root"}
    raise KeyError(f"the IAM tier does not know what Ref/GetAtt give for {resource_type}")


def derived_name(logical_id: str, suffix: str = "") -> str:
    """A valid name for every resource type (buckets: lower case, at most 63 characters)."""
    base = re.sub(r"[^a-z0-9-]", "", logical_id.lower())
    return f"{base[: 62 - len(suffix)]}-{suffix}" if suffix else base[:63]


@dataclass
class Names:
    """Physical names and ids of the template's resources: explicit, derived, or set once created."""

    template: Mapping[str, Any]
    suffix: str = ""  # makes derived names unique to one test within a shared moto
    created: dict[str, dict[str, str]] = field(default_factory=dict)  # logical id -> Ref/attributes

    def name(self, logical_id: str) -> str:
        resource = self.template["Resources"][logical_id]
        explicit = resource.get("Properties", {}).get(NAME_PROPERTIES.get(resource["Type"], ""))
        return self.resolve(explicit) if explicit else derived_name(logical_id, self.suffix)

    def set(self, logical_id: str, **values: str) -> None:
        self.created.setdefault(logical_id, {}).update(values)

    def attribute(self, logical_id: str, attribute: str) -> str:
        if attribute in self.created.get(logical_id, {}):
            return self.created[logical_id][attribute]
        resource_type = self.template["Resources"][logical_id]["Type"]
        name = self.created.get(logical_id, {}).get("Ref") or self.name(logical_id)
        values = _refs_and_attributes(resource_type, name)
        if attribute not in values:
            raise KeyError(f"{logical_id} ({resource_type}) has no attribute {attribute} in the IAM tier")
        return values[attribute]

    def resolve(self, value: Any) -> Any:
        """The value with every intrinsic function replaced by what CloudFormation would give."""
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        if not isinstance(value, dict):
            return value
        if len(value) != 1 or not next(iter(value)).startswith(("Fn::", "Ref")):
            return {k: self.resolve(v) for k, v in value.items()}
        ((function, argument),) = value.items()
        if function == "Ref":
            return PSEUDO[argument] if argument in PSEUDO else self.attribute(argument, "Ref")
        if function == "Fn::GetAtt":
            logical_id, attribute = argument if isinstance(argument, list) else argument.split(".", 1)
            return self.attribute(logical_id, attribute)
        if function == "Fn::Join":
            separator, parts = argument
            return separator.join(str(self.resolve(p)) for p in self.resolve(parts))
        if function == "Fn::Select":
            index, items = argument
            return self.resolve(items)[int(self.resolve(index))]
        if function == "Fn::Split":
            separator, text = argument
            return str(self.resolve(text)).split(separator)
        if function == "Fn::Sub":
            return self._substitute(argument)
        raise KeyError(f"the IAM tier does not resolve {function}")

    def _substitute(self, argument: Any) -> str:
        text, variables = (argument, {}) if isinstance(argument, str) else argument

        def replace(match: re.Match[str]) -> str:
            expression = match.group(1)
            if expression.startswith("!"):
                return "${" + expression[1:] + "}"
            if expression in variables:
                return str(self.resolve(variables[expression]))
            if expression in PSEUDO:
                return str(PSEUDO[expression])
            if "." in expression:
                return self.attribute(*expression.split(".", 1))
            return self.attribute(expression, "Ref")

        return re.sub(r"\$\{([^}]+)\}", replace, text)


@dataclass
class NodeTemplate:
    """The synthesized template and the names its resources get on moto."""

    json: Mapping[str, Any]
    suffix: str = ""
    names: Names = field(init=False)

    def __post_init__(self) -> None:
        self.names = Names(self.json, self.suffix)

    @property
    def resources(self) -> Mapping[str, Any]:
        return self.json["Resources"]

    def of_type(self, resource_type: str) -> dict[str, Any]:
        return {k: v for k, v in self.resources.items() if v["Type"] == resource_type}

    def function_id(self, name: str) -> str:
        """The logical id of the Lambda function deployed as ``name`` (its FunctionName)."""
        for logical_id in self.of_type("AWS::Lambda::Function"):
            if self.names.name(logical_id) == name:
                return logical_id
        raise KeyError(f"no function named {name} in the template")

    def role_of_function(self, function_id: str) -> str:
        role = self.resources[function_id]["Properties"]["Role"]
        return role["Fn::GetAtt"][0]

    def task_definition_roles(self, task_definition_id: str) -> dict[str, str | None]:
        properties = self.resources[task_definition_id]["Properties"]
        return {
            key: properties[key]["Fn::GetAtt"][0] if key in properties else None
            for key in ("TaskRoleArn", "ExecutionRoleArn")
        }

    def role_arn(self, role_id: str) -> str:
        return self.names.attribute(role_id, "Arn")

    def role_statements(self, role_id: str) -> list[dict[str, Any]]:
        """Every identity-policy statement of the role, resolved: inline, attached, customer and AWS managed."""
        properties = self.resources[role_id]["Properties"]
        statements = [s for p in properties.get("Policies", []) for s in p["PolicyDocument"]["Statement"]]
        for policy in self.of_type("AWS::IAM::Policy").values():
            if {"Ref": role_id} in policy["Properties"].get("Roles", []):
                statements += policy["Properties"]["PolicyDocument"]["Statement"]
        customer = {
            self.names.attribute(k, "Ref"): p for k, p in self.of_type("AWS::IAM::ManagedPolicy").items()
        }
        for policy in self.of_type("AWS::IAM::ManagedPolicy").values():
            if {"Ref": role_id} in policy["Properties"].get("Roles", []):
                statements += policy["Properties"]["PolicyDocument"]["Statement"]
        for arn in properties.get("ManagedPolicyArns", []):
            resolved = str(self.names.resolve(arn))
            if resolved in customer:  # the stack's own managed policy
                statements += customer[resolved]["Properties"]["PolicyDocument"]["Statement"]
            else:
                statements += MANAGED_POLICIES[resolved.split(":policy/", 1)[1]]
        return self.names.resolve(statements)

    def environment(self, function_id: str) -> dict[str, str]:
        """The function's environment as Lambda sets it: the template's variables and the runtime's."""
        variables = self.resources[function_id]["Properties"].get("Environment", {}).get("Variables", {})
        return {
            **{k: str(v) for k, v in self.names.resolve(variables).items()},
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_LAMBDA_FUNCTION_NAME": self.names.name(function_id),
        }
