"""The built-in ECS tasks with their task role as synthesized, in the environment their task
definition (registered by prepare) and the state machine's overrides give them."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import boto3

from pennflow.node.builtins.__main__ import main as builtin_main
from tests.iam.lifecycle import register, slot_of, start_run
from tests.iam.moto_node import RUNTIME_ENVIRONMENT, IamNode
from tests.iam.template import REGION

pytest_plugins = ["tests.fakes.pennsieve_fixtures"]


@contextlib.contextmanager
def task_environment(values: Mapping[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.update(values)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def as_task(node: IamNode, task_definition: str, overrides: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    """The role id and the environment of a task of ``task_definition`` with these overrides."""
    described = boto3.client("ecs", region_name=REGION).describe_task_definition(
        taskDefinition=task_definition
    )
    definition = described["taskDefinition"]
    (container,) = [c for c in definition["containerDefinitions"] if c["name"] == "processor"]
    role_arn = definition["taskRoleArn"]
    (role,) = [r for r in node.template.of_type("AWS::IAM::Role") if node.template.role_arn(r) == role_arn]
    environment = {e["name"]: e["value"] for e in container.get("environment", [])}
    return role, {
        **environment,
        **RUNTIME_ENVIRONMENT,
        "AWS_DEFAULT_REGION": REGION,
        **node.extra_environment,
        **overrides,
    }


def test_the_s3_data_target_publishes_the_run_results(iam_node: IamNode, pennsieve, tmp_path: Path):
    from tests.iam.lifecycle import tiny

    dataset = pennsieve.add_dataset("eeg")
    register(iam_node, tiny())
    run_id = start_run(iam_node, "tiny", datasetId=dataset.node_id)
    results = tmp_path / "work-output"
    results.mkdir()
    (results / "report.csv").write_text("a,b\n")
    task_definition = slot_of(iam_node, run_id).run_task_definitions["target"]
    role, environment = as_task(
        iam_node,
        task_definition,
        {
            "RUN_ID": run_id,
            "PROCESSOR_ID": "target",
            "INPUT_DIR": str(results),
            "OUTPUT_DIR": str(tmp_path / "out"),
        },
    )
    slot_number = slot_of(iam_node, run_id).slot_id.rsplit("-", 1)[1]
    assert role == iam_node.logical_id(f"ComputeSlot{slot_number}BuiltinRole")  # the run slot's own role

    with task_environment(environment), iam_node.recorder.as_role(role):
        assert builtin_main(["data-target", "--target-type", "s3"]) == 0

    bucket = environment["RESULTS_BUCKET"]
    keys = [
        o["Key"] for o in boto3.client("s3", region_name=REGION).list_objects_v2(Bucket=bucket)["Contents"]
    ]
    assert any(k.startswith(f"runs/{run_id}/") and k.endswith("report.csv") for k in keys)
    assert iam_node.recorder.actions[role] >= {"s3:PutObject"}
