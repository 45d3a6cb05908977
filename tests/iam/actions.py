"""What IAM authorizes for each AWS API call the node makes: its actions, resource ARNs and
context keys, built from the call's parameters as in the Service Authorization Reference (SAR).

An operation without a mapping raises ``UnmappedOperation``: a call the tier cannot authorize
fails the test rather than slipping through unchecked.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlparse

from tests.iam.evaluator import Request
from tests.iam.template import ACCOUNT, PARTITION


class UnmappedOperation(LookupError):
    pass


class Lookup(Protocol):
    """Facts IAM knows about existing resources (read from moto without being authorized)."""

    def task_definition_roles(self, task_definition: str) -> list[str]: ...

    def access_point_tags(self, access_point_id: str) -> dict[str, str]: ...

    def task_token_machine(self, task_token: str) -> str: ...
    def access_point_file_system(self, access_point_id: str) -> str: ...


@dataclass(frozen=True)
class Call:
    service: str  # botocore's service name (``efs``, ``stepfunctions``...)
    operation: str
    params: Mapping[str, Any]
    region: str

    def arn(self, service: str, resource: str) -> str:
        return f"arn:{PARTITION}:{service}:{self.region}:{ACCOUNT}:{resource}"


Mapper = Callable[[Call, Lookup], list[Request]]
_MAPPERS: dict[tuple[str, str], Mapper] = {}
# Calls that need no IAM permission of the caller (unsigned APIs of other accounts' services).
UNAUTHORIZED_CALLS = {("cognito-idp", "InitiateAuth"), ("cognito-idp", "RespondToAuthChallenge")}


def requests_for(call: Call, lookup: Lookup) -> list[Request]:
    if (call.service, call.operation) in UNAUTHORIZED_CALLS:
        return []
    mapper = _MAPPERS.get((call.service, call.operation))
    if mapper is None:
        raise UnmappedOperation(
            f"{call.service}.{call.operation} has no IAM mapping in tests/iam/actions.py: add one"
        )
    return mapper(call, lookup)


def maps(service: str, *operations: str) -> Callable[[Mapper], Mapper]:
    def register(mapper: Mapper) -> Mapper:
        for operation in operations:
            _MAPPERS[(service, operation)] = mapper
        return mapper

    return register


def _request(action: str, resource: str, **context: Any) -> Request:
    return Request(action, resource, context)


# --- DynamoDB: table/<name>, or table/<name>/index/<index> for index reads -------------------------


def _table(call: Call, name: str, index: str | None = None) -> str:
    if name.startswith("arn:"):
        return name
    return call.arn("dynamodb", f"table/{name}" + (f"/index/{index}" if index else ""))


@maps("dynamodb", "GetItem", "PutItem", "UpdateItem", "DeleteItem", "DescribeTable", "Scan", "Query")
def _dynamodb_item(call: Call, _: Lookup) -> list[Request]:
    table = _table(call, call.params["TableName"], call.params.get("IndexName"))
    return [_request(f"dynamodb:{call.operation}", table)]


@maps("dynamodb", "BatchGetItem", "BatchWriteItem")
def _dynamodb_batch(call: Call, _: Lookup) -> list[Request]:
    return [_request(f"dynamodb:{call.operation}", _table(call, t)) for t in call.params["RequestItems"]]


_TRANSACT_ACTIONS = {
    "Put": "PutItem",
    "Update": "UpdateItem",
    "Delete": "DeleteItem",
    "ConditionCheck": "ConditionCheckItem",
    "Get": "GetItem",
}


@maps("dynamodb", "TransactWriteItems", "TransactGetItems")
def _dynamodb_transaction(call: Call, _: Lookup) -> list[Request]:
    """A transaction is authorized item by item, each with the action of its kind (SAR, DynamoDB)."""
    requests = []
    for item in call.params["TransactItems"]:
        ((kind, body),) = item.items()
        requests.append(_request(f"dynamodb:{_TRANSACT_ACTIONS[kind]}", _table(call, body["TableName"])))
    return requests


# --- S3: arn:aws:s3:::bucket for bucket actions, arn:aws:s3:::bucket/key for object actions --------


def _object(call: Call) -> str:
    return f"arn:{PARTITION}:s3:::{call.params['Bucket']}/{call.params['Key']}"


def bucket_arn(bucket: str) -> str:
    return f"arn:{PARTITION}:s3:::{bucket}"


_OBJECT_ACTIONS = {
    "GetObject": "s3:GetObject",
    "HeadObject": "s3:GetObject",  # HEAD is authorized as GetObject
    "PutObject": "s3:PutObject",
    "CreateMultipartUpload": "s3:PutObject",
    "UploadPart": "s3:PutObject",
    "CompleteMultipartUpload": "s3:PutObject",
    "AbortMultipartUpload": "s3:AbortMultipartUpload",
    "DeleteObject": "s3:DeleteObject",
}


@maps("s3", *_OBJECT_ACTIONS)
def _s3_object(call: Call, _: Lookup) -> list[Request]:
    return [_request(_OBJECT_ACTIONS[call.operation], _object(call))]


@maps("s3", "ListObjectsV2", "ListObjects")
def _s3_list(call: Call, _: Lookup) -> list[Request]:
    return [
        _request(
            "s3:ListBucket", bucket_arn(call.params["Bucket"]), **{"s3:prefix": call.params.get("Prefix", "")}
        )
    ]


def missing_key_request(bucket: str, key: str) -> Request:
    """S3 answers NoSuchKey (404) for a missing key only to a caller allowed s3:ListBucket on the
    bucket; anyone else gets AccessDenied (403) (S3 User Guide, GetObject "Permissions")."""
    return _request("s3:ListBucket", bucket_arn(bucket), **{"s3:prefix": key})


# --- ECS ------------------------------------------------------------------------------------------


def _cluster_arn(call: Call) -> str:
    cluster = call.params.get("cluster", "default")
    return cluster if cluster.startswith("arn:") else call.arn("ecs", f"cluster/{cluster}")


def _cluster_name(call: Call) -> str:
    return _cluster_arn(call).rsplit("/", 1)[1]


def _task_arn(call: Call, task: str) -> str:
    return task if task.startswith("arn:") else call.arn("ecs", f"task/{_cluster_name(call)}/{task}")


def _task_definition_arn(call: Call, task_definition: str) -> str:
    if task_definition.startswith("arn:"):
        return task_definition
    return call.arn("ecs", f"task-definition/{task_definition}")


def _pass_roles(roles: list[str], service: str) -> list[Request]:
    return [_request("iam:PassRole", role, **{"iam:PassedToService": service}) for role in roles if role]


@maps("ecs", "RegisterTaskDefinition")
def _ecs_register(call: Call, _: Lookup) -> list[Request]:
    """No resource-level permission (SAR: RegisterTaskDefinition has no resource type); tags need
    ecs:TagResource with ecs:CreateAction, and the task and execution roles iam:PassRole."""
    requests = [_request("ecs:RegisterTaskDefinition", "*")]
    if call.params.get("tags"):
        requests.append(_request("ecs:TagResource", "*", **{"ecs:CreateAction": "RegisterTaskDefinition"}))
    roles = [call.params.get("taskRoleArn"), call.params.get("executionRoleArn")]
    return requests + _pass_roles([r for r in roles if r], "ecs-tasks.amazonaws.com")


@maps("ecs", "DescribeTaskDefinition")
def _ecs_describe_task_definition(call: Call, _: Lookup) -> list[Request]:
    return [_request("ecs:DescribeTaskDefinition", "*")]


@maps("ecs", "RunTask")
def _ecs_run_task(call: Call, lookup: Lookup) -> list[Request]:
    cluster = _cluster_arn(call)
    task_definition = call.params["taskDefinition"]
    requests = [
        _request("ecs:RunTask", _task_definition_arn(call, task_definition), **{"ecs:cluster": cluster})
    ]
    if call.params.get("tags") or call.params.get("propagateTags"):
        tasks = call.arn("ecs", f"task/{_cluster_name(call)}/*")
        requests.append(
            _request("ecs:TagResource", tasks, **{"ecs:CreateAction": "RunTask", "ecs:cluster": cluster})
        )
    overrides = call.params.get("overrides", {})
    roles = [overrides.get("taskRoleArn"), overrides.get("executionRoleArn")]
    roles = [r for r in roles if r] or lookup.task_definition_roles(task_definition)
    return requests + _pass_roles(roles, "ecs-tasks.amazonaws.com")


@maps("ecs", "ListTasks")
def _ecs_list_tasks(call: Call, _: Lookup) -> list[Request]:
    """The SAR lists ListTasks under the container-instance resource type, but a ListTasks that
    names no container instance (by cluster, family or status) has no such resource: IAM
    authorizes it against "*", so only a statement on "*" (scoped with the ecs:cluster condition
    key, which the SAR lists for ListTasks) allows it."""
    cluster = _cluster_arn(call)
    instance = call.params.get("containerInstance")
    if instance:
        resource = (
            instance
            if instance.startswith("arn:")
            else call.arn("ecs", f"container-instance/{_cluster_name(call)}/{instance}")
        )
    else:
        resource = "*"
    return [_request("ecs:ListTasks", resource, **{"ecs:cluster": cluster})]


@maps("ecs", "DescribeTasks")
def _ecs_describe_tasks(call: Call, _: Lookup) -> list[Request]:
    cluster = _cluster_arn(call)
    return [
        _request("ecs:DescribeTasks", _task_arn(call, t), **{"ecs:cluster": cluster})
        for t in call.params["tasks"]
    ]


@maps("ecs", "StopTask")
def _ecs_stop_task(call: Call, _: Lookup) -> list[Request]:
    return [
        _request("ecs:StopTask", _task_arn(call, call.params["task"]), **{"ecs:cluster": _cluster_arn(call)})
    ]


# --- EFS (IAM prefix elasticfilesystem) -----------------------------------------------------------


def _file_system(call: Call, file_system_id: str) -> str:
    return call.arn("elasticfilesystem", f"file-system/{file_system_id}")


def _access_point(call: Call, access_point_id: str) -> str:
    return call.arn("elasticfilesystem", f"access-point/{access_point_id}")


def _resource_tags(tags: Mapping[str, str]) -> dict[str, str]:
    return {f"aws:ResourceTag/{key}": value for key, value in tags.items()}


@maps("efs", "DescribeAccessPoints")
def _efs_describe_access_points(call: Call, _: Lookup) -> list[Request]:
    if "AccessPointId" in call.params:
        return [
            _request(
                "elasticfilesystem:DescribeAccessPoints", _access_point(call, call.params["AccessPointId"])
            )
        ]
    if "FileSystemId" in call.params:
        return [
            _request(
                "elasticfilesystem:DescribeAccessPoints", _file_system(call, call.params["FileSystemId"])
            )
        ]
    return [_request("elasticfilesystem:DescribeAccessPoints", "*")]


@maps("efs", "CreateAccessPoint")
def _efs_create_access_point(call: Call, _: Lookup) -> list[Request]:
    """Tagging on create also needs elasticfilesystem:TagResource (EFS User Guide, "Tagging on creation")."""
    tags = {t["Key"]: t["Value"] for t in call.params.get("Tags", [])}
    requests = [
        _request(
            "elasticfilesystem:CreateAccessPoint",
            _file_system(call, call.params["FileSystemId"]),
            **{f"aws:RequestTag/{k}": v for k, v in tags.items()},
        )
    ]
    if tags:
        requests.append(
            _request(
                "elasticfilesystem:TagResource",
                _access_point(call, "*"),
                **{"elasticfilesystem:CreateAction": "CreateAccessPoint"},
            )
        )
    return requests


@maps("efs", "DeleteAccessPoint")
def _efs_delete_access_point(call: Call, lookup: Lookup) -> list[Request]:
    access_point = call.params["AccessPointId"]
    tags = _resource_tags(lookup.access_point_tags(access_point))
    return [_request("elasticfilesystem:DeleteAccessPoint", _access_point(call, access_point), **tags)]


# --- SNS -----------------------------------------------------------------------------------------------


@maps("sns", "Publish")
def _sns_publish(call: Call, _: Lookup) -> list[Request]:
    return [_request("sns:Publish", call.params["TopicArn"])]


# --- Step Functions (IAM prefix states) ---------------------------------------------------------------


@maps("stepfunctions", "StartExecution")
def _states_start(call: Call, _: Lookup) -> list[Request]:
    return [_request("states:StartExecution", call.params["stateMachineArn"])]


@maps("stepfunctions", "DescribeExecution", "StopExecution", "GetExecutionHistory")
def _states_execution(call: Call, _: Lookup) -> list[Request]:
    return [_request(f"states:{call.operation}", call.params["executionArn"])]


@maps("stepfunctions", "DescribeStateMachine", "ListExecutions", "PublishStateMachineVersion")
def _states_machine(call: Call, _: Lookup) -> list[Request]:
    return [_request(f"states:{call.operation}", call.params["stateMachineArn"])]


@maps("stepfunctions", "SendTaskSuccess", "SendTaskFailure", "SendTaskHeartbeat")
def _states_callback(call: Call, lookup: Lookup) -> list[Request]:
    """The SAR names no resource type a callback's task token could be matched against for a
    service-integration task; Step Functions authorizes it against the state machine whose task
    issued the token (its AccessDenied message names that machine). The token does not show it, so
    the tier learns it from the test that issued the token (``recorder.issue_task_token``)."""
    return [_request(f"states:{call.operation}", lookup.task_token_machine(call.params["taskToken"]))]


@maps("stepfunctions", "ListStateMachines")
def _states_list(call: Call, _: Lookup) -> list[Request]:
    return [_request("states:ListStateMachines", "*")]


def _machine_setup(call: Call, arn: str) -> list[Request]:
    """Creating or updating a machine also passes its role, tags it, publishes a version and (with
    logging) sets up log delivery (Step Functions Developer Guide, "IAM policies for logging")."""
    requests = _pass_roles([call.params.get("roleArn")], "states.amazonaws.com")
    if call.params.get("tags"):
        requests.append(_request("states:TagResource", arn))
    if call.params.get("publish"):
        requests.append(_request("states:PublishStateMachineVersion", arn))
    if call.params.get("loggingConfiguration", {}).get("destinations"):
        requests += [
            _request(f"logs:{action}", "*")
            for action in (
                "CreateLogDelivery",
                "GetLogDelivery",
                "UpdateLogDelivery",
                "ListLogDeliveries",
                "PutResourcePolicy",
                "DescribeResourcePolicies",
                "DescribeLogGroups",
            )
        ]
    return requests


@maps("stepfunctions", "CreateStateMachine")
def _states_create(call: Call, _: Lookup) -> list[Request]:
    arn = call.arn("states", f"stateMachine:{call.params['name']}")
    return [_request("states:CreateStateMachine", arn), *_machine_setup(call, arn)]


@maps("stepfunctions", "UpdateStateMachine")
def _states_update(call: Call, _: Lookup) -> list[Request]:
    arn = call.params["stateMachineArn"]
    return [_request("states:UpdateStateMachine", arn), *_machine_setup(call, arn)]


# --- Lambda, Logs, Secrets Manager, SQS, ECR ------------------------------------------------------


def function_arn(call: Call, name: str) -> str:
    """A function name, partial or full ARN, with or without a qualifier, as IAM sees it."""
    if name.startswith("arn:"):
        return name
    return call.arn("lambda", f"function:{name}")


@maps("lambda", "Invoke")
def _lambda_invoke(call: Call, _: Lookup) -> list[Request]:
    name = function_arn(call, call.params["FunctionName"])
    qualifier = call.params.get("Qualifier")
    return [_request("lambda:InvokeFunction", f"{name}:{qualifier}" if qualifier else name)]


def _repository_of_image(call: Call, image: str) -> str:
    """``<account>.dkr.ecr.<region>.amazonaws.com/<repo>@sha256:...`` -> the repository's ARN."""
    host, _, rest = image.partition("/")
    account, region = host.split(".")[0], host.split(".")[3]
    repository = rest.split("@", 1)[0].rsplit(":", 1)[0] if "@" in rest else rest.rsplit(":", 1)[0]
    return f"arn:{PARTITION}:ecr:{region}:{account}:repository/{repository}"


