"""Orchestration: one Step Functions state machine per workflow file, and what runtime needs to add more.

Each definition in the workflows folder is compiled by `pennflow.workflow.asl.compile_workflow` (the same
compiler `pennflow compile` runs) and deployed as a STANDARD state machine named `<node>_<workflow>`,
with a published version per definition (kept, so a rerun of an earlier definition still runs it).
`stacks.workflow_records` records each one in the workflows table, so the API can run it at once.
All state machines share one role, which the API passes to the state machines it creates at runtime.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aws_cdk import ArnFormat, Aws, RemovalPolicy, Stack, Tags
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from pennflow.workflow.asl_split import part_name, substitute
from pennflow.workflow.cost_tags import WORKFLOW_TAG
from pennflow.workflow.definition import MAX_NAME, Workflow
from stacks import constants as C
from stacks.compute import NodeCompute
from stacks.functions import NodeFunctions
from stacks.log_groups import node_log_group
from stacks.nag import acknowledge_wildcards
from stacks.settings import NodeSettings

# The compiler writes integration ARNs with this placeholder (workflows compile before the stack
# exists); each state machine puts the stack's partition in its place, so one template deploys to
# aws, aws-cn and aws-us-gov. Not DefinitionSubstitutions: cfn-lint fails validating those.
PARTITION_PLACEHOLDER = "${Partition}"


class WorkflowError(ValueError):
    """A workflow file cannot become a state machine; the message names the file."""


@dataclass(frozen=True)
class CompiledWorkflow:
    source: Path
    name: str  # the workflow's name
    state_machine_name: str
    definition: dict
    workflow: Workflow
    registered_name: str  # what runs are started with: the workflow's name, or its file's slug if taken
    parts: tuple[dict, ...] = ()  # child machines of a workflow too large for one (asl_split)

    @property
    def definition_hash(self) -> str:
        return self.workflow.definition_hash()


def compile_folder(folder: Path, node_name: str) -> list[CompiledWorkflow]:
    """Compile every workflow file of the folder (not its subfolders), sorted by file name.

    A file whose stem is its workflow's name gives `<node>_<name>`. When another file defines a
    workflow name already taken (e.g. `eeg-quality.pennsieve.json` next to `eeg-quality.yaml`), it is
    named after its own file stem instead, so that every file still gets its own state machine, and
    it is registered (started through the API) under that name.
    """
    if not folder.is_dir():
        raise WorkflowError(f"{folder}: workflows folder not found (setting pennflow.workflowsFolder)")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in C.WORKFLOW_SUFFIXES)
    compiled = _named(_compile_files(files), C.state_machine_prefix(node_name))
    return sorted(compiled, key=lambda c: c.source.name)


def _compile_files(files: list[Path]) -> list[tuple[Path, Workflow, Any]]:
    from pennflow.workflow.asl import CompileError, CompileOptions, compile_machines  # pure: no AWS import
    from pennflow.workflow.definition import DefinitionError, load_definition

    compiled = []
    for path in files:
        try:
            workflow = load_definition(path)
            options = CompileOptions(partition=PARTITION_PLACEHOLDER)
            compiled.append((path, workflow, compile_machines(workflow, options)))
        except DefinitionError as err:  # its message already names the file and lists every fault
            raise WorkflowError(str(err)) from None
        except CompileError as err:
            raise WorkflowError(f"{path.name}: {err}") from None
    return compiled


def _named(compiled: list[tuple[Path, Workflow, Any]], prefix: str) -> list[CompiledWorkflow]:
    # Files named after their workflow claim the plain name first, whatever their sort order.
    ordered = sorted(compiled, key=lambda item: (_stem(item[0]) != item[1].name, item[0].name))
    plain_names_used: set[str] = set()
    sources: dict[str, Path] = {}  # state machine name -> file
    named = []
    for path, workflow, machines in ordered:
        name = workflow.name
        registered_name = _slug(_stem(path)) if name in plain_names_used else name
        state_machine_name = prefix + registered_name
        plain_names_used.add(name)
        if state_machine_name in sources:
            raise WorkflowError(
                f"{path.name}: state machine name {state_machine_name!r} is taken by {sources[state_machine_name].name}"
            )
        longest = part_name(state_machine_name, len(machines.parts)) if machines.parts else state_machine_name
        if len(longest) > C.STATE_MACHINE_NAME_LIMIT:
            raise WorkflowError(
                f"{path.name}: state machine name {longest!r} is over "
                f"{C.STATE_MACHINE_NAME_LIMIT} characters; shorten the file name"
            )
        if len(registered_name) > MAX_NAME:
            raise WorkflowError(
                f"{path.name}: registered as {registered_name!r}, over {MAX_NAME} characters; shorten the file name"
            )
        sources[state_machine_name] = path
        parts = tuple(part.definition for part in machines.parts)
        named.append(
            CompiledWorkflow(
                path, name, state_machine_name, machines.definition, workflow, registered_name, parts
            )
        )
    return named


def _stem(path: Path) -> str:
    return path.name[: -len(path.suffix)]


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")


class NodeOrchestration(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: NodeSettings,
        compute: NodeCompute,
        functions: NodeFunctions,
        results_bucket: s3.IBucket,
        workflows: list[CompiledWorkflow],
    ) -> None:
        super().__init__(scope, construct_id)
        self._settings = settings
        self.log_group = node_log_group(
            self, "StateMachineLogs", settings, name=f"/aws/vendedlogs/states/{settings.node_name}"
        )
        self.role = self._role(compute, functions, results_bucket)
        self.workflows = workflows
        self.state_machines = {wf.state_machine_name: self._state_machine(wf) for wf in workflows}
        self.versions = {
            wf.state_machine_name: self._version(wf, self.state_machines[wf.state_machine_name])
            for wf in workflows
        }
        if workflows:
            self._acknowledge_service_wildcards()

    def _states_arn(self, resource: str, suffix: str) -> str:
        return Stack.of(self).format_arn(
            service="states",
            resource=resource,
            resource_name=f"{C.state_machine_prefix(self._settings.node_name)}{suffix}",
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )

    def _role(self, compute: NodeCompute, functions: NodeFunctions, results_bucket: s3.IBucket) -> iam.Role:
        stack = Stack.of(self)
        family = C.task_family_prefix(self._settings.node_name)
        role = iam.Role(
            self,
            "StateMachineRole",
            description="pennflow state machines: run processor tasks, invoke finalize, list_batches, download",
            assumed_by=iam.ServicePrincipal(
                "states.amazonaws.com", conditions={"StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID}}
            ),
        )
        on_cluster = {"ArnEquals": {"ecs:cluster": compute.cluster.cluster_arn}}
        tasks_of_cluster = stack.format_arn(
            service="ecs", resource="task", resource_name=f"{compute.cluster.cluster_name}/*"
        )
        statements = {
            "run": iam.PolicyStatement(
                actions=["ecs:RunTask"],
                resources=[
                    stack.format_arn(service="ecs", resource="task-definition", resource_name=f"{family}*")
                ],
                conditions=on_cluster,
            ),
            "track": iam.PolicyStatement(
                actions=["ecs:StopTask", "ecs:DescribeTasks"],
                resources=[tasks_of_cluster],
                conditions=on_cluster,
            ),
            "tag": iam.PolicyStatement(  # PropagateTags tags each task as RunTask creates it
                actions=["ecs:TagResource"],
                resources=[tasks_of_cluster],
                conditions={"StringEquals": {"ecs:CreateAction": "RunTask"}},
            ),
            "pass": iam.PolicyStatement(
                actions=["iam:PassRole"],
                resources=[compute.execution_role.role_arn, compute.slot_roles_pattern],
                conditions={"StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}},
            ),
            "invoke": iam.PolicyStatement(
                actions=["lambda:InvokeFunction"],
                resources=[functions[name].function_arn for name in ("finalize", "list_batches", "download")],
            ),
            # Data sources and scatters are Distributed Maps: child executions of the same state machine,
            # reading the run's manifest or batch list (runs/<run_id>/... in the results bucket); a
            # workflow too large for one machine starts, tracks and stops its <machine>_part<k> children.
            "map_start": iam.PolicyStatement(
                actions=["states:StartExecution"], resources=[self._states_arn("stateMachine", "*")]
            ),
            "map_track": iam.PolicyStatement(
                actions=["states:DescribeExecution", "states:StopExecution"],
                resources=[self._states_arn("execution", "*")],
            ),
            # ... and writing their items' results there (ResultWriter), not into the state
            "manifest": iam.PolicyStatement(
                actions=[
                    "s3:GetObject",
                    "s3:PutObject",
                    "s3:ListMultipartUploadParts",
                    "s3:AbortMultipartUpload",
                ],
                resources=[results_bucket.arn_for_objects(f"{C.RESULTS_PREFIX}*")],
            ),
            # runTask.sync learns that a task stopped, and startExecution.sync:2 (a workflow split
            # into child machines) that a child execution ended, through these EventBridge managed rules.
            "sync_rule": iam.PolicyStatement(
                actions=["events:PutTargets", "events:PutRule", "events:DescribeRule"],
                resources=[
                    stack.format_arn(service="events", resource="rule", resource_name=rule)
                    for rule in (C.ECS_SYNC_MANAGED_RULE, C.SFN_SYNC_MANAGED_RULE)
                ],
            ),
        }
        for statement in statements.values():
            role.add_to_principal_policy(statement)
        policy = role.node.find_child("DefaultPolicy")
        acknowledge_wildcards(
            policy,
            statements["run"],
            "Task definitions are registered at runtime, one revision per processor content hash; RunTask is "
            "limited to this node's task-definition family prefix and, by condition, to this node's cluster.",
        )
        acknowledge_wildcards(
            policy,
            statements["pass"],
            "RunTask passes the task role its task definition names, one per run slot; the pattern "
            "'<node>_<region>_*' is the fixed names of exactly this node's slot roles (a node name holds no '_').",
        )
        acknowledge_wildcards(
            policy,
            statements["map_start"],
            "A data source's Distributed Map starts child executions of the running state machine (any of "
            "this node's, or a published version of it), and a workflow split into child machines starts its "
            "<machine>_part<k> versions, registered at runtime too; the ARN pattern keeps it to the node's prefix.",
        )
        acknowledge_wildcards(
            policy,
            statements["map_track"],
            "Distributed Map child executions are named at runtime (<state machine>/<map run>:<id>); the ARN "
            "pattern keeps tracking and stopping them to this node's state machines.",
        )
        acknowledge_wildcards(
            policy,
            statements["manifest"],
            "Distributed Maps read each run's download manifest (runs/<run_id>/manifest.json) and scatter batch "
            "lists (runs/<run_id>/<processor_id>/batches.json), and write their items' results under "
            "runs/<run_id>/<processor_id>/map-results/; the run id is only known at runtime and the prefix keeps "
            "the role out of the rest of the bucket.",
        )
        acknowledge_wildcards(
            policy,
            statements["track"],
            "runTask.sync polls and stops the tasks it started, whose ids exist only at runtime; the resource is "
            "limited to tasks of this node's cluster.",
        )
        return role

    def _state_machine(self, workflow: CompiledWorkflow) -> sfn.StateMachine:
        # Child machines first, each named in its parent by its published version (asl_split).
        versions: list[str] = []
        for number, part in enumerate(workflow.parts, 1):
            name = part_name(workflow.state_machine_name, number)
            child = self._machine(name, substitute(json.dumps(part), versions), workflow)
            versions.append(self._published(name, child, workflow).attr_arn)
        return self._machine(
            workflow.state_machine_name, substitute(json.dumps(workflow.definition), versions), workflow
        )

    def _machine(self, name: str, definition: str, workflow: CompiledWorkflow) -> sfn.StateMachine:
        state_machine = sfn.StateMachine(
            self,
            _construct_id(name),
            state_machine_name=name,
            state_machine_type=sfn.StateMachineType.STANDARD,
            definition_body=sfn.DefinitionBody.from_string(
                definition.replace(PARTITION_PLACEHOLDER, Stack.of(self).partition)
            ),
            role=self.role,
            logs=sfn.LogOptions(
                destination=self.log_group, level=sfn.LogLevel.ALL, include_execution_data=False
            ),
            tracing_enabled=True,
        )
        # Cost allocation: the node's tag comes from the stack; executions have no tags of their own.
        Tags.of(state_machine).add(WORKFLOW_TAG, workflow.registered_name)
        return state_machine

    def _version(
        self, workflow: CompiledWorkflow, state_machine: sfn.StateMachine
    ) -> sfn.CfnStateMachineVersion:
        return self._published(workflow.state_machine_name, state_machine, workflow)

    def _published(
        self, name: str, state_machine: sfn.StateMachine, workflow: CompiledWorkflow
    ) -> sfn.CfnStateMachineVersion:
        """Published whenever the definition changes; the earlier ones are kept for their reruns."""
        version = sfn.CfnStateMachineVersion(
            self,
            _construct_id(name).removesuffix("StateMachine") + "Version",
            state_machine_arn=state_machine.state_machine_arn,
            state_machine_revision_id=state_machine.node.default_child.attr_state_machine_revision_id,
            description=f"definition {workflow.definition_hash}",
        )
        version.apply_removal_policy(RemovalPolicy.RETAIN)
        return version

    def _acknowledge_service_wildcards(self) -> None:
        """CDK adds the log-delivery and X-Ray statements for logging and tracing to the shared role."""
        policy = self.role.node.find_child("DefaultPolicy")
        acknowledge_wildcards(
            policy,
            iam.PolicyStatement(actions=["logs:CreateLogDelivery"], resources=["*"]),
            "CloudWatch Logs vended-log delivery (logs:*LogDelivery, *ResourcePolicy, DescribeLogGroups) and X-Ray "
            "(PutTraceSegments, PutTelemetryRecords, GetSampling*) have no resource-level permissions.",
        )


def _construct_id(state_machine_name: str) -> str:
    return "".join(part.title() for part in re.split(r"[^A-Za-z0-9]+", state_machine_name)) + "StateMachine"
