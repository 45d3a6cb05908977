"""POST/GET /workflows through the API Lambda: validation faults, state machines, versions."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest
import yaml

from pennflow.node.registry import StackOwnedWorkflow
from pennflow.workflow.asl import compile_to_json
from pennflow.workflow.definition import Workflow, load_definition
from pennflow.workflow.registered import WorkflowRecord
from tests.integration import api_support
from tests.integration.api_support import ACCOUNT, ROOT, Api, tiny
from tests.integration.aws_fixtures import REGION

api = api_support.api
mocked_aws = api_support.mocked_aws

STATE_MACHINE = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:pennflow-api_tiny"


def sfn():
    return boto3.client("stepfunctions", region_name=REGION)


def test_registering_creates_the_state_machine_and_answers_201(api: Api) -> None:
    reply = api("POST", "/workflows", body=tiny())

    assert reply.status == 201
    assert reply.headers["content-type"] == "application/json"
    assert reply.body["name"] == "tiny"
    assert reply.body["stateMachineArn"] == STATE_MACHINE
    assert reply.body["stateMachineVersionArn"] == f"{STATE_MACHINE}:1"
    assert len(reply.body["definitionHash"]) == 64
    assert reply.body["definition"]["processors"][1]["cpu"] == 1024  # stored with defaults filled in
    machine = sfn().describe_state_machine(stateMachineArn=STATE_MACHINE)
    assert machine["type"] == "STANDARD"
    assert machine["roleArn"] == api_support.ENVIRONMENT["STATE_MACHINE_ROLE_ARN"]
    assert machine["loggingConfiguration"]["destinations"][0]["cloudWatchLogsLogGroup"][
        "logGroupArn"
    ].endswith("log-group:pennflow-state-machines:*")
    states = json.loads(machine["definition"])
    assert "work" in json.dumps(states["States"])


def test_registering_again_updates_200_and_publishes_a_new_version(api: Api) -> None:
    first = api.register(tiny()).body
    same = api("POST", "/workflows", body=tiny())
    changed = api("POST", "/workflows", body=tiny(cpu=2048, memory=4096))

    assert same.status == 200 and same.body["definitionHash"] == first["definitionHash"]
    assert same.body["stateMachineVersionArn"] == f"{STATE_MACHINE}:1"  # unchanged: nothing redeployed
    assert changed.status == 200
    assert changed.body["definitionHash"] != first["definitionHash"]
    assert changed.body["stateMachineVersionArn"] == f"{STATE_MACHINE}:2"
    assert changed.body["createdAt"] == first["createdAt"]
    # Each version keeps its own definition (the compiled comment names the definition hash).
    for version, digest in ((1, first["definitionHash"]), (2, changed.body["definitionHash"])):
        described = sfn().describe_state_machine(stateMachineArn=f"{STATE_MACHINE}:{version}")
        assert digest[:12] in json.loads(described["definition"])["Comment"]


def test_a_pennsieve_definition_is_accepted_unchanged(api: Api) -> None:
    definition = json.loads((ROOT / "workflows" / "eeg-quality.pennsieve.json").read_text())
    reply = api("POST", "/workflows", body=definition)
    assert reply.status == 201, reply.body
    assert reply.body["definition"]["organizationId"] == definition["organizationId"]


def test_every_fault_of_an_invalid_definition_is_listed_with_processor_and_field(api: Api) -> None:
    definition = tiny()
    definition["processors"][1].update(cpu=3, defaultParams={"WINDOW": 30}, dependsOn=["ghost"])
    definition["processors"].append({"id": "Bad_Id", "dependsOn": ["work"], "image": "x", "defaultParam": {}})

    reply = api("POST", "/workflows", body=definition)

    assert reply.status == 422
    assert reply.error["code"] == "invalid_definition"
    faults = {(f["processor"], f["field"]) for f in reply.error["faults"]}
    assert {
        ("work", "cpu"),
        ("work", "defaultParams.WINDOW"),
        ("work", "dependsOn"),
        ("bad-id", "defaultParam"),  # the id made resource-safe; the typo named
    } <= faults
    assert ("body", "processors.work.cpu") in reply.fields()
    assert sfn().list_state_machines()["stateMachines"] == []


def test_a_definition_that_is_not_an_object_or_has_no_processors_is_422(api: Api) -> None:
    for body, field in (([1, 2], "body"), ({"name": "x"}, "processors"), ("name: x", "body")):
        reply = api("POST", "/workflows", body=body)
        assert reply.status == 422, body
        assert field in {f for _, f in reply.fields()}, reply.body


def test_list_and_get_workflows(api: Api) -> None:
    api.register(tiny("beta"))
    api.register(tiny("alpha"))
    api.register(tiny("alpha", cpu=512, memory=1024))  # an update leaves one entry

    listed = api("GET", "/workflows")
    one = api("GET", "/workflows/alpha")

    assert listed.status == 200
    assert [w["name"] for w in listed.body["workflows"]] == ["alpha", "beta"]
    assert listed.body["workflows"][0]["processors"] == 3
    assert one.status == 200 and one.body["definition"]["processors"][1]["cpu"] == 512


def test_a_missing_workflow_is_404_and_a_bad_name_422(api: Api) -> None:
    missing = api("GET", "/workflows/nothing-here")
    bad = api("GET", "/workflows/Not_A_Name")

    assert missing.status == 404 and missing.error["code"] == "not_found"
    assert ("path", "name") in missing.fields()
    assert bad.status == 422 and ("path", "name") in bad.fields()


def test_the_example_workflows_register(api: Api) -> None:
    for path in sorted((ROOT / "workflows").glob("*.yaml")):
        definition = yaml.safe_load(Path(path).read_text())
        assert api("POST", "/workflows", body=definition).status in (200, 201), path.name


# --- one registry: workflows deployed from the folder, and the API's own --------------------------


def deploy_from_folder(name: str, workflow: Workflow, source: str) -> WorkflowRecord:
    """What `cdk deploy` leaves: the state machine `pennflow-<name>` with a published version, and the
    records the stack's custom resource writes (the very request it sends, see stacks/workflow_records)."""
    machine = f"pennflow-{name}"
    arns = [
        m["stateMachineArn"] for m in sfn().list_state_machines()["stateMachines"] if m["name"] == machine
    ]
    if arns:
        version = sfn().update_state_machine(
            stateMachineArn=arns[0], definition=compile_to_json(workflow), publish=True
        )["stateMachineVersionArn"]
        arn = arns[0]
    else:
        created = sfn().create_state_machine(
            name=machine,
            definition=compile_to_json(workflow),
            roleArn=api_support.ENVIRONMENT["STATE_MACHINE_ROLE_ARN"],
            publish=True,
        )
        arn, version = created["stateMachineArn"], created["stateMachineVersionArn"]
    record = WorkflowRecord.deployed(name, workflow, arn, version, source)
    boto3.client("dynamodb", region_name=REGION).transact_write_items(
        **record.transact_write(api_support.WORKFLOWS_TABLE)
    )
    return record