@maps("lambda", "CreateFunction")
def _lambda_create(call: Call, lookup: Lookup) -> list[Request]:
    """SAR (Lambda): CreateFunction on the function, tags with lambda:TagResource, the execution role
    iam:PassRole to Lambda; an image function's pull is checked with the caller's ECR permissions, a
    VPC configuration with its ec2:Describe* and a file system with its DescribeMountTargets
    (Lambda developer guide: configuration-images, configuration-vpc, configuration-filesystem)."""
    name = function_arn(call, call.params["FunctionName"])
    requests = [_request("lambda:CreateFunction", name)]
    if call.params.get("Tags"):
        requests.append(_request("lambda:TagResource", name))
    image = call.params.get("Code", {}).get("ImageUri")
    if image:
        repository = _repository_of_image(call, image)
        requests += [_request(a, repository) for a in ("ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer")]
    if call.params.get("VpcConfig"):
        requests += [
            _request(a, "*")
            for a in ("ec2:DescribeSecurityGroups", "ec2:DescribeSubnets", "ec2:DescribeVpcs")
        ]
    for config in call.params.get("FileSystemConfigs", []):
        file_system = lookup.access_point_file_system(config["Arn"].rsplit("/", 1)[-1])
        requests.append(
            _request(
                "elasticfilesystem:DescribeMountTargets",
                call.arn("elasticfilesystem", f"file-system/{file_system}"),
            )
        )
    return requests + _pass_roles([call.params["Role"]], "lambda.amazonaws.com")


