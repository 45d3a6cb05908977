"""The compute node stack: wires the constructs of each concern together, nothing more."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aws_cdk import CfnOutput, Stack, Tags
from constructs import Construct

from stacks import constants as C
from stacks.api import NodeApi, allow_run_reads
from stacks.compute import NodeCompute
from stacks.events import NodeEvents
from stacks.functions import NodeFunctions
from stacks.gpu import NodeGpu, folder_gpu_problems
from stacks.joins import NodeJoins
from stacks.lambda_compute import NodeLambdaCompute
from stacks.layers import NodeLayers
from stacks.monitoring import NodeMonitoring
from stacks.network import NodeNetwork
from stacks.notebooks import NodeNotebooks
from stacks.notifications import NodeNotifications
from stacks.orchestration import CompiledWorkflow, NodeOrchestration
from stacks.processors import NodeProcessors
from stacks.resume import NodeResume
from stacks.settings import NodeSettings, SettingsError
from stacks.storage import NodeStorage
from stacks.triggers import NodeTriggers
from stacks.workflow_records import WorkflowRecords


class NodeStack(Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: NodeSettings,
        workflows: list[CompiledWorkflow],
        project_root: Path,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, description="pennflow compute node", **kwargs)
        self.settings = settings
        gpu_problems = folder_gpu_problems(settings, [w.workflow for w in workflows])
        if gpu_problems:
            raise SettingsError("\n".join(gpu_problems))
        Tags.of(self).add(C.NODE_TAG_KEY, settings.node_name)

        self.network = NodeNetwork(self, "Network", settings=settings)
        self.storage = NodeStorage(self, "Storage", settings=settings, network=self.network)
        self.compute = NodeCompute(
            self, "Compute", settings=settings, network=self.network, storage=self.storage
        )
        self.functions = NodeFunctions(
            self,
            "Functions",
            settings=settings,
            network=self.network,
            storage=self.storage,
            compute=self.compute,
            project_root=project_root,
        )
        self.orchestration = NodeOrchestration(
            self,
            "Orchestration",
            settings=settings,
            compute=self.compute,
            functions=self.functions,
            results_bucket=self.storage.results_bucket,
            workflows=workflows,
        )
        self.joins = NodeJoins(self, "Joins", functions=self.functions, orchestration=self.orchestration)
        self.workflow_records = WorkflowRecords(
            self,
            "WorkflowRecords",
            settings=settings,
            table=self.storage.workflows_table,
            orchestration=self.orchestration,
        )
        self.functions.allow_orchestration(
            state_machine_role=self.orchestration.role,
            state_machine_log_group_arn=self.orchestration.log_group.log_group_arn,
        )
        self.layers = NodeLayers(
            self,
            "Layers",
            settings=settings,
            storage=self.storage,
            compute=self.compute,
            functions=self.functions,
        )
        self.processors = NodeProcessors(
            self, "Processors", settings=settings, storage=self.storage, functions=self.functions
        )
        if settings.gpu.enabled:  # computeType gpu processors; the node has no GPU instances otherwise
            self.gpu = NodeGpu(
                self,
                "Gpu",
                settings=settings,
                network=self.network,
                compute=self.compute,
                functions=self.functions,
            )
        self.lambda_compute = NodeLambdaCompute(
            self,
            "LambdaCompute",
            settings=settings,
            network=self.network,
            storage=self.storage,
            compute=self.compute,
            functions=self.functions,
            state_machine_role=self.orchestration.role,
            repository=self.processors.repository,
        )
        self.storage.guard_clients(runs_manager=self.functions.roles["runs_manager"])
        self.triggers = NodeTriggers(self, "Triggers", functions=self.functions, storage=self.storage)
        self.api = NodeApi(
            self, "Api", settings=settings, handler=self.functions["api"], webhook=self.triggers.webhook
        )
        # Notebook sessions only on a node with the interactive setting: otherwise none of their resources.
        self.notebooks = (
            NodeNotebooks(
                self,
                "Notebooks",
                settings=settings,
                network=self.network,
                storage=self.storage,
                compute=self.compute,
                functions=self.functions,
                api=self.api.rest_api,
            )
            if settings.interactive
            else None
        )
        allow_run_reads(
            self.functions,
            log_bucket=self.storage.log_bucket,
            results_bucket=self.storage.results_bucket,
            log_group=self.compute.processor_log_group,
        )
        self.events = NodeEvents(
            self,
            "Events",
            settings=settings,
            cluster=self.compute.cluster,
            status=self.functions["status"],
            dead_letter_queue=self.functions.dead_letter_queue,
        )
        self.resume = NodeResume(
            self,
            "Resume",
            resume=self.functions["resume"],
            dead_letter_queue=self.functions.dead_letter_queue,
        )
        # The one secret the owner fills in after deploy (README, "Deploying a compute node").
        secret_output = CfnOutput(
            self,
            "PennsieveSecretArn",
            value=self.compute.pennsieve_secret.secret_arn,
            description="Put the node's Pennsieve API key and secret here (aws secretsmanager put-secret-value)",
        )
        secret_output.override_logical_id("PennsieveSecretArn")
        self.notifications = NodeNotifications(
            self, "Notifications", settings=settings, functions=self.functions
        )
        self.monitoring = NodeMonitoring(
            self,
            "Monitoring",
            settings=settings,
            functions=self.functions.functions,
            state_machines=self.orchestration.state_machines,
            dead_letter_queue=self.functions.dead_letter_queue,
            file_system=self.storage.file_system,
        )
        self.notifications.add_monthly_budget(settings, self.monitoring.topic)