def example(file: str) -> Workflow:
    return load_definition(ROOT / "workflows" / file)


def test_a_folder_workflow_is_listed_and_runs_right_after_deploy_with_no_registration(api: Api) -> None:
    deployed = deploy_from_folder("eeg-quality", example("eeg-quality.yaml"), "eeg-quality.yaml")

    listed = api("GET", "/workflows").body["workflows"]
    one = api("GET", "/workflows/eeg-quality")
    started = api.start("eeg-quality", datasetId="N:dataset:1")

    assert [(w["name"], w["managedBy"]) for w in listed] == [("eeg-quality", "cloudformation")]
    assert one.status == 200 and one.body["stateMachineArn"].endswith(":stateMachine:pennflow-eeg-quality")
    assert one.body["stateMachineVersionArn"] == deployed.version_arn
    assert one.body["createdAt"] is None and one.body["definitionHash"] == deployed.definition_hash
    assert started.status == 202, started.body
    run = api.store.get_run(started.body["runId"])
    assert run.workflow == "eeg-quality" and run.definition_hash == deployed.definition_hash
    assert api.launcher.run_ids == [run.run_id]
    # What prepare reads to start it: the stack's published version of that very definition.
    from lambdas.api import workflow_registry

    version = workflow_registry().get_version(run.workflow, run.definition_hash)
    assert version.execution_target == deployed.version_arn and version.workflow() == example(
        "eeg-quality.yaml"
    )


def test_registering_a_folder_workflow_through_the_api_is_refused_and_changes_no_state_machine(
    api: Api,
) -> None:
    deployed = deploy_from_folder("eeg-quality", example("eeg-quality.yaml"), "eeg-quality.yaml")
    before = sfn().describe_state_machine(stateMachineArn=deployed.state_machine_arn)
    changed = yaml.safe_load((ROOT / "workflows" / "eeg-quality.yaml").read_text())
    changed["summary"] = "edited through the API"

    reply = api("POST", "/workflows", body=changed)

    assert reply.status == 409, reply.body
    assert reply.error["code"] == "stack_owned" and ("body", "name") in reply.fields()
    message = reply.error["message"]
    assert "'eeg-quality'" in message and "workflows/eeg-quality.yaml" in message and "cdk deploy" in message
    after = sfn().describe_state_machine(stateMachineArn=deployed.state_machine_arn)
    assert after["definition"] == before["definition"]
    assert after.get("loggingConfiguration") == before.get("loggingConfiguration")
    assert [m["name"] for m in sfn().list_state_machines()["stateMachines"]] == ["pennflow-eeg-quality"]
    assert api("GET", "/workflows/eeg-quality").body["definitionHash"] == deployed.definition_hash