@maps("lambda", "GetFunction", "DeleteFunction")
def _lambda_function(call: Call, _: Lookup) -> list[Request]:
    return [_request(f"lambda:{call.operation}", function_arn(call, call.params["FunctionName"]))]


@maps("lambda", "ListTags")
def _lambda_list_tags(call: Call, _: Lookup) -> list[Request]:
    return [_request("lambda:ListTags", function_arn(call, call.params["Resource"]))]


@maps("lambda", "ListFunctions")
def _lambda_list(call: Call, _: Lookup) -> list[Request]:
    return [_request("lambda:ListFunctions", "*")]  # SAR: no resource type


def _log_group(call: Call, name: str) -> str:
    """CloudWatch Logs authorizes log-group actions on ``log-group:<name>:*`` (its ARN as
    DescribeLogGroups returns it) and stream actions on ``log-group:<name>:log-stream:<stream>``."""
    return call.arn("logs", f"log-group:{name}:*")


@maps("logs", "GetLogEvents")
def _logs_get_events(call: Call, _: Lookup) -> list[Request]:
    group, stream = call.params["logGroupName"], call.params["logStreamName"]
    return [_request("logs:GetLogEvents", call.arn("logs", f"log-group:{group}:log-stream:{stream}"))]


@maps("logs", "FilterLogEvents", "DescribeLogStreams")
def _logs_group_action(call: Call, _: Lookup) -> list[Request]:
    return [_request(f"logs:{call.operation}", _log_group(call, call.params["logGroupName"]))]


