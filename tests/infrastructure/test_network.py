"""Network: private subnets, endpoints, security groups and flow logs."""

from __future__ import annotations

from aws_cdk import App, Stack
from aws_cdk.assertions import Template

from stacks.network import NodeNetwork
from stacks.settings import load_settings

INTERFACE_SERVICES = {
    "ecr.api",
    "ecr.dkr",
    "logs",
    "secretsmanager",
    "sts",
    "ecs",
    "ecs-agent",
    "ecs-telemetry",
    "states",
    "sync-states",
    "elasticfilesystem",
    "lambda",
    "xray",
    "ssm",
    "events",
}


def endpoint_services(synthesized) -> dict[str, str]:
    """Short service name (e.g. 'ecr.api') -> endpoint type."""
    found = {}
    for endpoint in synthesized.resources("AWS::EC2::VPCEndpoint").values():
        name = endpoint["Properties"]["ServiceName"]
        text = (
            name if isinstance(name, str) else "".join(p for p in name["Fn::Join"][1] if isinstance(p, str))
        )
        found[text.split(".", 3)[-1] if text.startswith("com.amazonaws") else text.lstrip(".")] = endpoint[
            "Properties"
        ]["VpcEndpointType"]
    return found


def test_all_endpoints_the_tasks_and_lambdas_need(node):
    services = endpoint_services(node)
    assert {s for s, kind in services.items() if kind == "Interface"} == INTERFACE_SERVICES
    assert {s for s, kind in services.items() if kind == "Gateway"} == {"s3", "dynamodb"}


def test_interface_endpoints_accept_https_only_from_the_node(node):
    network = node.stack.network
    clients = {node.logical_id(network.task_security_group), node.logical_id(network.lambda_security_group)}
    for endpoint in node.resources("AWS::EC2::VPCEndpoint").values():
        if endpoint["Properties"]["VpcEndpointType"] == "Interface":
            assert endpoint["Properties"]["PrivateDnsEnabled"] is True
    ingress = [
        r["Properties"]
        for r in node.resources("AWS::EC2::SecurityGroupIngress").values()
        if r["Properties"]["FromPort"] == 443
    ]
    assert {rule["SourceSecurityGroupId"]["Fn::GetAtt"][0] for rule in ingress} == clients


def test_efs_accepts_nfs_only_from_tasks_and_lambdas(node):
    network = node.stack.network
    efs_group = node.logical_id(network.efs_security_group)
    rules = [
        r["Properties"]
        for r in node.resources("AWS::EC2::SecurityGroupIngress").values()
        if r["Properties"]["GroupId"]["Fn::GetAtt"][0] == efs_group
    ]
    assert {(r["FromPort"], r["ToPort"], r["IpProtocol"]) for r in rules} == {(2049, 2049, "tcp")}
    assert {r["SourceSecurityGroupId"]["Fn::GetAtt"][0] for r in rules} == {
        node.logical_id(network.task_security_group),
        node.logical_id(network.lambda_security_group),
    }
    efs_group_properties = node.json["Resources"][efs_group]["Properties"]
    assert "SecurityGroupIngress" not in efs_group_properties


def test_no_security_group_is_open_to_the_internet(node):
    for group in node.resources("AWS::EC2::SecurityGroup").values():
        for rule in group["Properties"].get("SecurityGroupIngress", []):
            assert rule.get("CidrIp") != "0.0.0.0/0"


def test_flow_logs_record_all_traffic_to_a_retained_log_group(node):
    (flow_log,) = node.resources("AWS::EC2::FlowLog").values()
    assert flow_log["Properties"]["TrafficType"] == "ALL"
    log_group = node.json["Resources"][flow_log["Properties"]["LogGroupName"]["Ref"]]
    assert log_group["Properties"]["RetentionInDays"] == 30


def test_default_node_has_one_nat_gateway_for_the_pennsieve_api(node):
    assert len(node.resources("AWS::EC2::NatGateway")) == 1


def test_without_nat_the_subnets_are_isolated():
    stack = Stack(App(), "Network")
    NodeNetwork(stack, "Network", settings=load_settings({"natGateways": 0}))
    template = Template.from_stack(stack)
    template.resource_count_is("AWS::EC2::NatGateway", 0)
    template.resource_count_is("AWS::EC2::InternetGateway", 0)
    routes = template.find_resources("AWS::EC2::Route")
    assert not any(r["Properties"].get("DestinationCidrBlock") == "0.0.0.0/0" for r in routes.values())
    subnets = template.find_resources("AWS::EC2::Subnet")
    assert all(r["Properties"]["MapPublicIpOnLaunch"] is False for r in subnets.values())


def test_interface_endpoints_can_be_left_out_to_save_their_cost_at_rest():
    stack = Stack(App(), "Network")
    NodeNetwork(stack, "Network", settings=load_settings({"interfaceEndpoints": False}))
    endpoints = Template.from_stack(stack).find_resources("AWS::EC2::VPCEndpoint")
    kinds = sorted(e["Properties"].get("VpcEndpointType", "Gateway") for e in endpoints.values())
    assert kinds == ["Gateway", "Gateway"], "S3 and DynamoDB gateway endpoints are free and stay"


def test_reused_vpc_is_referenced_not_created(variant):
    assert variant.resources("AWS::EC2::VPC") == {}
    assert variant.resources("AWS::EC2::Subnet") == {}
    (flow_log,) = variant.resources("AWS::EC2::FlowLog").values()
    assert flow_log["Properties"]["ResourceId"] == "vpc-0a1b2c3d4e5f60718"
    mount_targets = variant.resources("AWS::EFS::MountTarget").values()
    assert sorted(m["Properties"]["SubnetId"] for m in mount_targets) == [
        "subnet-0a1b2c3d4e5f60001",
        "subnet-0a1b2c3d4e5f60002",
    ]
    (gateway, *_) = [
        e
        for e in variant.resources("AWS::EC2::VPCEndpoint").values()
        if e["Properties"]["VpcEndpointType"] == "Gateway"
    ]
    assert gateway["Properties"]["RouteTableIds"] == ["rtb-0a1b2c3d4e5f60001", "rtb-0a1b2c3d4e5f60002"]
