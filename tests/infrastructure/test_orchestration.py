"""Orchestration: one state machine per workflow file, compiled by pennflow.workflow.asl, and its shared role."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pennflow.workflow.asl import CompileOptions, compile_workflow
from pennflow.workflow.definition import load_definition
from pennflow.workflow.registered import MANAGED_BY_STACK, WorkflowRecord
from stacks import constants as C
from stacks.orchestration import PARTITION_PLACEHOLDER, WorkflowError, compile_folder
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
            assert f"pennflow_{workflow.name}" in names
    assert all(name.startswith("pennflow_") and len(name) <= 80 for name in names)


def definition_text(properties: dict) -> str:
    """The deployed definition, the stack's partition (a Ref when the region is not fixed) as the
    compiler's placeholder."""
    definition = properties["DefinitionString"]
    if isinstance(definition, str):
        return definition
    delimiter, parts = definition["Fn::Join"]
    partition = {"Ref": "AWS::Partition"}
    assert all(isinstance(p, str) or p == partition for p in parts)
    return delimiter.join(PARTITION_PLACEHOLDER if p == partition else p for p in parts)


def test_definitions_are_the_compiler_output(node):
    deployed = {
        json.dumps(json.loads(definition_text(p)), sort_keys=True) for p in state_machines(node).values()
    }
    options = CompileOptions(partition=PARTITION_PLACEHOLDER)
    compiled = {
        json.dumps(compile_workflow(load_definition(p), options), sort_keys=True) for p in workflow_files()
    }
    assert deployed == compiled


def test_integrations_name_the_stack_partition(node):
    for properties in state_machines(node).values():
        parts = properties["DefinitionString"]["Fn::Join"][1]
        assert {"Ref": "AWS::Partition"} in parts
        assert not any("arn:aws:" in p for p in parts if isinstance(p, str))
        assert '"arn:${Partition}:states:::ecs:runTask.sync"' in definition_text(properties)


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
    assert run["Resource"]["Fn::Join"][1][-1] == ":task-definition/pennflow_proc-*"
    assert run["Condition"] == {
        "ArnEquals": {"ecs:cluster": {"Fn::GetAtt": [node.logical_id(compute.cluster), "Arn"]}}
    }


def test_role_manages_the_sync_managed_rule_and_invokes_only_its_lambdas(node):
    functions = node.stack.functions
    statements = node.role_statements(node.stack.orchestration.role)
    (rule,) = [s for s in statements if "events:PutRule" in as_list(s["Action"])]
    assert set(rule["Action"]) == {"events:PutTargets", "events:PutRule", "events:DescribeRule"}
    # runTask.sync's rule, and startExecution.sync:2's for a workflow split into child machines
    assert [r["Fn::Join"][1][-1] for r in rule["Resource"]] == [
        ":rule/StepFunctionsGetEventsForECSTaskRule",
        ":rule/StepFunctionsGetEventsForStepFunctionsExecutionRule",
    ]
    invokes = [s for s in statements if s["Action"] == "lambda:InvokeFunction"]
    # the processor functions' statement is tests/infrastructure/test_lambda_compute.py's
    (invoke,) = [s for s in invokes if all("Fn::GetAtt" in r for r in as_list(s["Resource"]))]
    targets = {node.logical_id(functions[n]) for n in ("finalize", "list_batches", "download", "join")}
    assert {r["Fn::GetAtt"][0] for r in invoke["Resource"]} == targets


def test_role_runs_distributed_maps_over_the_run_manifest(node):
    statements = node.role_statements(node.stack.orchestration.role)
    (start,) = [s for s in statements if s["Action"] == "states:StartExecution"]
    assert start["Resource"]["Fn::Join"][1][-1] == ":stateMachine:pennflow_*"
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
    assert track["Resource"]["Fn::Join"][1][-1] == ":execution:pennflow_*"