@maps("logs", "CreateLogStream")
def _logs_create_stream(call: Call, _: Lookup) -> list[Request]:
    # Service Authorization Reference: CreateLogStream is on the log-group resource.
    return [_request("logs:CreateLogStream", _log_group(call, call.params["logGroupName"]))]


@maps("logs", "PutLogEvents")
def _logs_put_events(call: Call, _: Lookup) -> list[Request]:
    group, stream = call.params["logGroupName"], call.params["logStreamName"]
    return [_request("logs:PutLogEvents", call.arn("logs", f"log-group:{group}:log-stream:{stream}"))]


@maps("ssm", "PutParameter", "GetParameter", "DeleteParameter")
def _ssm_parameter(call: Call, _: Lookup) -> list[Request]:
    # A parameter's ARN drops the name's leading '/': parameter/<node>/slot-00/run-id. With the AWS
    # managed key (aws/ssm) a SecureString needs no KMS grant of the caller's own.
    name = call.params["Name"].lstrip("/")
    return [_request(f"ssm:{call.operation}", call.arn("ssm", f"parameter/{name}"))]


@maps("secretsmanager", "GetSecretValue", "DescribeSecret")
def _secret(call: Call, _: Lookup) -> list[Request]:
    secret = call.params["SecretId"]
    arn = secret if secret.startswith("arn:") else call.arn("secretsmanager", f"secret:{secret}-??????")
    return [_request(f"secretsmanager:{call.operation}", arn)]


