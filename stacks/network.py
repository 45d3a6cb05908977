"""Network of the node: private subnets, VPC endpoints, security groups and flow logs."""

from __future__ import annotations

from aws_cdk import aws_ec2 as ec2
from constructs import Construct

from stacks.log_groups import node_log_group
from stacks.settings import NodeSettings

# Interface endpoints: everything tasks and Lambdas call must be reachable without a NAT gateway.
INTERFACE_ENDPOINTS = {
    "Ecr": ec2.InterfaceVpcEndpointAwsService.ECR,
    "EcrDocker": ec2.InterfaceVpcEndpointAwsService.ECR_DOCKER,
    "Logs": ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_LOGS,
    "SecretsManager": ec2.InterfaceVpcEndpointAwsService.SECRETS_MANAGER,
    "Sts": ec2.InterfaceVpcEndpointAwsService.STS,
    "Ecs": ec2.InterfaceVpcEndpointAwsService.ECS,
    "EcsAgent": ec2.InterfaceVpcEndpointAwsService.ECS_AGENT,
    "EcsTelemetry": ec2.InterfaceVpcEndpointAwsService.ECS_TELEMETRY,
    "States": ec2.InterfaceVpcEndpointAwsService.STEP_FUNCTIONS,
    "SyncStates": ec2.InterfaceVpcEndpointAwsService.STEP_FUNCTIONS_SYNC,
    "Efs": ec2.InterfaceVpcEndpointAwsService.ELASTIC_FILESYSTEM,
    "Lambda": ec2.InterfaceVpcEndpointAwsService.LAMBDA_,
    "XRay": ec2.InterfaceVpcEndpointAwsService.XRAY,  # the VPC-attached Lambdas trace
    # a slot's run parameters: written at lease, read by ECS task secrets and lambda processors' bootstrap
    "Ssm": ec2.InterfaceVpcEndpointAwsService.SSM,
    # lambda processors' step events (their bootstrap's PutEvents), tracked as ECS task events are
    "Events": ec2.InterfaceVpcEndpointAwsService.EVENTBRIDGE,
}
GATEWAY_ENDPOINTS = {
    "S3": ec2.GatewayVpcEndpointAwsService.S3,  # ECR image layers live in S3
    "DynamoDb": ec2.GatewayVpcEndpointAwsService.DYNAMODB,
}
NFS_PORT = 2049
HTTPS_PORT = 443


class NodeNetwork(Construct):
    """Private subnets (isolated when NAT is off), endpoints, security groups and flow logs."""

    def __init__(self, scope: Construct, construct_id: str, *, settings: NodeSettings) -> None:
        super().__init__(scope, construct_id)
        self.vpc = self._reused_vpc(settings) if settings.reuses_vpc else self._new_vpc(settings)
        self.private_subnets = ec2.SubnetSelection(subnets=self._private_subnets(settings))

        self.task_security_group = self._security_group("Tasks", "Processor and built-in ECS tasks")
        self.lambda_security_group = self._security_group("Lambdas", "Run-lifecycle Lambda functions")
        self.efs_security_group = self._security_group("Efs", "EFS mount targets: NFS from tasks and Lambdas")
        for client in (self.task_security_group, self.lambda_security_group):
            self.efs_security_group.add_ingress_rule(
                client, ec2.Port.tcp(NFS_PORT), f"NFS from {client.node.id.lower()}"
            )

        if settings.vpc is None or settings.vpc.create_endpoints:
            # Gateway endpoints attach to route tables: a reused VPC must name them.
            with_gateways = settings.vpc is None or bool(settings.vpc.private_route_table_ids)
            self._add_endpoints(with_gateways=with_gateways, with_interfaces=settings.interface_endpoints)
        self._add_flow_logs(settings)

    @property
    def private_subnet_ids(self) -> list[str]:
        return [subnet.subnet_id for subnet in self.private_subnets.subnets or []]

    def _new_vpc(self, settings: NodeSettings) -> ec2.IVpc:
        with_nat = settings.nat_gateways > 0
        private_type = ec2.SubnetType.PRIVATE_WITH_EGRESS if with_nat else ec2.SubnetType.PRIVATE_ISOLATED
        subnets = [ec2.SubnetConfiguration(name="Private", subnet_type=private_type, cidr_mask=20)]
        if with_nat:  # the NAT gateway needs a public subnet; nothing else is placed there
            subnets.append(
                ec2.SubnetConfiguration(name="Public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24)
            )
        return ec2.Vpc(
            self,
            "Vpc",
            ip_addresses=ec2.IpAddresses.cidr("10.40.0.0/16"),
            max_azs=settings.max_azs,
            nat_gateways=settings.nat_gateways,
            subnet_configuration=subnets,
            restrict_default_security_group=True,
        )

    def _reused_vpc(self, settings: NodeSettings) -> ec2.IVpc:
        existing = settings.vpc
        return ec2.Vpc.from_vpc_attributes(
            self,
            "Vpc",
            vpc_id=existing.vpc_id,
            availability_zones=list(existing.availability_zones),
            private_subnet_ids=list(existing.private_subnet_ids),
            private_subnet_route_table_ids=list(existing.private_route_table_ids) or None,
        )

    def _private_subnets(self, settings: NodeSettings) -> list[ec2.ISubnet]:
        if settings.reuses_vpc:
            return list(self.vpc.private_subnets)
        return list(self.vpc.private_subnets or self.vpc.isolated_subnets)

    def _security_group(self, name: str, description: str) -> ec2.SecurityGroup:
        return ec2.SecurityGroup(self, f"{name}SecurityGroup", vpc=self.vpc, description=description)

    def _add_endpoints(self, *, with_gateways: bool, with_interfaces: bool) -> None:
        for name, service in GATEWAY_ENDPOINTS.items() if with_gateways else ():
            self.vpc.add_gateway_endpoint(f"{name}Endpoint", service=service, subnets=[self.private_subnets])
        if not with_interfaces:  # gateway endpoints are free; interface ones are the cost at rest
            return
        # Endpoints accept HTTPS only from the node's own clients, not from the whole VPC.
        endpoint_group = self._security_group(
            "Endpoints", "Interface endpoints: HTTPS from tasks and Lambdas"
        )
        for client in (self.task_security_group, self.lambda_security_group):
            endpoint_group.add_ingress_rule(
                client, ec2.Port.tcp(HTTPS_PORT), f"HTTPS from {client.node.id.lower()}"
            )
        for name, service in INTERFACE_ENDPOINTS.items():
            self.vpc.add_interface_endpoint(
                f"{name}Endpoint",
                service=service,
                subnets=self.private_subnets,
                security_groups=[endpoint_group],
                open=False,
                private_dns_enabled=True,
            )

    def _add_flow_logs(self, settings: NodeSettings) -> None:
        log_group = node_log_group(self, "FlowLogs", settings)
        ec2.FlowLog(
            self,
            "FlowLog",
            resource_type=ec2.FlowLogResourceType.from_vpc(self.vpc),
            destination=ec2.FlowLogDestination.to_cloud_watch_logs(log_group),
            traffic_type=ec2.FlowLogTrafficType.ALL,
        )
