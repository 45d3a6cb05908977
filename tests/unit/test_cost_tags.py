"""Cost-allocation tags on every ECS task a compiled workflow starts."""

from __future__ import annotations

from pathlib import Path

from pennflow.workflow.asl import compile_workflow, execution_input
from pennflow.workflow.cost_tags import RUN_TAG, WORKFLOW_TAG
from pennflow.workflow.definition import ProcessorType, load_definition

EXAMPLE = Path(__file__).parents[2] / "workflows" / "eeg-quality.yaml"


def _states(machine: dict):
    for name, state in machine["States"].items():
        yield name, state
        for branch in state.get("Branches", []):
            yield from _states(branch)
        if "ItemProcessor" in state:
            yield from _states(state["ItemProcessor"])


def test_every_run_task_reads_the_run_s_tags_and_propagates_the_task_definition_s():
    workflow = load_definition(EXAMPLE)
    tasks = [s for _, s in _states(compile_workflow(workflow)) if "ecs:runTask" in s.get("Resource", "")]
    expected = [p for p in workflow.processors if p.type is not ProcessorType.DATA_SOURCE]
    assert len(tasks) == len(expected)
    for state in tasks:
        assert state["Parameters"]["Tags.$"] == "$.run.tags"
        assert state["Parameters"]["PropagateTags"] == "TASK_DEFINITION"


def test_the_execution_input_names_the_workflow_and_the_run():
    workflow = load_definition(EXAMPLE)
    payload = execution_input(
        workflow,
        run_id="r-1",
        task_definitions={p.id: f"arn:td/{p.id}" for p in workflow.processors},
        params={},
        node={
            "cluster": "c",
            "subnets": ["s"],
            "securityGroups": ["g"],
            "finalizeFunction": "f",
            "downloadFunction": "d",
        },
        manifest={"bucket": "b", "key": "k"},
    )
    assert payload["run"]["tags"] == [
        {"Key": WORKFLOW_TAG, "Value": "eeg-quality"},
        {"Key": RUN_TAG, "Value": "r-1"},
    ]