def _queue_arn(call: Call, url: str) -> str:
    _, account, name = urlparse(url).path.split("/")
    return f"arn:{PARTITION}:sqs:{call.region}:{account}:{name}"


@maps(
    "sqs",
    "SendMessage",
    "SendMessageBatch",
    "ReceiveMessage",
    "DeleteMessage",
    "DeleteMessageBatch",
    "GetQueueAttributes",
    "ChangeMessageVisibility",
)
def _sqs(call: Call, _: Lookup) -> list[Request]:
    action = call.operation.removesuffix("Batch")
    return [_request(f"sqs:{action}", _queue_arn(call, call.params["QueueUrl"]))]


@maps("sqs", "GetQueueUrl")
def _sqs_url(call: Call, _: Lookup) -> list[Request]:
    account = call.params.get("QueueOwnerAWSAccountId", ACCOUNT)
    return [
        _request("sqs:GetQueueUrl", f"arn:{PARTITION}:sqs:{call.region}:{account}:{call.params['QueueName']}")
    ]


@maps("ecr", "DescribeImages")
def _ecr_describe_images(call: Call, _: Lookup) -> list[Request]:
    account = call.params.get("registryId", ACCOUNT)
    repository = f"arn:{PARTITION}:ecr:{call.region}:{account}:repository/{call.params['repositoryName']}"
    return [_request("ecr:DescribeImages", repository)]


