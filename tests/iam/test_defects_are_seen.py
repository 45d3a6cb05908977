"""The tier is not blind: each defect issue 9 found, put back into the synthesized policies, makes
it fail, naming the action, the resource and the role."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import boto3
import pytest

from tests.iam.lifecycle import (
    call_api,
    deliver,
    download_batches,
    register,
    run_processor_task,
    run_record,
    start_run,
    tiny,
)
from tests.iam.moto_node import IamNode
from tests.iam.recorder import Denial
from tests.iam.template import REGION

pytest_plugins = ["tests.fakes.pennsieve_fixtures"]
pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")
Statement = dict[str, Any]


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def reintroduce(node: IamNode, function: str, change: Callable[[list[Statement]], list[Statement]]) -> str:
    """Give ``function``'s role its synthesized statements as ``change`` rewrites them."""
    role = node.role(function)
    node.recorder.overrides[role] = change(copy.deepcopy(node.template.role_statements(role)))
    return role


def without_actions(prefix: str) -> Callable[[list[Statement]], list[Statement]]:
    def change(statements: list[Statement]) -> list[Statement]:
        return [s for s in statements if not any(a.startswith(prefix) for a in _listed(s["Action"]))]

    return change


def s3_writes_only(statements: list[Statement]) -> list[Statement]:
    """The runs manager as it was: on S3, PutObject and AbortMultipartUpload only."""
    return [
        s for s in statements if not any(a in ("s3:GetObject", "s3:ListBucket") for a in _listed(s["Action"]))
    ]


def without_listing(statements: list[Statement]) -> list[Statement]:
    return [s for s in statements if "s3:ListBucket" not in _listed(s["Action"])]


def list_tasks_on_container_instances(statements: list[Statement]) -> list[Statement]:
    for statement in statements:
        if "ecs:ListTasks" in _listed(statement["Action"]):
            cluster = statement["Condition"]["ArnEquals"]["ecs:cluster"]
            statement["Resource"] = cluster.replace(":cluster/", ":container-instance/") + "/*"
    return statements


def taken_denials(node: IamNode) -> list[Denial]:
    """The denials so far, cleared so that the fixture's own check sees only later ones."""
    denials, node.recorder.denials = node.recorder.denials, []
    return denials


@pytest.fixture
def dataset(pennsieve):
    dataset = pennsieve.add_dataset("eeg")
    dataset.add_package("rec-0.edf", [("rec-0.edf", 1024)])
    return dataset


def test_download_without_dynamodb_is_denied_reading_the_slots(iam_node: IamNode, pennsieve_client, dataset):
    role = reintroduce(iam_node, "download", without_actions("dynamodb:"))

    with pytest.raises(Exception, match="AccessDenied"):
        download_batches(iam_node, pennsieve_client, dataset.node_id, "run-1", "recordings")

    (denial,) = {(d.role, d.request.action, d.request.resource) for d in taken_denials(iam_node)}
    slots_table = iam_node.template.names.attribute(iam_node.logical_id("StorageSlotsTable"), "Arn")
    assert denial == (role, "dynamodb:BatchGetItem", slots_table)


def test_prepare_that_may_only_write_run_objects_cannot_read_the_manifest(iam_node: IamNode, dataset):
    register(iam_node, tiny())
    role = reintroduce(iam_node, "prepare", s3_writes_only)
    run_id = call_api(
        iam_node, "POST", "/runs", body={"workflow": "tiny", "datasetId": dataset.node_id}
    ).body["runId"]

    with pytest.raises(Exception, match="AccessDenied"):  # raised for Lambda's asynchronous retries
        deliver(iam_node, "prepare")

    denials = taken_denials(iam_node)
    bucket = iam_node.environment("prepare")["RESULTS_BUCKET"]
    assert (role, "s3:GetObject", f"arn:aws:s3:::{bucket}/runs/{run_id}/manifest.json") in {
        (d.role, d.request.action, d.request.resource) for d in denials
    }
    assert run_record(iam_node, run_id).status.value == "NOT_STARTED"  # AccessDenied is not permanent: queued


def test_prepare_that_may_not_list_sees_a_missing_manifest_as_access_denied(iam_node: IamNode, dataset):
    register(iam_node, tiny())
    role = reintroduce(iam_node, "prepare", without_listing)
    run_id = call_api(
        iam_node, "POST", "/runs", body={"workflow": "tiny", "datasetId": dataset.node_id}
    ).body["runId"]
    bucket = iam_node.environment("prepare")["RESULTS_BUCKET"]
    boto3.client("s3", region_name=REGION).delete_object(Bucket=bucket, Key=f"runs/{run_id}/manifest.json")

    with pytest.raises(Exception, match="AccessDenied"):
        deliver(iam_node, "prepare")

    denials = {(d.role, d.request.action, d.request.resource) for d in taken_denials(iam_node)}
    assert denials == {(role, "s3:ListBucket", f"arn:aws:s3:::{bucket}")}
    assert run_record(iam_node, run_id).status.value == "NOT_STARTED"  # the fallback never ran


def test_cancel_with_list_tasks_on_container_instances_is_denied(iam_node: IamNode, dataset):
    register(iam_node, tiny())
    run_id = start_run(iam_node, "tiny", datasetId=dataset.node_id)
    run_processor_task(iam_node, run_id, "work")
    role = reintroduce(iam_node, "cancel", list_tasks_on_container_instances)

    call_api(iam_node, "POST", f"/runs/{run_id}/cancel")
    with pytest.raises(Exception, match="AccessDenied"):
        deliver(iam_node, "cancel")

    denials = taken_denials(iam_node)
    assert {(d.role, d.request.action, d.request.resource) for d in denials} == {(role, "ecs:ListTasks", "*")}
    assert str(denials[0]).startswith(f"AccessDenied: role {role} may not ecs:ListTasks on * (in ListTasks")
