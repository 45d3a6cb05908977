"""computeType lambda in the compiler: the slot's function by lambda:invoke, its retriers, the
execution input's functions, the Fargate fallback, and validate-time refusals."""

from __future__ import annotations

import pytest

from pennflow.workflow.asl import LAMBDA_RETRY, compile_workflow, execution_input
from pennflow.workflow.asl_lambda import FUNCTION_NOT_READY_RETRY, STATE_TIMEOUT_MARGIN_SECONDS
from pennflow.workflow.definition import DefinitionError, validate_definition
from tests.gates.asl import assert_valid_asl

NODE = {
    "cluster": "c",
    "subnets": ["s"],
    "securityGroups": ["g"],
    "finalizeFunction": "f",
    "listBatchesFunction": "l",
}


def workflow(**convert):
    processors = [
        {"id": "prep", "image": "prep:1"},
        {"id": "convert", "image": "convert:1", "computeType": "lambda", "dependsOn": ["prep"], **convert},
    ]
    return validate_definition({"name": "w", "processors": processors})


def states(definition):
    """Every state of the definition, nested branches and item processors included."""
    found = {}

    def walk(machine):
        for name, state in machine["States"].items():
            found[name] = state
            for branch in state.get("Branches", []):
                walk(branch)
            if "ItemProcessor" in state:
                walk(state["ItemProcessor"])

    walk(definition)
    return found


def test_a_lambda_processor_invokes_its_slots_function_with_the_ecs_environment():
    wf = workflow(retry={"maxAttempts": 2}, timeoutSeconds=600, defaultParams={"FORMAT": "csv"})
    definition = compile_workflow(wf)
    convert, prep = states(definition)["convert"], states(definition)["prep"]
    assert prep["Resource"].endswith(":states:::ecs:runTask.sync")
    assert convert["Resource"].endswith(":states:::lambda:invoke")
    assert convert["Parameters"]["FunctionName.$"] == "$.run.functions.convert"
    env = {e["Name"]: e for e in convert["Parameters"]["Payload"]["environment"]}
    assert env["OUTPUT_DIR"]["Value"] == "/mnt/run/convert/output"
    assert env["INPUT_DIR"]["Value"] == "/mnt/run/prep/output"
    assert env["FORMAT"]["Value.$"] == "$.run.params.convert.FORMAT"
    assert convert["Parameters"]["Payload"]["processorId"] == "convert"
    assert convert["TimeoutSeconds"] == 600 + STATE_TIMEOUT_MARGIN_SECONDS
    # Lambda's own errors and a Pending function first: they must not use up the processor's attempts.
    retry = convert["Retry"]
    assert retry[0] == LAMBDA_RETRY and retry[1] == FUNCTION_NOT_READY_RETRY
    assert retry[2]["ErrorEquals"] == ["States.TaskFailed"] and retry[2]["MaxAttempts"] == 2
    assert_valid_asl(definition)


def test_a_scattered_lambda_processor_invokes_per_batch_and_passes_the_asl_gate():
    definition = compile_workflow(workflow(scatter={"batchSize": 5}))
    batch = states(definition)["convert batch"]
    assert batch["Resource"].endswith(":states:::lambda:invoke")
    env = {e["Name"]: e for e in batch["Parameters"]["Payload"]["environment"]}
    assert env["INPUT_DIR"]["Value.$"] == "$.batch.inputDir"
    assert_valid_asl(definition)


def test_a_lambda_processor_with_layers_or_a_fan_in_runs_as_a_fargate_task():
    layered = workflow(layers=["plot-stack"], memory=1769)
    assert states(compile_workflow(layered))["convert"]["Resource"].endswith(":states:::ecs:runTask.sync")
    assert (layered.processor("convert").cpu, layered.processor("convert").memory) == (1024, 2048)
    assert any("runs as a Fargate task: it uses layers" in note for note in layered.notes)
    fan_in = validate_definition(
        {
            "name": "w",
            "processors": [
                {"id": "a", "image": "a:1"},
                {"id": "b", "image": "b:1"},
                {"id": "c", "image": "c:1", "computeType": "lambda", "dependsOn": ["a", "b"]},
            ],
        }
    )
    assert states(compile_workflow(fan_in))["c"]["Resource"].endswith(":states:::ecs:runTask.sync")


def test_the_execution_input_carries_each_lambda_processors_function():
    wf = workflow()
    with pytest.raises(ValueError, match="no Lambda function for computeType lambda processor.s. convert"):
        execution_input(wf, run_id="r", task_definitions={"prep": "td"}, params={}, node=NODE)
    payload = execution_input(
        wf, run_id="r", task_definitions={"prep": "td"}, params={}, node=NODE, functions={"convert": "fn-arn"}
    )
    assert payload["run"]["functions"] == {"convert": "fn-arn"}
    assert payload["run"]["taskDefinitions"] == {"prep": "td"}
    without = execution_input(
        validate_definition({"name": "w", "processors": [{"id": "prep", "image": "prep:1"}]}),
        run_id="r",
        task_definitions={"prep": "td"},
        params={},
        node=NODE,
    )
    assert "functions" not in without["run"]  # workflows without lambda processors: the input as before


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"timeoutSeconds": 901}, "over Lambda's 900 seconds"),
        ({"memory": 20_000}, "not a Lambda memory size"),
        ({"memory": 64}, "not a Lambda memory size"),
    ],
)
def test_what_lambda_cannot_give_is_refused_at_validate_time(fields, message):
    with pytest.raises(DefinitionError, match=message):
        workflow(**fields)


def test_lambda_memory_is_the_functions_own():
    assert workflow(memory=3008).processor("convert").memory == 3008