def test_api_can_create_state_machines_with_the_shared_role(node):
    api = node.stack.functions["api"]
    variables = node.json["Resources"][node.logical_id(api)]["Properties"]["Environment"]["Variables"]
    role = node.logical_id(node.stack.orchestration.role)
    assert variables["STATE_MACHINE_ROLE_ARN"] == {"Fn::GetAtt": [role, "Arn"]}
    assert variables["STATE_MACHINE_PREFIX"] == "pennflow_api_"  # the API's own namespace
    (pass_role,) = [s for s in node.role_statements(api.role) if s["Action"] == "iam:PassRole"]
    assert pass_role["Resource"] == {"Fn::GetAtt": [role, "Arn"]}
    assert pass_role["Condition"] == {"StringEquals": {"iam:PassedToService": "states.amazonaws.com"}}


def test_the_api_creates_and_updates_only_state_machines_of_its_own_namespace(node):
    statements = node.role_statements(node.stack.functions["api"].role)
    writes = [
        s
        for s in statements
        if {"states:CreateStateMachine", "states:UpdateStateMachine"} & set(as_list(s["Action"]))
    ]
    (write,) = writes
    assert {"states:CreateStateMachine", "states:UpdateStateMachine"} <= set(write["Action"])
    assert write["Resource"]["Fn::Join"][1][-1] == ":stateMachine:pennflow_api_*"
    folder_machines = set(state_machines(node))
    assert folder_machines and not any(name.startswith("pennflow_api_") for name in folder_machines)


# --- the folder's workflows in the workflows table ----------------------------------------------


def _rendered(value) -> str:
    """A custom resource's call property: CloudFormation references become <LogicalId> / <LogicalId.Attr>."""
    if isinstance(value, str):
        return value
    if "Fn::Join" in value:
        return "".join(_rendered(part) for part in value["Fn::Join"][1])
    if "Ref" in value:
        return f"<{value['Ref']}>"
    (resource, attribute) = value["Fn::GetAtt"]
    return f"<{resource}.{attribute}>"


def recorded(node) -> dict[str, tuple[WorkflowRecord, dict]]:
    """registered name -> (the current record the stack writes, the custom resource's properties)."""
    out = {}
    for resource in node.resources("Custom::PennflowWorkflowRecord").values():
        properties = resource["Properties"]
        create = json.loads(_rendered(properties["Create"]))
        assert (create["service"], create["action"]) == ("DynamoDB", "transactWriteItems")
        items = [put["Put"] for put in create["parameters"]["TransactItems"]]
        assert {item["TableName"] for item in items} == {
            f"<{node.logical_id(node.stack.storage.workflows_table)}>"
        }
        version, current = (
            WorkflowRecord.from_values({k: v["S"] for k, v in i["Item"].items()}) for i in items
        )
        assert (
            version == current
            and items[0]["Item"]["name"]["S"] == f"{current.name}#{current.definition_hash}"
        )
        out[current.name] = (current, properties)
    return out


def test_every_folder_workflow_is_recorded_as_stack_owned_with_its_state_machine_and_version(node):
    records = recorded(node)
    compiled = compile_folder(WORKFLOWS, "pennflow")
    assert set(records) == {c.registered_name for c in compiled} == {"eeg-quality", "eeg-quality-pennsieve"}
    machines = {
        r["Properties"]["StateMachineName"]: k
        for k, r in node.resources("AWS::StepFunctions::StateMachine").items()
    }
    versions = node.resources("AWS::StepFunctions::StateMachineVersion")
    for workflow in compiled:
        record, properties = records[workflow.registered_name]
        assert record.managed_by == MANAGED_BY_STACK and record.source == workflow.source.name
        assert record.created_at is None and record.updated_at is None
        assert record.definition_hash == load_definition(workflow.source).definition_hash()
        assert record.workflow() == load_definition(workflow.source)
        machine = machines[f"pennflow_{workflow.registered_name}"]
        assert record.state_machine_arn == f"<{machine}>"
        version_id, attribute = record.version_arn.strip("<>").split(".")
        assert attribute == "Arn" and versions[version_id]["Properties"]["StateMachineArn"] == {
            "Ref": machine
        }
        # An update rewrites the same keys; removing the file from the folder deletes the current record.
        assert properties["Update"] == properties["Create"]
        delete = json.loads(_rendered(properties["Delete"]))
        assert (delete["action"], delete["parameters"]["Key"]) == ("deleteItem", {"name": {"S": record.name}})
        assert (
            delete["physicalResourceId"] == json.loads(_rendered(properties["Create"]))["physicalResourceId"]
        )


