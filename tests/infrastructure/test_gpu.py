"""GPU capacity (computeType gpu): absent unless enabled; when enabled, an ECS capacity provider of
GPU-optimized instances scaled to zero, in the private subnets and task security group, IMDSv2 and
encrypted volumes, its instance role the ECS agent's only; cfn-lint and cdk-nag as for the node."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cfnlint.api import lint

from stacks.gpu import folder_gpu_problems
from stacks.settings import SettingsError, load_settings
from tests.infrastructure.conftest import SynthesizedNode, project_copy, synthesize

GPU_CONTEXT = {
    "pennflow": {
        "nodeName": "lab",
        "runSlots": 2,
        "gpu": {"enabled": True, "instanceTypes": ["g5.xlarge", "g4dn.xlarge"], "maxInstances": 4},
    }
}
GPU_WORKFLOW = {
    "name": "segment",
    "processors": [{"id": "infer", "image": "ghcr.io/x/infer:1", "computeType": "gpu", "gpus": 1}],
}


@pytest.fixture(scope="module")
def gpu_node(tmp_path_factory: pytest.TempPathFactory) -> SynthesizedNode:
    project = project_copy(tmp_path_factory.mktemp("project-gpu"), with_dependencies=True)
    return synthesize(tmp_path_factory.mktemp("cdk-out-gpu"), GPU_CONTEXT, project)


def only(node: SynthesizedNode, resource_type: str) -> dict:
    (resource,) = node.resources(resource_type).values()
    return resource["Properties"]


def test_a_node_has_no_gpu_instances_unless_enabled(node: SynthesizedNode) -> None:
    for kind in (
        "AWS::AutoScaling::AutoScalingGroup",
        "AWS::ECS::CapacityProvider",
        "AWS::EC2::LaunchTemplate",
    ):
        assert node.resources(kind) == {}, kind
    api = next(
        f
        for f in node.resources("AWS::Lambda::Function").values()
        if "api" in json.dumps(f["Properties"].get("FunctionName", ""))
    )
    assert "GPU_CAPACITY_PROVIDER" not in api["Properties"]["Environment"]["Variables"]


def test_the_group_scales_from_zero_in_the_private_subnets(gpu_node: SynthesizedNode) -> None:
    group = only(gpu_node, "AWS::AutoScaling::AutoScalingGroup")
    assert (group["MinSize"], group["MaxSize"]) == ("0", "4")
    assert "DesiredCapacity" not in group  # managed scaling sets it; 0 at rest
    assert group["NewInstancesProtectedFromScaleIn"] is True  # managed termination protection needs it
    private = {id for id, r in gpu_node.resources("AWS::EC2::Subnet").items() if "Private" in id}
    assert {ref["Ref"] for ref in group["VPCZoneIdentifier"]} == private
    policy = group["MixedInstancesPolicy"]
    assert [o["InstanceType"] for o in policy["LaunchTemplate"]["Overrides"]] == ["g5.xlarge", "g4dn.xlarge"]
    assert policy["InstancesDistribution"]["OnDemandAllocationStrategy"] == "prioritized"


def test_the_capacity_provider_is_managed_and_on_the_nodes_cluster(gpu_node: SynthesizedNode) -> None:
    provider = only(gpu_node, "AWS::ECS::CapacityProvider")
    scaling = provider["AutoScalingGroupProvider"]
    assert scaling["ManagedScaling"]["Status"] == "ENABLED"
    assert scaling["ManagedTerminationProtection"] == "ENABLED"
    assert provider["Name"] == "lab-gpu"
    (association,) = gpu_node.resources("AWS::ECS::ClusterCapacityProviderAssociations").values()
    providers = association["Properties"]["CapacityProviders"]
    assert (
        "FARGATE" in providers
        and {"Ref": next(iter(gpu_node.resources("AWS::ECS::CapacityProvider")))} in providers
    )


def test_instances_use_the_gpu_ami_imdsv2_encrypted_volumes_and_the_task_security_group(
    gpu_node: SynthesizedNode,
) -> None:
    data = only(gpu_node, "AWS::EC2::LaunchTemplate")["LaunchTemplateData"]
    assert data["MetadataOptions"] == {"HttpTokens": "required", "HttpPutResponseHopLimit": 1}
    (volume,) = data["BlockDeviceMappings"]
    assert volume["Ebs"]["Encrypted"] is True and volume["Ebs"]["VolumeType"] == "gp3"
    parameters = gpu_node.json["Parameters"]
    image = parameters[data["ImageId"]["Ref"]]["Default"]
    assert image == "/aws/service/ecs/optimized-ami/amazon-linux-2023/gpu/recommended/image_id"
    (group,) = data["SecurityGroupIds"]
    assert group["Fn::GetAtt"][0].startswith("NetworkTasksSecurityGroup")
    user_data = json.dumps(data["UserData"])
    assert "ECS_AWSVPC_BLOCK_IMDS=true" in user_data and "ECS_CLUSTER=" in user_data


def test_the_instance_role_holds_the_ecs_agents_calls_only(gpu_node: SynthesizedNode) -> None:
    role = gpu_node.stack.gpu.instance_role
    actions = gpu_node.role_actions(role)
    assert actions == {
        "ecs:DeregisterContainerInstance",
        "ecs:RegisterContainerInstance",
        "ecs:Submit*",
        "ecs:Poll",
        "ecs:StartTelemetrySession",
        "ecs:DiscoverPollEndpoint",
        "ecr:GetAuthorizationToken",
        "logs:CreateLogStream",
        "logs:PutLogEvents",
    }
    principal = gpu_node.json["Resources"][gpu_node.logical_id(role)]["Properties"][
        "AssumeRolePolicyDocument"
    ]
    assert principal["Statement"][0]["Principal"] == {"Service": "ec2.amazonaws.com"}


def test_the_api_and_the_runs_manager_are_told_the_capacity_provider(gpu_node: SynthesizedNode) -> None:
    functions = gpu_node.stack.functions
    for name in ("api", "prepare"):
        variables = gpu_node.json["Resources"][gpu_node.logical_id(functions[name])]["Properties"][
            "Environment"
        ]["Variables"]
        assert variables["GPU_CAPACITY_PROVIDER"] == {
            "Ref": next(iter(gpu_node.resources("AWS::ECS::CapacityProvider")))
        }
    api = gpu_node.json["Resources"][gpu_node.logical_id(functions["api"])]["Properties"]
    assert api["Environment"]["Variables"]["GPU_INSTANCE_TYPES"] == "g5.xlarge,g4dn.xlarge"


def test_cfn_lint_and_cdk_nag_pass_with_gpu_capacity(gpu_node: SynthesizedNode) -> None:
    errors = [
        str(m) for m in lint(json.dumps(gpu_node.json), regions=["us-east-1"]) if m.rule.id.startswith("E")
    ]
    assert errors == []
    assert [(f.rule, f.paths) for f in gpu_node.nag_findings()] == []


def test_a_folder_gpu_workflow_needs_the_setting_and_instances_that_hold_it() -> None:
    from pennflow.workflow.definition import validate_definition

    workflow = validate_definition(GPU_WORKFLOW)
    big = validate_definition({**GPU_WORKFLOW, "processors": [{**GPU_WORKFLOW["processors"][0], "gpus": 4}]})
    off = load_settings({})
    on = load_settings({"gpu": {"enabled": True}})
    assert folder_gpu_problems(off, [workflow]) == [
        "workflow 'segment', processor 'infer': computeType gpu needs pennflow.gpu.enabled true in cdk.json"
    ]
    assert folder_gpu_problems(on, [workflow]) == []
    (problem,) = folder_gpu_problems(on, [big])
    assert "asks for 4 GPU" in problem and "g4dn.xlarge (1 GPU" in problem


def test_a_folder_gpu_workflow_stops_the_synth_of_a_node_without_gpus(tmp_path: Path) -> None:
    (tmp_path / "project").mkdir()
    project = project_copy(tmp_path / "project", with_dependencies=True)
    (project / "workflows").unlink()
    (project / "workflows").mkdir()
    (project / "workflows" / "segment.json").write_text(json.dumps(GPU_WORKFLOW))
    with pytest.raises(SettingsError, match=r"processor 'infer': computeType gpu needs pennflow.gpu.enabled"):
        synthesize(tmp_path / "out", {"pennflow": {"nodeName": "lab"}}, project)


@pytest.mark.parametrize(
    ("gpu", "expected"),
    [
        ({"instanceTypes": ["m5.large"]}, "pennflow.gpu.instanceTypes: 'm5.large': not a GPU instance type"),
        ({"instanceTypes": []}, "pennflow.gpu.instanceTypes: List should have at least 1 item"),
        ({"maxInstances": 0}, "pennflow.gpu.maxInstances: Input should be greater than or equal to 1"),
        ({"enable": True}, "pennflow.gpu.enable: unknown setting"),
        (
            {"instanceTypes": ["g4dn.xlarge", "g4dn.xlarge"]},
            "pennflow.gpu.instanceTypes: an instance type is listed twice",
        ),
    ],
)
def test_bad_gpu_settings_are_named_precisely(gpu: dict, expected: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({"gpu": gpu})
    assert any(line.startswith(expected) for line in str(caught.value).splitlines()), str(caught.value)


def test_the_capacity_provider_name_avoids_the_prefixes_ecs_refuses() -> None:
    from stacks.gpu import gpu_capacity_provider_name

    assert gpu_capacity_provider_name("lab") == "lab-gpu"
    assert [gpu_capacity_provider_name(n) for n in ("ecs-lab", "aws1", "fargatelab")] == [
        "pf-ecs-lab-gpu",
        "pf-aws1-gpu",
        "pf-fargatelab-gpu",
    ]