def test_submitting_a_folder_file_unchanged_registers_nothing_and_starts_the_deployed_workflow(
    api: Api,
) -> None:
    deployed = deploy_from_folder("eeg-quality", example("eeg-quality.yaml"), "eeg-quality.yaml")
    # What `pennflow submit workflows/eeg-quality.yaml` sends first (pennflow.node.client.NodeClient.submit).
    body = example("eeg-quality.yaml").model_dump(mode="json", by_alias=True, exclude_none=True)

    reply = api("POST", "/workflows", body=body)

    assert reply.status == 200, reply.body
    assert (
        reply.body["managedBy"] == "cloudformation"
        and reply.body["definitionHash"] == deployed.definition_hash
    )
    assert [m["name"] for m in sfn().list_state_machines()["stateMachines"]] == ["pennflow-eeg-quality"]
    assert api.start("eeg-quality", datasetId="N:dataset:1").status == 202


def test_the_api_registers_in_its_own_namespace_beside_a_folder_machine_of_the_same_name(api: Api) -> None:
    # The stack's machine exists before its record (the custom resource runs after it): no clash.
    sfn().create_state_machine(
        name="pennflow-tiny", definition="{}", roleArn=api_support.ENVIRONMENT["STATE_MACHINE_ROLE_ARN"]
    )
    first = api("POST", "/workflows", body=tiny())

    assert first.status == 201 and first.body["stateMachineArn"] == STATE_MACHINE
    assert first.body["managedBy"] == "api" and first.body["createdAt"]
    assert (
        json.loads(
            sfn().describe_state_machine(
                stateMachineArn=STATE_MACHINE.replace("pennflow-api_tiny", "pennflow-tiny")
            )["definition"]
        )
        == {}
    ), "the stack's machine is untouched"


def test_a_folder_workflow_takes_over_a_name_first_registered_through_the_api(api: Api) -> None:
    registered = api.register(tiny()).body
    folder = Workflow.model_validate(tiny(cpu=2048, memory=4096))

    deployed = deploy_from_folder("tiny", folder, "tiny.yaml")

    assert api("GET", "/workflows/tiny").body["managedBy"] == "cloudformation"
    assert api("POST", "/workflows", body=tiny()).status == 409
    # A rerun of the run registered through the API still executes the API's version of it.
    from lambdas.api import workflow_registry

    earlier = workflow_registry().get_version("tiny", registered["definitionHash"])
    assert earlier.execution_target == registered["stateMachineVersionArn"] != deployed.version_arn


def test_a_record_from_before_the_api_namespace_moves_to_it_on_the_next_registration(api: Api) -> None:
    legacy = sfn().create_state_machine(
        name="pennflow-tiny",
        definition=compile_to_json(Workflow.model_validate(tiny())),
        roleArn=api_support.ENVIRONMENT["STATE_MACHINE_ROLE_ARN"],
    )["stateMachineArn"]
    old = WorkflowRecord.deployed("tiny", Workflow.model_validate(tiny()), legacy, f"{legacy}:1", "")
    item = {k: v for k, v in old.values().items() if k not in ("managed_by", "source")}  # the old format
    item |= {"created_at": "2026-01-01T00:00:00+00:00", "updated_at": "2026-01-01T00:00:00+00:00"}
    boto3.client("dynamodb", region_name=REGION).put_item(
        TableName=api_support.WORKFLOWS_TABLE, Item={k: {"S": v} for k, v in item.items()}
    )

    reply = api("POST", "/workflows", body=tiny(cpu=2048, memory=4096))

    assert reply.status == 200 and reply.body["stateMachineArn"] == STATE_MACHINE
    assert reply.body["createdAt"].startswith("2026-01-01")
    legacy_definition = sfn().describe_state_machine(stateMachineArn=legacy)["definition"]
    assert legacy_definition == compile_to_json(Workflow.model_validate(tiny()))


def test_the_stack_recording_the_name_meanwhile_is_refused_not_overwritten(api: Api) -> None:
    from lambdas.api import workflow_registry

    registry = workflow_registry()
    deploy_from_folder("tiny", Workflow.model_validate(tiny()), "tiny.yaml")
    registry.get = lambda name: None  # read before the stack's write landed

    with pytest.raises(StackOwnedWorkflow, match="workflows/tiny.yaml"):
        registry.register(Workflow.model_validate(tiny(cpu=2048, memory=4096)))

    del registry.get
    assert registry.get("tiny").stack_owned


def test_a_state_machine_name_over_the_limit_is_a_422_naming_the_longest_name_allowed(api: Api) -> None:
    from pennflow.api.errors import InvalidRequest
    from pennflow.api.workflows import register_workflow
    from pennflow.node.registry import DynamoWorkflowRegistry, StateMachineSettings

    registry = DynamoWorkflowRegistry(
        api_support.WORKFLOWS_TABLE,
        StateMachineSettings(
            prefix="a-long-nodename-api_", role_arn=api_support.ENVIRONMENT["STATE_MACHINE_ROLE_ARN"]
        ),
    )
    with pytest.raises(InvalidRequest, match="at most 60 characters") as caught:
        register_workflow(tiny("w" * 64), registry=registry)
    assert caught.value.status == 422 and caught.value.fields[0].field == "name"
    assert sfn().list_state_machines()["stateMachines"] == []
