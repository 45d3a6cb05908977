"""Each state machine's role allows what Step Functions does for each of its states, with the input
a run really starts it with: the machines the API registers at runtime and those in the template."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from tests.iam.lifecycle import register, run_record, scattered, start_run
from tests.iam.moto_node import IamNode
from tests.iam.recorder import _MotoFacts
from tests.iam.state_machines import MachineCalls
from tests.iam.template import REGION

pytest_plugins = ["tests.fakes.pennsieve_fixtures"]
pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")
WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"


@pytest.fixture
def dataset(pennsieve):
    dataset = pennsieve.add_dataset("eeg")
    for i in range(3):
        dataset.add_package(f"rec-{i}.edf", [(f"rec-{i}.edf", 1024)])
    return dataset


def role_id_of(node: IamNode, role_arn: str) -> str:
    (found,) = [r for r in node.template.of_type("AWS::IAM::Role") if node.template.role_arn(r) == role_arn]
    return found


def started_execution(node: IamNode, definition: dict[str, Any], dataset_id: str) -> dict[str, Any]:
    register(node, definition)
    run_id = start_run(node, definition["name"], datasetId=dataset_id)
    sfn = boto3.client("stepfunctions", region_name=REGION)
    return sfn.describe_execution(executionArn=run_record(node, run_id).execution_arn)


def check_machine(node: IamNode, machine: dict[str, Any], execution: dict[str, Any], role: str) -> int:
    """Every call of every state, authorized against ``role``; returns how many were checked."""
    machine_arn = ":".join(execution["stateMachineArn"].split(":")[:7])
    run = json.loads(execution["input"])
    calls = MachineCalls(
        machine_arn, execution["stateMachineArn"], REGION, _MotoFacts(), scatter_results(run)
    )
    state_calls = calls.of_definition(json.loads(machine["definition"]), json.loads(execution["input"]))
    state_calls += calls.of_machine(
        logging=bool(machine.get("loggingConfiguration", {}).get("destinations")),
        tracing=machine.get("tracingConfiguration", {}).get("enabled", False),
    )
    for call in state_calls:
        node.recorder.check(role, f"state {call.state!r}", call.request)
    return len(state_calls)


@pytest.mark.parametrize("definition", [pytest.param(None, id="source-work-target"), scattered()], ids=str)
def test_runtime_machines_role_allows_every_state(iam_node: IamNode, dataset, definition):
    from tests.iam.lifecycle import tiny

    execution = started_execution(iam_node, definition or tiny(), dataset.node_id)
    machine = boto3.client("stepfunctions", region_name=REGION).describe_state_machine(
        stateMachineArn=execution["stateMachineArn"]
    )
    role = role_id_of(iam_node, machine["roleArn"])
    checked = check_machine(iam_node, machine, execution, role)

    assert checked > 10
    assert iam_node.recorder.actions[role] >= {
        "ecs:RunTask",
        "iam:PassRole",
        "lambda:InvokeFunction",
        "events:PutRule",
    }


def test_template_machines_role_allows_every_state(iam_node: IamNode, dataset):
    machines = iam_node.template.of_type("AWS::StepFunctions::StateMachine")
    assert machines
    for logical_id, resource in machines.items():
        properties = iam_node.template.names.resolve(resource["Properties"])
        definition = json.loads(properties["DefinitionString"])
        source = _source_of(definition)
        execution = started_execution(iam_node, source, dataset.node_id)
        machine = {
            "definition": properties["DefinitionString"],
            "loggingConfiguration": {
                "destinations": properties.get("LoggingConfiguration", {}).get("Destinations")
            },
            "tracingConfiguration": {
                "enabled": properties.get("TracingConfiguration", {}).get("Enabled", False)
            },
        }
        execution = {**execution, "stateMachineArn": properties_arn(iam_node, logical_id)}
        role = resource["Properties"]["RoleArn"]["Fn::GetAtt"][0]
        assert check_machine(iam_node, machine, execution, role) > 10, logical_id


def properties_arn(node: IamNode, logical_id: str) -> str:
    return node.template.names.attribute(logical_id, "Arn")


def _source_of(definition: dict[str, Any]) -> dict[str, Any]:
    """The workflow file a template machine was compiled from (named in its Comment)."""
    name = definition["Comment"].split()[2]
    for path in sorted(WORKFLOWS.iterdir()):
        text = path.read_text()
        loaded = yaml.safe_load(text) if path.suffix in (".yaml", ".yml") else json.loads(text)
        if loaded.get("name") == name:
            return _with_images(loaded)
    raise LookupError(f"no workflow file defines {name}")


def _with_images(definition: dict[str, Any]) -> dict[str, Any]:
    """Processors named by sourceUrl@tag get an image (resolving them needs the processor registry):
    the compiled states, and so the calls they make, do not depend on it."""
    processors = []
    for processor in definition["processors"]:
        if processor.get("type", "processor") == "processor" and not processor.get("image"):
            processor = {k: v for k, v in processor.items() if k not in ("sourceUrl", "tag")}
            processor["image"] = f"example/{processor['id']}:1"
        processors.append(processor)
    return {**definition, "processors": processors}


def scatter_results(run_input: dict[str, Any]) -> dict[str, Any]:
    """What each scatter's ``<processor> batches`` state gets back from list_batches: where the batch
    list is (``pennflow.node.batches``), in the bucket the run's manifest is in."""
    from pennflow.node.batches import batches_key

    run = run_input["run"]
    bucket = (run.get("manifest") or {}).get("bucket", "results")
    return {
        f"{processor} batches": {"bucket": bucket, "key": batches_key(run["id"], processor), "count": 1}
        for processor in run.get("taskDefinitions", {})
    }


