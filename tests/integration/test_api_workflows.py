"""POST/GET /workflows through the API Lambda: validation faults, state machines, versions."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import yaml

from tests.integration import api_support
from tests.integration.api_support import ACCOUNT, ROOT, Api, tiny
from tests.integration.aws_fixtures import REGION

api = api_support.api
mocked_aws = api_support.mocked_aws

STATE_MACHINE = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:pennflow-tiny"


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