def test_each_definition_publishes_a_version_that_is_kept_for_its_reruns(node):
    versions = node.resources("AWS::StepFunctions::StateMachineVersion")
    assert len(versions) == len(state_machines(node))
    hashes = {record.definition_hash for record, _ in recorded(node).values()}
    for version in versions.values():
        assert version["DeletionPolicy"] == version["UpdateReplacePolicy"] == "Retain"
        (machine,) = version["Properties"]["StateMachineArn"].values()
        assert version["Properties"]["StateMachineRevisionId"] == {
            "Fn::GetAtt": [machine, "StateMachineRevisionId"]
        }
        assert version["Properties"]["Description"].removeprefix("definition ") in hashes


def test_the_recording_function_may_write_only_the_folder_workflows_records(node):
    records = node.stack.workflow_records
    statements = node.role_statements(records.role)
    table = node.logical_id(node.stack.storage.workflows_table)
    (write,) = [s for s in statements if any(a.startswith("dynamodb:") for a in as_list(s["Action"]))]
    assert sorted(write["Action"]) == ["dynamodb:DeleteItem", "dynamodb:PutItem"]
    assert write["Resource"] == {"Fn::GetAtt": [table, "Arn"]}
    keys = write["Condition"]["ForAllValues:StringEquals"]["dynamodb:LeadingKeys"]
    assert sorted(keys) == sorted(
        k for r, _ in recorded(node).values() for k in (r.name, f"{r.name}#{r.definition_hash}")
    )
    others = [s for s in statements if s is not write]
    assert {a for s in others for a in as_list(s["Action"])} == {"logs:CreateLogStream", "logs:PutLogEvents"}
    assert all("*" not in json.dumps(s["Resource"]) for s in others)
    assert not node.json["Resources"][node.logical_id(records.role)]["Properties"].get("ManagedPolicyArns")
    (function,) = [
        f
        for f in node.resources("AWS::Lambda::Function").values()
        if f["Properties"]["Role"] == {"Fn::GetAtt": [node.logical_id(records.role), "Arn"]}
    ]
    assert "WorkflowRecordsRoleDefaultPolicy" in " ".join(function.get("DependsOn", []))


# --- compile_folder, without synthesis -------------------------------------------------------------


def test_folder_names_files_after_their_workflow(tmp_path):
    (tmp_path / "alpha.yaml").write_text(MINIMAL.format(name="alpha"))
    (tmp_path / "beta.yml").write_text(MINIMAL.format(name="beta"))
    (tmp_path / "notes.txt").write_text("not a workflow")
    compiled = compile_folder(tmp_path, "node")
    assert [(c.source.name, c.state_machine_name) for c in compiled] == [
        ("alpha.yaml", "node_alpha"),
        ("beta.yml", "node_beta"),
    ]


def test_second_file_of_a_workflow_is_named_after_its_file(tmp_path):
    (tmp_path / "alpha.pennsieve.json").write_text(
        json.dumps({"name": "alpha", "processors": [{"id": "s", "type": "data-source"}]})
    )
    (tmp_path / "alpha.yaml").write_text(MINIMAL.format(name="alpha"))
    compiled = compile_folder(tmp_path, "pennflow")
    names = {c.source.name: c.state_machine_name for c in compiled}
    assert names == {"alpha.yaml": "pennflow_alpha", "alpha.pennsieve.json": "pennflow_alpha-pennsieve"}
    # Runs of the second file are started under its own name; its definition keeps its name.
    assert {c.source.name: c.registered_name for c in compiled} == {
        "alpha.yaml": "alpha",
        "alpha.pennsieve.json": "alpha-pennsieve",
    }
    assert {c.workflow.name for c in compiled} == {"alpha"}


def test_a_second_file_whose_registered_name_would_be_too_long_is_refused_at_synth(tmp_path):
    (tmp_path / "alpha.yaml").write_text(MINIMAL.format(name="alpha"))
    (tmp_path / f"alpha-{'x' * 60}.yaml").write_text(MINIMAL.format(name="alpha"))
    with pytest.raises(WorkflowError, match="over 64 characters; shorten the file name"):
        compile_folder(tmp_path, "pn")


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