# --- CodeBuild: project/<name>; a build id is "<project>:<uuid>" (the processor registry) ----------------


@maps("codebuild", "StartBuild")
def _codebuild_start(call: Call, _: Lookup) -> list[Request]:
    return [_request("codebuild:StartBuild", call.arn("codebuild", f"project/{call.params['projectName']}"))]


@maps("codebuild", "BatchGetBuilds")
def _codebuild_builds(call: Call, _: Lookup) -> list[Request]:
    projects = dict.fromkeys(build.rsplit(":", 1)[0] for build in call.params["ids"])
    return [_request("codebuild:BatchGetBuilds", call.arn("codebuild", f"project/{p}")) for p in projects]


@maps("sts", "GetCallerIdentity")
def _caller_identity(call: Call, _: Lookup) -> list[Request]:
    return []  # needs no permission (STS API reference)


# --- EventBridge (the managed rule Step Functions keeps for .sync ECS tasks) -------------------------


@maps("events", "PutRule", "DescribeRule")
def _events_rule(call: Call, _: Lookup) -> list[Request]:
    return [_request(f"events:{call.operation}", call.arn("events", f"rule/{call.params['Name']}"))]


@maps("events", "PutEvents")
def _events_put(call: Call, _: Lookup) -> list[Request]:
    # Service Authorization Reference: on the event bus (default when none is named), one request per
    # entry with its events:source and events:detail-type.
    requests = []
    for entry in call.params["Entries"]:
        bus = entry.get("EventBusName") or "default"
        resource = bus if bus.startswith("arn:") else call.arn("events", f"event-bus/{bus}")
        context = {"events:source": entry["Source"], "events:detail-type": entry["DetailType"]}
        requests.append(_request("events:PutEvents", resource, **context))
    return requests


@maps("events", "PutTargets")
def _events_targets(call: Call, _: Lookup) -> list[Request]:
    return [_request("events:PutTargets", call.arn("events", f"rule/{call.params['Rule']}"))]
