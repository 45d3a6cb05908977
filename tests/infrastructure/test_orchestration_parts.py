"""A folder workflow too large for one state machine: the stack deploys its child machines too.

Synthesized in a small stack of its own (the node's full synthesis has no such workflow): the
orchestration construct's state machines for one compiled workflow, no more."""

from __future__ import annotations

import json

from aws_cdk import App, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk.assertions import Template
from constructs import Construct

from stacks.orchestration import NodeOrchestration, compile_folder
from tests.unit.test_compiler_scale import definition_file, pipeline


def test_a_split_folder_workflow_gets_each_child_machine_and_its_version_named_by_the_parent(tmp_path):
    folder = tmp_path / "workflows"
    folder.mkdir()
    definition_file(folder, pipeline(1000))
    (compiled,) = compile_folder(folder, "lab")
    assert len(compiled.parts) >= 2

    stack = Stack(App(), "Parts")
    orchestration = NodeOrchestration.__new__(NodeOrchestration)  # only what _state_machine uses
    Construct.__init__(orchestration, stack, "Orchestration")
    orchestration.role = iam.Role(
        orchestration, "Role", assumed_by=iam.ServicePrincipal("states.amazonaws.com")
    )
    orchestration.log_group = logs.LogGroup(orchestration, "Logs")
    orchestration._state_machine(compiled)
    template = Template.from_stack(stack).to_json()["Resources"]

    machines = {
        r["Properties"]["StateMachineName"]: r
        for r in template.values()
        if r["Type"] == "AWS::StepFunctions::StateMachine"
    }
    children = [f"lab_wide_part{k}" for k in range(1, len(compiled.parts) + 1)]
    assert sorted(machines) == sorted(["lab_wide", *children])
    versions = {
        logical: r
        for logical, r in template.items()
        if r["Type"] == "AWS::StepFunctions::StateMachineVersion"
    }
    assert len(versions) == len(children), "each child publishes a version (the parent's is made beside it)"
    parent = json.dumps(machines["lab_wide"]["Properties"]["DefinitionString"])
    assert "${Part" not in parent
    for logical in versions:
        assert json.dumps({"Fn::GetAtt": [logical, "Arn"]}) in parent, f"the parent starts {logical}"
