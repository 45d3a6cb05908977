"""A compiled workflow with a computeType lambda processor, executed in moto's Step Functions:
the slot's function receives the processor's environment, a non-zero exit takes the ECS failure path."""

from __future__ import annotations

import pytest

from pennflow.workflow.asl import compile_workflow, execution_input
from pennflow.workflow.definition import validate_definition
from tests.harness.moto_sfn import MotoStepFunctions

FUNCTION = "pennflow_fn-slot-00-convert"


class ProcessorFailedError(Exception):
    """What the bootstrap reports for a non-zero exit (its errorType is pennflow.ProcessorFailed)."""


def workflow(**convert):
    processors = [
        {"id": "prep", "image": "prep:1"},
        {
            "id": "convert",
            "image": "convert:1",
            "computeType": "lambda",
            "dependsOn": ["prep"],
            "defaultParams": {"FORMAT": "csv"},
            **convert,
        },
        {"id": "report", "image": "report:1", "dependsOn": ["convert"]},
    ]
    return validate_definition({"name": "w", "processors": processors})


@pytest.fixture
def aws():
    with MotoStepFunctions() as harness:
        yield harness


def run(aws, wf, function, finalize):
    aws.register_lambda("finalize", finalize)
    aws.register_lambda(FUNCTION, function)
    task_definitions = {pid: aws.register_processor(pid) for pid in ("prep", "report")}
    data = execution_input(
        wf,
        run_id="r-1",
        task_definitions=task_definitions,
        functions={"convert": aws.function_arn(FUNCTION)},
        params={"convert": {"FORMAT": "tsv"}},
        dataset_id="N:dataset:1",
        node={**aws.node, "finalizeFunction": aws.function_arn("finalize")},
    )
    return aws.run_execution(compile_workflow(wf), data, timeout=30)


def test_the_function_runs_between_the_ecs_tasks_with_the_run_values(aws):
    events, finals = [], []
    result = run(
        aws, workflow(), lambda e, c: events.append(e) or {"exitCode": 0}, lambda e, c: finals.append(e)
    )
    assert result.status == "SUCCEEDED"
    (event,) = events
    env = {entry["Name"]: entry["Value"] for entry in event["environment"]}
    assert env["FORMAT"] == "tsv" and env["RUN_ID"] == "r-1" and env["DATASET_ID"] == "N:dataset:1"
    assert env["INPUT_DIR"] == "/mnt/run/prep/output" and event["processorId"] == "convert"
    assert [call.processor_id for call in result.run_task_calls] == ["prep", "report"]
    assert finals[-1]["outcome"] == "SUCCEEDED"


def test_a_non_zero_exit_fails_the_run_at_its_own_state_and_skips_what_follows(aws):
    def failing(event, context):
        raise ProcessorFailedError("convert exited with code 3: bad header")

    finals = []
    result = run(aws, workflow(), failing, lambda e, c: finals.append(e))
    # No Catch (what a redrive runs again): the execution ends with the processor's own error, and
    # the status tracker finalizes the run from that end.
    assert result.status == "FAILED" and result.error == "ProcessorFailedError"
    assert "exited with code 3" in (result.cause or "")
    assert not finals
    assert [call.processor_id for call in result.run_task_calls] == ["prep"]


def test_the_processors_retry_policy_applies_to_a_failed_invocation(aws):
    attempts = []

    def flaky(event, context):
        attempts.append(event)
        if len(attempts) == 1:
            raise ProcessorFailedError("convert exited with code 1: transient")
        return {"exitCode": 0}

    result = run(aws, workflow(retry={"maxAttempts": 1, "intervalSeconds": 1}), flaky, lambda e, c: {})
    assert result.status == "SUCCEEDED" and len(attempts) == 2