def joined(name: str, processors: int) -> dict[str, Any]:
    """A data source and ``processors`` processors that are not series-parallel (so joins too)."""
    from tests.integration.test_sfn_joins import random_edges

    definition: dict[str, Any] = {"name": name, "processors": [{"id": "source", "type": "data-source"}]}
    for node, deps in random_edges(processors, 2).items():
        definition["processors"].append(
            {"id": node, "image": f"example/{node}:1", "dependsOn": deps or ["source"]}
        )
    return definition


def test_a_split_workflows_role_allows_every_state_of_the_parent_and_of_each_child(
    iam_node: IamNode, dataset, monkeypatch
):
    from pennflow.workflow import asl_split

    # a small budget splits a 40-processor workflow as 1 MB splits one of about 800 or more
    monkeypatch.setattr(
        asl_split, "DEFAULT_BUDGET", asl_split.Budget(definition_bytes=14_000, history_events=260)
    )
    execution = started_execution(iam_node, joined("split", 40), dataset.node_id)
    sfn = boto3.client("stepfunctions", region_name=REGION)
    parent = sfn.describe_state_machine(stateMachineArn=execution["stateMachineArn"])
    role = role_id_of(iam_node, parent["roleArn"])
    checked = check_machine(iam_node, parent, execution, role)
    children = sorted(
        m["stateMachineArn"]
        for m in sfn.list_state_machines()["stateMachines"]
        if m["name"].startswith(parent["name"] + "_part")
    )
    assert len(children) >= 3
    for child_arn in children:
        child = sfn.describe_state_machine(stateMachineArn=child_arn)
        assert child["roleArn"] == parent["roleArn"]
        assert f"{child_arn}:1" in parent["definition"] + "".join(
            sfn.describe_state_machine(stateMachineArn=other)["definition"] for other in children
        ), "each child is started as the version registered with the parent"
        checked += check_machine(iam_node, child, {**execution, "stateMachineArn": f"{child_arn}:1"}, role)
    assert checked > 100
    assert iam_node.recorder.actions[role] >= {
        "states:StartExecution",
        "states:DescribeExecution",
        "states:StopExecution",
        "events:PutRule",
        "lambda:InvokeFunction",
    }
