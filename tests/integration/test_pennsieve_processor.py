"""A processor written like Pennsieve's runs unchanged: locally in a diamond, and on ECS by contract.

Locally it gets Pennsieve's variables and a SESSION_TOKEN minted from the user's credentials, and
calls the fake Pennsieve with it; the token is in no run record and no log. On ECS (moto) its task
definition names the slot's parameters in ``secrets`` and carries the node's Pennsieve variables;
the compiled overrides and the execution input carry no token.
"""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest
from typer.testing import CliRunner

from pennflow.cli import app
from pennflow.engine.home import PennflowHome
from pennflow.node.session_tokens import SlotRunParameters
from pennflow.node.slots import Slot
from pennflow.node.taskdefs import TaskSettings, registration
from pennflow.stores.sqlite import SqliteRunStore
from pennflow.workflow import asl
from pennflow.workflow.definition import parse_definition
from pennflow.workflow.runs import Status

pytest_plugins = ["tests.fakes.pennsieve_fixtures"]

PROCESSOR = Path(__file__).parents[1] / "fixtures" / "processors" / "pennsieve_style.py"
PRINT_ENV = PROCESSOR.with_name("print_env.py")
DIAMOND = """
name: Pennsieve style diamond
organizationId: {organization}
processors:
  - id: dataset files
    type: data-source
  - id: left
    command: [python, "{processor}"]
    dependsOn: [dataset files]
  - id: right
    command: [python, "{processor}"]
    dependsOn: [dataset files]
  - id: merge
    command: [python, "{processor}"]
    dependsOn: [left, right]
  - id: no-token
    command: [python, "-c", "import os, sys; sys.exit('SESSION_TOKEN' in os.environ)"]
    pennsieveToken: false
    dependsOn: [merge]
"""


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> PennflowHome:
    monkeypatch.setenv("PENNFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    return PennflowHome(tmp_path / "home")


def test_a_pennsieve_style_processor_runs_unchanged_in_a_diamond(
    home, pennsieve, cognito_user, monkeypatch, tmp_path
) -> None:
    monkeypatch.setenv("PENNSIEVE_API_HOST", pennsieve.api_host)
    monkeypatch.setenv("PENNSIEVE_API_HOST2", pennsieve.api2_host)  # Pennsieve's own name for api2
    monkeypatch.setenv("PENNSIEVE_API_KEY", cognito_user.api_key)
    monkeypatch.setenv("PENNSIEVE_API_SECRET", cognito_user.api_secret)
    dataset = pennsieve.add_dataset("eeg-study")
    dataset.add_package("a.edf", [("a.edf", 2048)])
    path = tmp_path / "diamond.yaml"
    path.write_text(DIAMOND.format(organization=pennsieve.organization_id, processor=PROCESSOR))

    result = CliRunner().invoke(app, ["run", str(path), "--dataset", dataset.node_id])

    store = SqliteRunStore(home.db_path)
    run = store.list_runs().runs[0]
    assert result.exit_code == 0, (
        result.output + "\n" + "\n".join(p.read_text() for p in home.run_dir(run.run_id).rglob("*.log"))
    )
    assert run.status is Status.SUCCEEDED
    merge = json.loads((home.run_dir(run.run_id) / "merge" / "output" / "merge_report.json").read_text())
    assert merge["integration"] == merge["executionRun"] == run.run_id
    assert (merge["dataset"], merge["environment"]) == ("eeg-study", "local")
    assert merge["api2"] == pennsieve.api2_host and merge["organization"] == pennsieve.organization_id
    assert sorted(merge["inputs"]) == ["merge_left_a.edf", "merge_left_report.json", "merge_right_a.edf",
                                       "merge_right_report.json"]  # fmt: skip
    # The processors reached Pennsieve with a token minted for the run, never the key or secret.
    calls = pennsieve.requests_to(rf"/datasets/{dataset.node_id}$", "GET")
    assert len(calls) >= 3
    token = calls[-1].headers["authorization"].removeprefix("Bearer ")
    assert token and cognito_user.api_secret not in token
    for file in home.root.rglob("*"):
        if file.is_file():
            assert token.encode() not in file.read_bytes(), f"the token leaked into {file}"
    assert token not in json.dumps([r.model_dump(mode="json") for r in store.list_runs().runs])


def _settings(prefix: str | None = "/pennflow/test/slots/") -> TaskSettings:
    return TaskSettings(
        file_system_id="fs-1",
        execution_role_arn="arn:aws:iam::123456789012:role/exec",
        slot_role_template="arn:aws:iam::123456789012:role/test_us-east-1_{slot}-{kind}",
        builtin_image="builtin:1",
        log_group="logs",
        region="us-east-1",
        pennsieve_environment={"PENNSIEVE_API_HOST": "https://api.pennsieve.io",
                               "PENNSIEVE_API_HOST2": "https://api2.pennsieve.io", "ENVIRONMENT": "prod",
                               "REGION": "us-east-1", "DEPLOYMENT_MODE": "secure", "ORGANIZATION_ID": ""},
        slot_parameter_prefix=prefix,
        session_tokens=True,
    )  # fmt: skip


ECS_WORKFLOW = """
name: Pennsieve style
organizationId: N:organization:abc
processors:
  - id: files
    type: data-source
  - id: pre-metadata
    image: example-lab/processor-pre-metadata:1.2.0
    dependsOn: [files]
  - id: quiet
    image: example-lab/quiet:1
    pennsieveToken: false
    dependsOn: [pre-metadata]
"""


def test_on_ecs_the_contract_comes_from_the_task_definition_and_the_slot(pennsieve_aws) -> None:
    workflow = parse_definition(ECS_WORKFLOW)
    settings = _settings()
    slot = Slot("slot-03", "fsap-3", "/runs/slots/slot-03")
    ecs = boto3.client("ecs", region_name="us-east-1")
    requests = {
        p.id: registration(
            p, access_point_id="fsap-3", settings=settings, layer_access_points={}, slot_id="slot-03"
        )
        for p in workflow.processors[1:]
    }
    for pid, request in requests.items():
        arn = ecs.register_task_definition(family=f"pf-{pid}", **request)["taskDefinition"][
            "taskDefinitionArn"
        ]
        container = ecs.describe_task_definition(taskDefinition=arn)["taskDefinition"][
            "containerDefinitions"
        ][0]
        env = {e["name"]: e["value"] for e in container["environment"]}
        assert (
            env["PENNSIEVE_API_HOST2"] == "https://api2.pennsieve.io" and env["DEPLOYMENT_MODE"] == "secure"
        )
        secrets = {s["name"]: s["valueFrom"] for s in container["secrets"]}
        run_id_arn = "arn:aws:ssm:us-east-1:123456789012:parameter/pennflow/test/slots/slot-03/run-id"
        assert secrets["INTEGRATION_ID"] == secrets["EXECUTION_RUN_ID"] == run_id_arn
        assert ("SESSION_TOKEN" in secrets) is (pid == "pre-metadata")
        assert "PENNSIEVE_API_KEY" not in env and "PENNSIEVE_API_SECRET" not in env

    minted = []
    SlotRunParameters(settings, mint=lambda: minted.append("tok-" + "x" * 40) or minted[-1]).write(
        slot, "run-42", workflow
    )
    ssm = boto3.client("ssm", region_name="us-east-1")
    token = ssm.get_parameter(Name="/pennflow/test/slots/slot-03/session-token", WithDecryption=True)[
        "Parameter"
    ]
    assert token["Type"] == "SecureString" and token["Value"] == minted[0]
    run_id = ssm.get_parameter(Name="/pennflow/test/slots/slot-03/run-id")["Parameter"]["Value"]
    assert run_id == "run-42"

    # Nothing the state machine carries names a token; the organization rides in the overrides.
    compiled = json.dumps(asl.compile_workflow(workflow))
    payload = asl.execution_input(
        workflow,
        run_id="run-42",
        task_definitions={p.id: "arn" for p in workflow.processors},
        params={},
        node={"cluster": "c", "subnets": ["s"], "securityGroups": ["g"], "finalizeFunction": "f",
              "downloadFunction": "d"},
        manifest={"bucket": "b", "key": "k"},
    )  # fmt: skip
    for text in (compiled, json.dumps(payload)):
        assert minted[0] not in text and "SESSION_TOKEN" not in text
    assert '"Name": "ORGANIZATION_ID", "Value": "N:organization:abc"' in compiled


def test_a_workflow_with_no_token_processors_mints_nothing(pennsieve_aws) -> None:
    workflow = parse_definition(
        ECS_WORKFLOW.replace("    dependsOn: [files]", "    pennsieveToken: false\n    dependsOn: [files]")
    )

    def refuse() -> str:
        raise AssertionError("no token should be minted")

    SlotRunParameters(_settings(), mint=refuse).write(Slot("slot-04", "fsap-4", "/r"), "run-43", workflow)


@pytest.mark.parametrize("fixture", ["api-definition.json", "builder-diamond.json", "create-dialog.json"])
def test_pennsieve_shapes_run_locally_once_their_processors_can_start(home, tmp_path, fixture) -> None:
    """The shapes run as written; only sourceUrl (resolved by a node's registry) becomes a local command."""
    definition = json.loads((Path(__file__).parents[1] / "fixtures" / "pennsieve" / fixture).read_text())
    key = "dag" if "dag" in definition else "processors"
    for entry in definition[key]:
        if entry.get("type", "processor") == "processor":
            entry["command"] = ["python", str(PRINT_ENV)]
            entry["pennsieveToken"] = False
    path = tmp_path / fixture
    path.write_text(json.dumps(definition))
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text("a")
    args = ["run", str(path)]
    if any(e.get("type") == "data-source" for e in definition[key]):
        args += ["--input", str(tmp_path / "in")]

    result = CliRunner().invoke(app, args)

    assert result.exit_code == 0, result.output
    [run] = SqliteRunStore(home.db_path).list_runs().runs
    assert run.status is Status.SUCCEEDED
