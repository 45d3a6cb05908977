"""Every EFS mount the node makes is authorized: each Lambda function's access point and each task
definition's IAM-authorized volume, against its role's statements together with the file system
policy (same account: either may allow it, any explicit Deny refuses it; EFS User Guide, "Using IAM
to control file system data access"). Mounts go through a mount target over TLS."""

from __future__ import annotations

from typing import Any

import boto3
import pytest

from tests.iam.evaluator import Request, evaluate
from tests.iam.lifecycle import register, slot_of, start_run, tiny
from tests.iam.moto_node import IamNode
from tests.iam.template import ACCOUNT, REGION

pytest_plugins = ["tests.fakes.pennsieve_fixtures"]
pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")


def mount_requests(role_arn: str, access_point_arn: str, file_system_arn: str, write: bool) -> list[Request]:
    context = {
        "elasticfilesystem:AccessPointArn": access_point_arn,
        "elasticfilesystem:AccessedViaMountTarget": True,
        "aws:SecureTransport": True,
        "aws:PrincipalArn": role_arn,
    }
    actions = ["elasticfilesystem:ClientMount"] + (["elasticfilesystem:ClientWrite"] if write else [])
    return [Request(action, file_system_arn, context, principal=role_arn) for action in actions]


def denied_mounts(node: IamNode, role_id: str, access_point_id: str, write: bool) -> list[str]:
    template = node.template
    (file_system_id,) = template.of_type("AWS::EFS::FileSystem")
    file_system_arn = template.names.attribute(file_system_id, "Arn")
    policy = template.names.resolve(template.resources[file_system_id]["Properties"]["FileSystemPolicy"])
    access_point_arn = f"arn:aws:elasticfilesystem:{REGION}:{ACCOUNT}:access-point/{access_point_id}"
    statements = node.recorder.statements(role_id) + policy["Statement"]
    denied = []
    for request in mount_requests(template.role_arn(role_id), access_point_arn, file_system_arn, write):
        node.recorder.checked[role_id] += 1
        node.recorder.actions.setdefault(role_id, set()).add(request.action)
        decision = evaluate(statements, request)
        if not decision.allowed:
            denied.append(
                f"role {role_id} may not {request.action} through {access_point_arn} ({decision.reason})"
            )
    return denied


def test_each_function_mounts_its_access_point(iam_node: IamNode):
    template = iam_node.template
    mounted = {
        logical_id: resource["Properties"]["FileSystemConfigs"]
        for logical_id, resource in template.of_type("AWS::Lambda::Function").items()
        if resource["Properties"].get("FileSystemConfigs")
    }
    assert mounted
    denied = []
    for function_id, configs in mounted.items():
        for config in template.names.resolve(configs):
            access_point_id = config["Arn"].rsplit("/", 1)[1]
            denied += denied_mounts(
                iam_node, template.role_of_function(function_id), access_point_id, write=True
            )
    assert denied == []


def test_each_task_definition_mounts_its_volumes(iam_node: IamNode, pennsieve):
    """The stack's own (layer jobs) and those prepare registers for a run's processors and built-ins."""
    register(iam_node, tiny())
    run_id = start_run(iam_node, "tiny", datasetId=pennsieve.add_dataset("eeg").node_id)
    ecs = boto3.client("ecs", region_name=REGION)
    definitions = [
        ecs.describe_task_definition(taskDefinition=arn)["taskDefinition"]
        for arn in slot_of(iam_node, run_id).run_task_definitions.values()
    ]
    definitions += [
        _as_registered(iam_node, k) for k in iam_node.template.of_type("AWS::ECS::TaskDefinition")
    ]
    denied, volumes = [], 0
    for definition in definitions:
        role_id = _role_id(iam_node, definition["taskRoleArn"])
        for volume in definition.get("volumes", []):
            efs = volume.get("efsVolumeConfiguration")
            if not efs or efs.get("authorizationConfig", {}).get("iam") != "ENABLED":
                continue
            volumes += 1
            write = any(
                not m.get("readOnly", False)
                for c in definition["containerDefinitions"]
                for m in c.get("mountPoints", [])
                if m["sourceVolume"] == volume["name"]
            )
            denied += denied_mounts(iam_node, role_id, efs["authorizationConfig"]["accessPointId"], write)
    assert volumes >= len(definitions)  # each mounts at least its slot or the layers
    assert denied == []


def _as_registered(node: IamNode, logical_id: str) -> dict[str, Any]:
    """A template task definition in RegisterTaskDefinition's own casing (the keys read above)."""
    properties = node.template.names.resolve(node.template.resources[logical_id]["Properties"])
    return {
        "taskRoleArn": properties["TaskRoleArn"],
        "volumes": [
            {
                "name": v["Name"],
                "efsVolumeConfiguration": {
                    "authorizationConfig": {
                        "iam": v["EFSVolumeConfiguration"]["AuthorizationConfig"]["IAM"],
                        "accessPointId": v["EFSVolumeConfiguration"]["AuthorizationConfig"]["AccessPointId"],
                    }
                },
            }
            for v in properties.get("Volumes", [])
            if "EFSVolumeConfiguration" in v
        ],
        "containerDefinitions": [
            {
                "mountPoints": [
                    {"sourceVolume": m["SourceVolume"], "readOnly": m.get("ReadOnly", False)}
                    for m in c.get("MountPoints", [])
                ]
            }
            for c in properties["ContainerDefinitions"]
        ],
    }


def _role_id(node: IamNode, role_arn: str) -> Any:
    (found,) = [r for r in node.template.of_type("AWS::IAM::Role") if node.template.role_arn(r) == role_arn]
    return found
