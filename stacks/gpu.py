"""GPU capacity for ``computeType: gpu`` processors: an ECS capacity provider of EC2 GPU instances.

Only synthesized when ``pennflow.gpu.enabled`` is true. An Auto Scaling group of ECS GPU-optimized
instances (the Amazon Linux 2023 GPU AMI: NVIDIA driver and container toolkit), 0 instances at rest; ECS
managed scaling starts one when a gpu task waits for capacity and lets the group shrink back to 0
when none runs (managed termination protection keeps an instance with a task from being chosen).
The instances sit in the node's private subnets in the task security group (endpoints and NAT as for
Fargate tasks); each task has its own ENI (awsvpc), its slot's task role and access point as on
Fargate (``pennflow.node.gpu``), and cannot reach the instance's metadata or role.
"""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import Stack
from aws_cdk import aws_autoscaling as autoscaling
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from constructs import Construct

from pennflow.workflow.definition import ComputeType, Workflow
from pennflow.workflow.gpu import GPU_SETTING, fit_problem
from stacks import constants as C
from stacks.compute import NodeCompute
from stacks.functions import NodeFunctions
from stacks.nag import acknowledge, wildcard_findings
from stacks.network import NodeNetwork
from stacks.settings import NodeSettings

ROOT_DEVICE = "/dev/xvda"  # the ECS-optimized Amazon Linux AMIs' root volume
# In awsvpc mode a task reaches the instance metadata (and the instance role) unless the agent blocks it.
ECS_AGENT_CONFIG = (
    "ECS_AWSVPC_BLOCK_IMDS=true",
    "ECS_ENABLE_TASK_IAM_ROLE=true",
    "ECS_ENABLE_GPU_SUPPORT=true",
)


# ECS refuses a capacity provider whose name begins with one of these.
RESERVED_PROVIDER_PREFIXES = ("aws", "ecs", "fargate")


def gpu_capacity_provider_name(node_name: str) -> str:
    """``<node>-gpu`` (unique per account and region, as the node's name is), ``pf-<node>-gpu`` for a
    node named like ``ecs-lab`` that ECS would refuse."""
    name = f"{node_name}-gpu"
    return f"pf-{name}" if name.startswith(RESERVED_PROVIDER_PREFIXES) else name


def folder_gpu_problems(settings: NodeSettings, workflows: Sequence[Workflow]) -> list[str]:
    """Why the node cannot run a folder workflow's gpu processor (the synth stops with these lines)."""
    problems = []
    for workflow in workflows:
        for p in (p for p in workflow.processors if p.compute_type is ComputeType.GPU):
            where = f"workflow {workflow.name!r}, processor {p.id!r}"
            if not settings.gpu.enabled:
                problems.append(f"{where}: computeType gpu needs {GPU_SETTING} true in cdk.json")
                continue
            why = fit_problem(
                p.id, gpus=p.gpu_count, cpu=p.cpu, memory=p.memory, instance_types=settings.gpu.instance_types
            )
            if why:
                problems.append(f"{where}: {why}")
    return problems


