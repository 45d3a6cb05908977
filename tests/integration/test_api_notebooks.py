"""The notebook-session routes (pennflow.api.notebooks) through the API Lambda, on moto."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest

from pennflow.api import notebooks as notebooks_api
from pennflow.layers.dynamodb import DynamoLayerRegistry
from pennflow.layers.models import LayerRecord, LayerStatus, LayerType
from pennflow.node import notebook_runs as sessions
from pennflow.workflow.runs import Status
from tests.integration import api_support
from tests.integration.api_support import ACCOUNT, CALLER, Api
from tests.integration.aws_fixtures import REGION

mocked_aws = api_support.mocked_aws
LAYERS_TABLE = "pennflow-layers-notebooks"
STRANGER = f"arn:aws:iam::{ACCOUNT}:user/visitor"
ANALYST_ROLE = f"arn:aws:iam::{ACCOUNT}:role/lab/notebook-analyst"
ANALYST_SESSION = f"arn:aws:sts::{ACCOUNT}:assumed-role/notebook-analyst/jo@lab.org"


class Handoff:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def send(self, action: str, run_id: str) -> None:
        self.sent.append((action, run_id))


def _forget() -> None:
    for port in (
        notebooks_api.session_settings,
        notebooks_api.session_handoff,
        notebooks_api.session_store,
        notebooks_api.session_tasks,
    ):
        port.cache_clear()


@pytest.fixture
def api(mocked_aws: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Api, Handoff]]:
    from lambdas import api as module

    boto3.client("dynamodb", region_name=REGION).create_table(
        TableName=LAYERS_TABLE,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "name", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "name", "KeyType": "HASH"}],
    )
    for name, value in {
        "LAYERS_TABLE": LAYERS_TABLE,
        "NOTEBOOKS_FUNCTION_NAME": "pennflow-notebooks",
        "NOTEBOOK_PRINCIPALS": f"{CALLER},{ANALYST_ROLE}",
        "NOTEBOOK_PYTHON": "3.12",
        "NOTEBOOK_IDLE_MINUTES": "45",
        "CLUSTER_ARN": f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/pennflow",
        "SLOT_PARAMETER_PREFIX": "/pennflow/slots/",
    }.items():
        monkeypatch.setenv(name, value)
    notebooks_api.layer_registry.cache_clear()
    _forget()
    handoff = Handoff()
    for client in api_support._node(monkeypatch):
        module.app.dependency_overrides[notebooks_api.session_handoff] = lambda: handoff
        layers = DynamoLayerRegistry(LAYERS_TABLE)
        layers.create(LayerRecord(name="atlas", type=LayerType.DATA, status=LayerStatus.READY, version=2))
        layers.create(
            LayerRecord(
                name="scipy-env",
                type=LayerType.PYTHON_ENV,
                status=LayerStatus.READY,
                version=1,
                python_version="3.12.4",
            )
        )
        layers.create(
            LayerRecord(
                name="old-env",
                type=LayerType.PYTHON_ENV,
                status=LayerStatus.READY,
                version=3,
                python_version="3.10.2",
            )
        )
        yield client, handoff
    notebooks_api.layer_registry.cache_clear()
    _forget()


def test_a_session_is_accepted_as_a_run_and_handed_to_the_node(api):
    client, handoff = api

    reply = client("POST", "/notebooks", body={"layers": ["scipy-env", "atlas"], "cpu": 2048, "memory": 8192})

    assert reply.status == 202, reply.body
    run_id = reply.body["runId"]
    assert reply.body["status"] == "NOT_STARTED" and reply.body["idleMinutes"] == 45
    assert reply.body["connect"] == f"pennflow notebook connect {run_id}"
    assert handoff.sent == [("start", run_id)]
    run = client.store.get_run(run_id)
    assert run.workflow == sessions.WORKFLOW and [layer["name"] for layer in run.layers] == [
        "scipy-env",
        "atlas",
    ]
    assert sessions.SessionSize.of(run) == sessions.SessionSize(2048, 8192)
    listed = client("GET", "/runs").body["runs"]
    assert [r["runId"] for r in listed if r["workflow"] == "notebook"] == [run_id]


def test_a_layer_for_another_python_is_refused_naming_both_versions(api):
    client, handoff = api

    reply = client("POST", "/notebooks", body={"layers": ["atlas", "old-env", "nope"]})

    assert reply.status == 422 and reply.error["code"] == "layer_not_for_notebooks"
    assert "3.10" in reply.error["message"] and "3.12" in reply.error["message"]
    assert {("body", "layers.1"), ("body", "layers.2")} == reply.fields()
    assert "no layer 'nope'" in reply.error["message"]
    assert handoff.sent == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"cpu": 3000}, "cpu"),
        ({"cpu": 1024, "memory": 512}, "memory"),
        ({"layers": ["Bad Name"]}, "layers.0"),
        ({"gpu": 1}, "gpu"),
    ],
)
def test_bad_sizes_and_fields_are_4xx_naming_the_field(api, body, field):
    client, _ = api

    reply = client("POST", "/notebooks", body=body)

    assert reply.status == 422, reply.body
    assert any(name == field or name.startswith(field) for _, name in reply.fields()), reply.body


def test_a_memory_that_does_not_fit_the_cpu_says_what_fargate_offers(api):
    client, _ = api

    reply = client("POST", "/notebooks", body={"cpu": 1024, "memory": 512})

    (field,) = reply.error["fields"]
    assert field["field"] == "memory" and "Fargate offers 2048-8192 MiB in steps of 1024" in field["message"]


def test_a_dataset_is_refused_with_the_layer_to_use_instead(api):
    client, _ = api

    reply = client("POST", "/notebooks", body={"datasetId": "N:dataset:1234"})

    assert reply.status == 422 and ("body", "datasetId") in reply.fields()
    assert "layers populate" in reply.error["message"]


def test_only_notebook_principals_may_use_sessions(api):
    client, handoff = api

    refused = client("POST", "/notebooks", body={}, caller=STRANGER)
    allowed = client("POST", "/notebooks", body={}, caller=ANALYST_SESSION)  # a session of an allowed role

    assert refused.status == 403 and refused.error["code"] == "not_a_notebook_user"
    assert STRANGER in refused.error["message"] and "notebookPrincipals" in refused.error["message"]
    assert allowed.status == 202
    assert len(handoff.sent) == 1


def test_a_node_without_the_interactive_setting_answers_409_naming_it(api, monkeypatch):
    client, _ = api
    monkeypatch.delenv("NOTEBOOKS_FUNCTION_NAME")
    _forget()

    for method, path in (("POST", "/notebooks"), ("GET", "/notebooks/r-1"), ("POST", "/notebooks/r-1/stop")):
        reply = client(method, path, body={} if method == "POST" else None)
        assert reply.status == 409 and reply.error["code"] == "notebooks_disabled", (method, path)
        assert "interactive" in reply.error["message"]


def test_get_shows_the_session_and_connect_info_once_its_container_runs(api):
    client, _ = api
    run_id = client("POST", "/notebooks", body={}).body["runId"]
    before = client("GET", f"/notebooks/{run_id}")
    task_arn = f"arn:aws:ecs:{REGION}:{ACCOUNT}:task/pennflow/0a1b2c"
    client.store.record_task(run_id, sessions.WORKFLOW, task_arn)
    client.store.update_run(run_id, Status.STARTED)

    class Tasks:
        def describe_tasks(self, **asked):
            assert asked["tasks"] == [task_arn] and asked["include"] == ["TAGS"]
            container = {"name": sessions.CONTAINER, "runtimeId": "0a1b2c-99"}
            return {"tasks": [{"taskArn": task_arn, "lastStatus": "RUNNING", "containers": [container],
                               "tags": [{"key": sessions.SLOT_TAG, "value": "slot-01"}]}]}  # fmt: skip

    from lambdas import api as module

    module.app.dependency_overrides[notebooks_api.session_tasks] = Tasks
    after = client("GET", f"/notebooks/{run_id}")

    assert (
        before.status == 200 and before.body["status"] == "NOT_STARTED" and before.body.get("connect") is None
    )
    assert after.body["taskArn"] == task_arn and after.body["taskStatus"] == "RUNNING"
    assert after.body["connect"] == {
        "target": "ecs:pennflow_0a1b2c_0a1b2c-99",
        "document": "AWS-StartPortForwardingSession",
        "port": 8888,
        "tokenParameter": "/pennflow/slots/slot-01/notebook-token",
    }
    assert "token" not in {k.lower() for k in after.body}


def test_stop_hands_the_session_on_and_an_ended_one_is_409(api):
    client, handoff = api
    run_id = client("POST", "/notebooks", body={}).body["runId"]

    stopped = client("POST", f"/notebooks/{run_id}/stop")
    assert client.store.update_run(run_id, Status.STARTED)
    assert client.store.update_run(run_id, Status.SUCCEEDED)
    again = client("POST", f"/notebooks/{run_id}/stop")
    not_a_session = client("GET", "/notebooks/r-nope")

    assert stopped.status == 202 and handoff.sent[-1] == ("stop", run_id)
    assert again.status == 409 and "SUCCEEDED" in again.error["message"]
    assert not_a_session.status == 404


def test_the_layers_a_session_can_mount(api):
    client, _ = api

    reply = client("GET", "/notebooks/layers")

    assert reply.status == 200 and reply.body["pythonVersion"] == "3.12"
    assert sorted(layer["name"] for layer in reply.body["layers"]) == ["atlas", "scipy-env"]
