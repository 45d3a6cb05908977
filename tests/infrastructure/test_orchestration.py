"""Orchestration: one state machine per workflow file, compiled by pennflow.workflow.asl, and its shared role."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pennflow.workflow.asl import compile_workflow
from pennflow.workflow.definition import load_definition
from stacks import constants as C
from stacks.orchestration import WorkflowError, compile_folder
from tests.infrastructure.conftest import as_list

PROJECT_ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = PROJECT_ROOT / "workflows"
MINIMAL = """
name: {name}
processors:
  - id: source
    type: data-source
  - id: step
    image: example/step:1
    dependsOn: [source]
"""


def workflow_files() -> list[Path]:
    return sorted(p for p in WORKFLOWS.iterdir() if p.is_file() and p.suffix in C.WORKFLOW_SUFFIXES)


def state_machines(synthesized) -> dict[str, dict]:
    return {
        r["Properties"]["StateMachineName"]: r["Properties"]
        for r in synthesized.resources("AWS::StepFunctions::StateMachine").values()
    }


def test_one_state_machine_per_workflow_file(node):
    assert workflow_files(), "the project ships example workflows"
    assert len(state_machines(node)) == len(workflow_files())


def test_state_machines_are_named_after_their_workflow(node):
    names = set(state_machines(node))
    for path in workflow_files():
        workflow = load_definition(path)
        if path.name.removesuffix(path.suffix) == workflow.name:
            assert f"pennflow-{workflow.name}" in names
    assert all(name.startswith("pennflow-") and len(name) <= 80 for name in names)


def test_definitions_are_the_compiler_output(node):
    deployed = {
        json.dumps(json.loads(p["DefinitionString"]), sort_keys=True) for p in state_machines(node).values()
    }
    compiled = {json.dumps(compile_workflow(load_definition(p)), sort_keys=True) for p in workflow_files()}
    assert deployed == compiled


def test_standard_type_full_logging_without_execution_data_and_tracing(node):
    log_group = node.logical_id(node.stack.orchestration.log_group)
    for properties in state_machines(node).values():
        assert properties["StateMachineType"] == "STANDARD"
        assert properties["TracingConfiguration"] == {"Enabled": True}
        logging = properties["LoggingConfiguration"]
        assert logging["Level"] == "ALL"
        assert logging["IncludeExecutionData"] is False
        (destination,) = logging["Destinations"]
        assert destination["CloudWatchLogsLogGroup"]["LogGroupArn"] == {"Fn::GetAtt": [log_group, "Arn"]}


def test_role_runs_only_the_node_task_families_on_its_cluster(node):
    orchestration, compute = node.stack.orchestration, node.stack.compute
    statements = node.role_statements(orchestration.role)
    (run,) = [s for s in statements if s["Action"] == "ecs:RunTask"]
    assert run["Resource"]["Fn::Join"][1][-1] == ":task-definition/pennflow-proc-*"
    assert run["Condition"] == {
        "ArnEquals": {"ecs:cluster": {"Fn::GetAtt": [node.logical_id(compute.cluster), "Arn"]}}
    }


def test_role_manages_the_sync_managed_rule_and_invokes_only_its_lambdas(node):
    functions = node.stack.functions
    statements = node.role_statements(node.stack.orchestration.role)
    (rule,) = [s for s in statements if "events:PutRule" in as_list(s["Action"])]
    assert set(rule["Action"]) == {"events:PutTargets", "events:PutRule", "events:DescribeRule"}
    assert rule["Resource"]["Fn::Join"][1][-1] == ":rule/StepFunctionsGetEventsForECSTaskRule"
    (invoke,) = [s for s in statements if s["Action"] == "lambda:InvokeFunction"]
    targets = {node.logical_id(functions[n]) for n in ("finalize", "list_batches", "download")}
    assert {r["Fn::GetAtt"][0] for r in invoke["Resource"]} == targets


def test_role_runs_distributed_maps_over_the_run_manifest(node):
    statements = node.role_statements(node.stack.orchestration.role)
    (start,) = [s for s in statements if s["Action"] == "states:StartExecution"]
    assert start["Resource"]["Fn::Join"][1][-1] == ":stateMachine:pennflow-*"
    # the Maps read their items under runs/ and write the items' results there (ResultWriter), so no
    # state carries them
    (manifest,) = [s for s in statements if "s3:GetObject" in as_list(s["Action"])]
    bucket = node.logical_id(node.stack.storage.results_bucket)
    runs_prefix = {"Fn::Join": ["", [{"Fn::GetAtt": [bucket, "Arn"]}, "/runs/*"]]}
    assert manifest["Resource"] == runs_prefix
    assert sorted(as_list(manifest["Action"])) == [
        "s3:AbortMultipartUpload",
        "s3:GetObject",
        "s3:ListMultipartUploadParts",
        "s3:PutObject",
    ]
    (track,) = [s for s in statements if "states:DescribeExecution" in as_list(s["Action"])]
    assert sorted(as_list(track["Action"])) == ["states:DescribeExecution", "states:StopExecution"]
    assert track["Resource"]["Fn::Join"][1][-1] == ":execution:pennflow-*"


def test_api_can_create_state_machines_with_the_shared_role(node):
    api = node.stack.functions["api"]
    variables = node.json["Resources"][node.logical_id(api)]["Properties"]["Environment"]["Variables"]
    role = node.logical_id(node.stack.orchestration.role)
    assert variables["STATE_MACHINE_ROLE_ARN"] == {"Fn::GetAtt": [role, "Arn"]}
    assert variables["STATE_MACHINE_PREFIX"] == "pennflow-"
    (pass_role,) = [s for s in node.role_statements(api.role) if s["Action"] == "iam:PassRole"]
    assert pass_role["Resource"] == {"Fn::GetAtt": [role, "Arn"]}
    assert pass_role["Condition"] == {"StringEquals": {"iam:PassedToService": "states.amazonaws.com"}}


# --- compile_folder, without synthesis -------------------------------------------------------------


def test_folder_names_files_after_their_workflow(tmp_path):
    (tmp_path / "alpha.yaml").write_text(MINIMAL.format(name="alpha"))
    (tmp_path / "beta.yml").write_text(MINIMAL.format(name="beta"))
    (tmp_path / "notes.txt").write_text("not a workflow")
    compiled = compile_folder(tmp_path, "node")
    assert [(c.source.name, c.state_machine_name) for c in compiled] == [
        ("alpha.yaml", "node-alpha"),
        ("beta.yml", "node-beta"),
    ]


def test_second_file_of_a_workflow_is_named_after_its_file(tmp_path):
    (tmp_path / "alpha.pennsieve.json").write_text(
        json.dumps({"name": "alpha", "processors": [{"id": "s", "type": "data-source"}]})
    )
    (tmp_path / "alpha.yaml").write_text(MINIMAL.format(name="alpha"))
    names = {c.source.name: c.state_machine_name for c in compile_folder(tmp_path, "pennflow")}
    assert names == {"alpha.yaml": "pennflow-alpha", "alpha.pennsieve.json": "pennflow-alpha-pennsieve"}


def test_invalid_workflow_is_reported_with_its_file(tmp_path):
    (tmp_path / "broken.yaml").write_text("name: broken\nprocessors: []\n")
    with pytest.raises(WorkflowError, match=r"broken\.yaml: 1 fault"):
        compile_folder(tmp_path, "pennflow")


def test_clashing_names_are_refused(tmp_path):
    (tmp_path / "alpha.yaml").write_text(MINIMAL.format(name="alpha"))
    (tmp_path / "other.yaml").write_text(MINIMAL.format(name="alpha-other"))
    (tmp_path / "alpha-other.yml").write_text(MINIMAL.format(name="alpha"))
    with pytest.raises(WorkflowError, match="is taken by"):
        compile_folder(tmp_path, "pennflow")


def test_missing_folder_names_the_setting(tmp_path):
    with pytest.raises(WorkflowError, match="workflowsFolder"):
        compile_folder(tmp_path / "absent", "pennflow")
