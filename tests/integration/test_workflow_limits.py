"""A workflow that cannot fit Step Functions is refused by `validate`, `compile` and POST /workflows:
exit 2 or 422 with a message naming the limit, never a traceback or a 500."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import yaml
from typer.testing import CliRunner

from pennflow.cli import app
from pennflow.workflow.limits import MAX_PROCESSORS
from tests.integration import api_support
from tests.integration.api_support import Api
from tests.integration.aws_fixtures import REGION

api = api_support.api
mocked_aws = api_support.mocked_aws

# 4,001 processors: every state would carry 4,001 task definition ARNs, past the payload limit
# (the definition and history limits a split into child machines takes care of)
SIZE_LIMIT = "Step Functions allows 256 KiB (262,144 bytes)"


def chain_definition(n: int) -> dict:
    processors = [{"id": "source", "type": "data-source"}]
    processors += [
        {"id": f"p{i}", "image": "img/p:1", "dependsOn": [processors[-1]["id"] if i == 0 else f"p{i - 1}"]}
        for i in range(n)
    ]
    return {"name": "long-chain", "processors": processors}


def write(tmp_path: Path, definition: dict) -> Path:
    path = tmp_path / "long-chain.yaml"
    path.write_text(yaml.safe_dump(definition))
    return path


def cli(*args: object):
    return CliRunner().invoke(app, [str(arg) for arg in args])


def test_validate_refuses_a_4000_node_chain_naming_the_limit(tmp_path: Path) -> None:
    path = write(tmp_path, chain_definition(4000))
    result = cli("validate", path)
    assert result.exit_code == 2, result.output
    assert SIZE_LIMIT in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)

    as_json = cli("validate", path, "--json")
    assert as_json.exit_code == 2
    (fault,) = json.loads(as_json.stdout)["faults"]
    assert fault["field"] == "processors" and SIZE_LIMIT in fault["message"]


def test_compile_refuses_a_4000_node_chain_naming_the_limit(tmp_path: Path) -> None:
    result = cli("compile", write(tmp_path, chain_definition(4000)))
    assert result.exit_code == 2
    assert SIZE_LIMIT in result.output
    assert "Traceback" not in result.output


def test_validate_still_accepts_a_workflow_that_fits(tmp_path: Path) -> None:
    result = cli("validate", write(tmp_path, chain_definition(50)))
    assert result.exit_code == 0, result.output


def test_post_workflows_answers_422_for_a_4000_node_chain(api: Api) -> None:
    # The API's edge refuses it before compiling: more processors than the node registers.
    reply = api("POST", "/workflows", body=chain_definition(4000))
    assert reply.status == 422, reply.body
    assert reply.error["code"] == "invalid_definition"
    assert f"at most {MAX_PROCESSORS:,}" in json.dumps(reply.error)
    assert ("body", "processors") in reply.fields()
    sfn = boto3.client("stepfunctions", region_name=REGION)
    assert sfn.list_state_machines()["stateMachines"] == [], "nothing is deployed"