class NodeGpu(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: NodeSettings,
        network: NodeNetwork,
        compute: NodeCompute,
        functions: NodeFunctions,
    ) -> None:
        super().__init__(scope, construct_id)
        gpu = settings.gpu
        self.instance_role = iam.Role(
            self,
            "InstanceRole",
            description="ECS container instances of the GPU capacity provider (the agent's calls only)",
            assumed_by=iam.ServicePrincipal("ec2.amazonaws.com"),
        )
        user_data = ec2.UserData.for_linux()
        user_data.add_commands(*(f"echo {line} >> /etc/ecs/ecs.config" for line in ECS_AGENT_CONFIG))
        self.launch_template = ec2.LaunchTemplate(
            self,
            "LaunchTemplate",
            # Amazon Linux 2023's: Amazon Linux 2 left standard support on 2026-06-30.
            machine_image=ecs.EcsOptimizedImage.amazon_linux2023(ecs.AmiHardwareType.GPU),
            role=self.instance_role,
            security_group=network.task_security_group,
            user_data=user_data,
            require_imdsv2=True,
            http_put_response_hop_limit=1,
            detailed_monitoring=True,
            block_devices=[
                ec2.BlockDevice(
                    device_name=ROOT_DEVICE,
                    volume=ec2.BlockDeviceVolume.ebs(
                        gpu.volume_gib,
                        encrypted=True,
                        volume_type=ec2.EbsDeviceVolumeType.GP3,
                        delete_on_termination=True,
                    ),
                )
            ],
        )
        self.group = autoscaling.AutoScalingGroup(
            self,
            "Group",
            vpc=network.vpc,
            vpc_subnets=network.private_subnets,
            min_capacity=0,
            max_capacity=gpu.max_instances,
            mixed_instances_policy=autoscaling.MixedInstancesPolicy(
                launch_template=self.launch_template,
                launch_template_overrides=[
                    autoscaling.LaunchTemplateOverrides(instance_type=ec2.InstanceType(name))
                    for name in gpu.instance_types
                ],
                # On demand, in the order the settings list the types (the first is priced, workflow.gpu).
                instances_distribution=autoscaling.InstancesDistribution(
                    on_demand_allocation_strategy=autoscaling.OnDemandAllocationStrategy.PRIORITIZED,
                    on_demand_base_capacity=0,
                    on_demand_percentage_above_base_capacity=100,
                ),
            ),
        )
        self.capacity_provider = ecs.AsgCapacityProvider(
            self,
            "CapacityProvider",
            capacity_provider_name=gpu_capacity_provider_name(settings.node_name),
            auto_scaling_group=self.group,
            enable_managed_scaling=True,
            enable_managed_termination_protection=True,
            target_capacity_percent=100,
            machine_image_type=ecs.MachineImageType.AMAZON_LINUX_2,  # the ecs.config user data, AL2023's too
        )
        compute.cluster.add_asg_capacity_provider(self.capacity_provider)
        self._tell_functions(functions, settings)
        self._acknowledge()

    def _tell_functions(self, functions: NodeFunctions, settings: NodeSettings) -> None:
        """The API refuses what the instances cannot hold; the runs manager starts gpu tasks on them."""
        provider = self.capacity_provider.capacity_provider_name
        for name in ("api", *C.RUNS_MANAGER_LAMBDAS):  # the runs manager also prices gpu tasks (finalize)
            functions[name].add_environment(C.ENV["gpu_capacity_provider"], provider)
            functions[name].add_environment(
                C.ENV["gpu_instance_types"], ",".join(settings.gpu.instance_types)
            )

    def _acknowledge(self) -> None:
        # cdk-nag's EC26 reads a launch template off the group itself and throws on a mixed-instances
        # policy; the template's one volume is encrypted (tests/infrastructure/test_gpu.py checks it).
        acknowledge(
            self.group.node.default_child,
            "AwsSolutions-EC26",
            "The group's only volume is the launch template's root volume, encrypted; cdk-nag's EC26 cannot "
            "read a launch template through a mixed-instances policy and fails with an error instead.",
        )
        acknowledge(
            self.group,
            "AwsSolutions-AS3",
            "The group is ECS managed scaling's: it scales with waiting gpu tasks, and its scaling activities "
            "are in the Auto Scaling and ECS consoles; a notification per instance start would be noise.",
        )
        # cdk writes the container-instance policy (add_asg_capacity_provider); each of its wildcards
        # is acknowledged by name, so one added later still fails the synth.
        policy = self.instance_role.node.find_child("DefaultPolicy")
        document = Stack.of(self).resolve(policy.node.default_child.policy_document)
        for statement in document["Statement"]:
            for finding in wildcard_findings(statement):
                acknowledge(
                    policy,
                    f"AwsSolutions-IAM5[{finding}]",
                    "The ECS agent's and Docker's own calls (cdk's container-instance policy): DiscoverPollEndpoint, "
                    "Poll, StartTelemetrySession and GetAuthorizationToken have no resource-level permissions, the "
                    "ecs:cluster condition keeps Poll to this node's cluster, and Docker's awslogs driver writes "
                    "the tasks' log streams with the instance's role on EC2. Tasks never get this role "
                    "(ECS_AWSVPC_BLOCK_IMDS, hop limit 1, their own task roles).",
                )
