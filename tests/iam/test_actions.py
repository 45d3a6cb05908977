"""The IAM request each AWS call makes, as the Service Authorization Reference describes it."""

from __future__ import annotations

import pytest

from tests.iam.actions import Call, UnmappedOperation, missing_key_request, requests_for
from tests.iam.evaluator import Request

CLUSTER = "arn:aws:ecs:us-east-1:123456789012:cluster/node"


class Facts:
    def task_definition_roles(self, task_definition: str) -> list[str]:
        return ["arn:aws:iam::123456789012:role/task", "arn:aws:iam::123456789012:role/execution"]

    def access_point_tags(self, access_point_id: str) -> dict[str, str]:
        return {"pennflow:node": "lab"}

    def access_point_file_system(self, access_point_id: str) -> str:
        return "fs-0123"


def requests(service: str, operation: str, **params) -> list[Request]:
    return requests_for(Call(service, operation, params, "us-east-1"), Facts())


def test_an_operation_without_a_mapping_fails_loudly():
    with pytest.raises(UnmappedOperation, match="s3.DeleteBucket has no IAM mapping"):
        requests("s3", "DeleteBucket", Bucket="b")


def test_object_calls_name_the_key_and_a_missing_key_needs_listing_with_its_prefix():
    assert requests("s3", "HeadObject", Bucket="b", Key="runs/r/m.json") == [
        Request("s3:GetObject", "arn:aws:s3:::b/runs/r/m.json")
    ]
    assert missing_key_request("b", "runs/r/m.json") == Request(
        "s3:ListBucket", "arn:aws:s3:::b", {"s3:prefix": "runs/r/m.json"}
    )


def test_list_tasks_by_cluster_and_family_is_authorized_on_star_with_the_cluster():
    assert requests("ecs", "ListTasks", cluster=CLUSTER, family="f", desiredStatus="RUNNING") == [
        Request("ecs:ListTasks", "*", {"ecs:cluster": CLUSTER})
    ]
    (on_instance,) = requests("ecs", "ListTasks", cluster="node", containerInstance="i-1")
    assert on_instance.resource == "arn:aws:ecs:us-east-1:123456789012:container-instance/node/i-1"


def test_run_task_passes_the_task_definitions_roles_and_tags_on_create():
    run = requests(
        "ecs", "RunTask", cluster=CLUSTER, taskDefinition="fam:3", tags=[{"key": "k", "value": "v"}]
    )
    assert [(r.action, r.resource) for r in run] == [
        ("ecs:RunTask", "arn:aws:ecs:us-east-1:123456789012:task-definition/fam:3"),
        ("ecs:TagResource", "arn:aws:ecs:us-east-1:123456789012:task/node/*"),
        ("iam:PassRole", "arn:aws:iam::123456789012:role/task"),
        ("iam:PassRole", "arn:aws:iam::123456789012:role/execution"),
    ]
    assert run[2].context == {"iam:PassedToService": "ecs-tasks.amazonaws.com"}


def test_a_transaction_is_authorized_item_by_item_and_deletes_carry_resource_tags():
    items = [{"Put": {"TableName": "runs"}}, {"ConditionCheck": {"TableName": "slots"}}]
    assert [
        (r.action, r.resource.rsplit("/", 1)[1])
        for r in requests("dynamodb", "TransactWriteItems", TransactItems=items)
    ] == [
        ("dynamodb:PutItem", "runs"),
        ("dynamodb:ConditionCheckItem", "slots"),
    ]
    (delete,) = requests("efs", "DeleteAccessPoint", AccessPointId="fsap-1")
    assert delete.context == {"aws:ResourceTag/pennflow:node": "lab"}


def test_creating_an_image_function_in_a_vpc_with_a_file_system_needs_its_dependent_actions():
    image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/lab_processors@sha256:" + "a" * 64
    role = "arn:aws:iam::123456789012:role/lab_us-east-1-fn_slot-00"
    found = requests(
        "lambda",
        "CreateFunction",
        FunctionName="lab_fn-slot-00-0123",
        Role=role,
        Code={"ImageUri": image},
        Tags={"pennflow:slot": "slot-00"},
        VpcConfig={"SubnetIds": ["s"], "SecurityGroupIds": ["g"]},
        FileSystemConfigs=[{"Arn": "arn:aws:elasticfilesystem:us-east-1:123456789012:access-point/fsap-1"}],
    )
    function = "arn:aws:lambda:us-east-1:123456789012:function:lab_fn-slot-00-0123"
    repository = "arn:aws:ecr:us-east-1:123456789012:repository/lab_processors"
    assert found == [
        Request("lambda:CreateFunction", function),
        Request("lambda:TagResource", function),
        Request("ecr:BatchGetImage", repository),
        Request("ecr:GetDownloadUrlForLayer", repository),
        Request("ec2:DescribeSecurityGroups", "*"),
        Request("ec2:DescribeSubnets", "*"),
        Request("ec2:DescribeVpcs", "*"),
        Request(
            "elasticfilesystem:DescribeMountTargets",
            "arn:aws:elasticfilesystem:us-east-1:123456789012:file-system/fs-0123",
        ),
        Request("iam:PassRole", role, {"iam:PassedToService": "lambda.amazonaws.com"}),
    ]


def test_put_events_is_one_request_per_entry_on_its_bus_with_source_and_detail_type():
    entries = [{"Source": "pennflow.processor", "DetailType": "D", "Detail": "{}"}]
    entries.append({"Source": "other", "DetailType": "E", "Detail": "{}", "EventBusName": "custom"})
    assert requests("events", "PutEvents", Entries=entries) == [
        Request(
            "events:PutEvents",
            "arn:aws:events:us-east-1:123456789012:event-bus/default",
            {"events:source": "pennflow.processor", "events:detail-type": "D"},
        ),
        Request(
            "events:PutEvents",
            "arn:aws:events:us-east-1:123456789012:event-bus/custom",
            {"events:source": "other", "events:detail-type": "E"},
        ),
    ]


def test_a_log_stream_is_created_on_its_group_and_written_on_itself():
    group = "arn:aws:logs:us-east-1:123456789012:log-group:/p"
    assert requests("logs", "CreateLogStream", logGroupName="/p", logStreamName="a/processor/r") == [
        Request("logs:CreateLogStream", f"{group}:*")
    ]
    assert requests(
        "logs", "PutLogEvents", logGroupName="/p", logStreamName="a/processor/r", logEvents=[]
    ) == [Request("logs:PutLogEvents", f"{group}:log-stream:a/processor/r")]
