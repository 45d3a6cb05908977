"""The moto Step Functions harness runs state machines shaped like the compiler's output."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from moto.awslambda_simple.models import LambdaSimpleBackend
from moto.ecs.models import EC2ContainerServiceBackend
from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl
from moto.stepfunctions.parser.asl.component.state.exec.state_parallel import branches_decl
from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_ecs import (
    StateTaskServiceEcs,
)

from tests.harness.moto_patches import STOPPED_BY_STEP_FUNCTIONS
from tests.harness.moto_sfn import HANG, MotoStepFunctions, ProcessorOutcomes, run_execution

CATCH_ALL = [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.failure", "Next": "Finalize failed run"}]


def processor(processor_id: str, params: tuple[str, ...] = (), **transition: Any) -> dict[str, Any]:
    environment = [
        {"Name": "PROCESSOR_ID", "Value": processor_id},
        {"Name": "RUN_ID", "Value.$": "$.run.id"},
        *({"Name": key, "Value.$": f"$.run.params.{processor_id}.{key}"} for key in params),
    ]
    return {
        "Type": "Task",
        "Resource": "arn:aws:states:::ecs:runTask.sync",
        "Parameters": {
            "Cluster.$": "$.node.cluster",
            "LaunchType": "FARGATE",
            "TaskDefinition.$": f"$.run.taskDefinitions.{processor_id}",
            "NetworkConfiguration": {
                "AwsvpcConfiguration": {
                    "Subnets.$": "$.node.subnets",
                    "SecurityGroups.$": "$.node.securityGroups",
                    "AssignPublicIp": "DISABLED",
                }
            },
            "Overrides": {"ContainerOverrides": [{"Name": "processor", "Environment": environment}]},
        },
        "ResultPath": None,
        "Retry": [
            {"ErrorEquals": ["States.TaskFailed"], "IntervalSeconds": 1, "MaxAttempts": 2, "BackoffRate": 2.0}
        ],
        "TimeoutSeconds": 3600,
        **transition,
    }


def finalize(outcome: str, next_state: str, failure: bool) -> dict[str, Any]:
    payload = {"runId.$": "$.run.id", "outcome": outcome}
    if failure:
        payload["failure.$"] = "$.failure"
    return {
        "Type": "Task",
        "Resource": "arn:aws:states:::lambda:invoke",
        "Parameters": {"FunctionName.$": "$.node.finalizeFunction", "Payload": payload},
        "ResultPath": None,
        "Next": next_state,
    }


def workflow(start: str, states: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A compiled-shaped machine: top-level states catch into the failed-run finalizer."""
    for state in states.values():
        state["Catch"] = CATCH_ALL
    return {
        "StartAt": start,
        "States": {
            **states,
            "Finalize run": finalize("SUCCEEDED", "Run succeeded", failure=False),
            "Run succeeded": {"Type": "Succeed"},
            "Finalize failed run": finalize("FAILED", "Run failed", failure=True),
            "Run failed": {"Type": "Fail"},
        },
    }


SINGLE = workflow("convert", {"convert": processor("convert", ("WINDOW",), Next="Finalize run")})

PARALLEL = workflow(
    "Parallel 1",
    {
        "Parallel 1": {
            "Type": "Parallel",
            "ResultPath": None,
            "Branches": [
                {"StartAt": "convert", "States": {"convert": processor("convert", End=True)}},
                {
                    "StartAt": "Parallel 2",
                    "States": {
                        "Parallel 2": {
                            "Type": "Parallel",
                            "ResultPath": None,
                            "Branches": [
                                {"StartAt": "extract", "States": {"extract": processor("extract", End=True)}},
                                {"StartAt": "score", "States": {"score": processor("score", End=True)}},
                            ],
                            "End": True,
                        }
                    },
                },
            ],
            "Next": "Finalize run",
        }
    },
)

batch_task = processor("convert", End=True)
batch_task["Parameters"]["Overrides"]["ContainerOverrides"][0]["Environment"].append(
    {"Name": "BATCH", "Value.$": "$.batch"}
)
SCATTERED = workflow(
    "list convert batches",
    {
        "list convert batches": {
            "Type": "Task",
            "Resource": "arn:aws:states:::lambda:invoke",
            "Parameters": {
                "FunctionName.$": "$.node.listBatchesFunction",
                "Payload": {"runId.$": "$.run.id", "processorId": "convert"},
            },
            "ResultSelector": {"batches.$": "$.Payload.batches"},
            "ResultPath": "$.scatter.convert",
            "Next": "convert",
        },
        "convert": {
            "Type": "Map",
            "ItemsPath": "$.scatter.convert.batches",
            "ItemSelector": {"batch.$": "$$.Map.Item.Value", "run.$": "$.run", "node.$": "$.node"},
            "ItemProcessor": {
                "ProcessorConfig": {"Mode": "INLINE"},
                "StartAt": "convert batch",
                "States": {"convert batch": batch_task},
            },
            "ResultPath": None,
            "Next": "Finalize run",
        },
    },
)


class Finalizer:
    """The finalize Lambda's stand-in: keeps every payload it receives."""

    def __init__(self) -> None:
        self.payloads: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        assert context.function_name == "finalize"
        self.payloads.append(event)
        return {"recorded": event["runId"]}


@pytest.fixture
def aws():
    with MotoStepFunctions() as harness:
        for processor_id in ("convert", "extract", "score"):
            harness.register_processor(processor_id)
        yield harness


def start_input(aws: MotoStepFunctions) -> dict[str, Any]:
    return aws.execution_input("r-1", {"convert": {"WINDOW": "30"}})


def failure_of(finalizer: Finalizer) -> dict[str, str]:
    [payload] = finalizer.payloads
    assert payload["outcome"] == "FAILED"
    return payload["failure"]


# The harness with all patches ----------------------------------------------------------------


def test_ecs_task_succeeds_with_its_overrides_network_and_task_definition(aws):
    finalizer = Finalizer()
    result = aws.run_execution(SINGLE, start_input(aws), lambdas={"finalize": finalizer})

    assert result.status == "SUCCEEDED"
    [call] = result.run_task_calls
    assert call.environment == {"PROCESSOR_ID": "convert", "RUN_ID": "r-1", "WINDOW": "30"}
    assert call.task_definition_arn == aws.execution_input("r-1")["run"]["taskDefinitions"]["convert"]
    assert call.cluster_arn == aws.node["cluster"]
    assert call.launch_type == "FARGATE"
    assert call.network_configuration["awsvpcConfiguration"]["subnets"] == aws.node["subnets"]
    assert call.network_configuration["awsvpcConfiguration"]["securityGroups"] == aws.node["securityGroups"]
    assert call.last_status == "STOPPED"
    assert finalizer.payloads == [{"runId": "r-1", "outcome": "SUCCEEDED"}]
    assert [c.function_name for c in result.lambda_calls] == ["finalize"]


def test_exit_code_1_fails_with_task_failed_and_the_task_description_as_cause(aws):
    finalizer = Finalizer()
    result = aws.run_execution(
        SINGLE, start_input(aws), outcomes={"convert": [1]}, lambdas={"finalize": finalizer}
    )

    assert result.status == "FAILED"
    assert [call.attempt for call in result.run_task_calls] == [1, 2, 3]
    failure = failure_of(finalizer)
    assert failure["Error"] == "States.TaskFailed"
    task = json.loads(failure["Cause"])
    assert [container["ExitCode"] for container in task["Containers"]] == [1]
    assert task["TaskArn"] == result.run_task_calls[-1].task_arn
    environment = task["Overrides"]["ContainerOverrides"][0]["Environment"]
    assert {"Name": "WINDOW", "Value": "30"} in environment


def test_failed_attempt_is_retried_then_succeeds_with_the_asked_backoff(aws):
    result = aws.run_execution(
        SINGLE, start_input(aws), outcomes={"convert": [1, 0]}, lambdas={"finalize": Finalizer()}
    )

    assert result.status == "SUCCEEDED"
    assert [(call.attempt, call.outcome) for call in result.run_task_calls] == [(1, 1), (2, 0)]
    assert len(result.events("TaskFailed")) == 1
    assert aws.retry_intervals == [1.0]


def test_failure_in_a_nested_parallel_branch_reaches_the_parallel_catch_as_task_failed(aws):
    finalizer = Finalizer()
    result = aws.run_execution(
        PARALLEL, start_input(aws), outcomes={"score": [2]}, lambdas={"finalize": finalizer}
    )

    assert result.status == "FAILED"
    failure = failure_of(finalizer)
    assert failure["Error"] == "States.TaskFailed"
    assert json.loads(failure["Cause"])["Containers"][0]["ExitCode"] == 2
    assert len(result.calls_of("score")) == 3
    assert {call.processor_id for call in result.run_task_calls} == {"convert", "extract", "score"}


def test_failure_in_a_map_iteration_reaches_the_map_catch_as_task_failed(aws):
    finalizer = Finalizer()
    batches = {"batches": ["0", "1", "2"]}
    result = aws.run_execution(
        SCATTERED,
        start_input(aws),
        outcomes={"convert": lambda env, attempt: 3 if env["BATCH"] == "1" else 0},
        lambdas={"finalize": finalizer, "list-batches": lambda event, context: batches},
    )

    assert result.status == "FAILED"
    failure = failure_of(finalizer)
    assert failure["Error"] == "States.TaskFailed"
    assert json.loads(failure["Cause"])["Containers"][0]["ExitCode"] == 3
    failing = [call.attempt for call in result.run_task_calls if call.environment["BATCH"] == "1"]
    assert failing == [1, 2, 3]
    assert result.lambda_calls[0].payload == {"runId": "r-1", "processorId": "convert"}


def test_map_runs_one_task_per_batch_then_finalizes(aws):
    finalizer = Finalizer()
    result = aws.run_execution(
        SCATTERED,
        start_input(aws),
        lambdas={"finalize": finalizer, "list-batches": lambda event, context: {"batches": ["a", "b"]}},
    )

    assert result.status == "SUCCEEDED"
    assert sorted(call.environment["BATCH"] for call in result.run_task_calls) == ["a", "b"]
    assert finalizer.payloads == [{"runId": "r-1", "outcome": "SUCCEEDED"}]


def test_finalize_lambda_receives_run_id_outcome_and_failure(aws):
    finalizer = Finalizer()
    result = aws.run_execution(
        SINGLE, start_input(aws), outcomes={"convert": [1]}, lambdas={"finalize": finalizer}
    )

    [payload] = finalizer.payloads
    assert set(payload) == {"runId", "outcome", "failure"}
    assert (payload["runId"], payload["outcome"]) == ("r-1", "FAILED")
    assert set(payload["failure"]) == {"Error", "Cause"}
    [call] = [c for c in result.lambda_calls if c.function_name == "finalize"]
    assert call.result == {"recorded": "r-1"} and call.error is None


def test_lambda_handler_exception_fails_the_state_with_its_error_type(aws):
    def broken_list_batches(event, context):
        raise KeyError("no manifest")

    finalizer = Finalizer()
    aws.run_execution(
        SCATTERED, start_input(aws), lambdas={"finalize": finalizer, "list-batches": broken_list_batches}
    )

    failure = failure_of(finalizer)
    assert failure["Error"] == "KeyError"
    assert "no manifest" in json.loads(failure["Cause"])["errorMessage"]
    assert aws.run_task_calls == []


def test_stopping_the_execution_aborts_it_and_stops_the_running_task(aws):
    finalizer = Finalizer()
    execution_arn = aws.start_execution(
        SINGLE, start_input(aws), outcomes={"convert": [HANG]}, lambdas={"finalize": finalizer}
    )
    call = aws.wait_for_run_task("convert")
    assert call.last_status == "RUNNING"

    aws.stop_execution(execution_arn)
    result = aws.wait(execution_arn)

    assert result.status == "ABORTED"
    assert call.last_status == "STOPPED"
    assert call.stopped_reason == STOPPED_BY_STEP_FUNCTIONS
    assert finalizer.payloads == []


def test_timeout_in_a_parallel_branch_reaches_the_catch_and_stops_the_task(aws):
    definition = json.loads(json.dumps(PARALLEL))
    definition["States"]["Parallel 1"]["Branches"][0]["States"]["convert"]["TimeoutSeconds"] = 1
    finalizer = Finalizer()
    result = aws.run_execution(
        definition, start_input(aws), outcomes={"convert": [HANG]}, lambdas={"finalize": finalizer}
    )

    assert failure_of(finalizer)["Error"] == "States.Timeout"
    [call] = result.calls_of("convert")
    assert call.last_status == "STOPPED"


def test_one_shot_run_execution_builds_its_own_harness():
    finalizer = Finalizer()
    result = run_execution(
        SINGLE,
        lambda aws: aws.execution_input("r-9", {"convert": {"WINDOW": "5"}}),
        processors=["convert"],
        outcomes={"convert": [1, 0]},
        lambdas={"finalize": finalizer},
    )

    assert result.status == "SUCCEEDED"
    assert [call.environment["WINDOW"] for call in result.run_task_calls] == ["5", "5"]
    assert finalizer.payloads == [{"runId": "r-9", "outcome": "SUCCEEDED"}]


def test_outcome_scripts_are_checked_and_repeat_their_last_entry():
    with pytest.raises(ValueError, match="'convert'"):
        ProcessorOutcomes({"convert": ["crash"]})
    with pytest.raises(ValueError, match="non-empty"):
        ProcessorOutcomes({"convert": []})
    outcomes = ProcessorOutcomes({"convert": [1, 0]})
    first = [outcomes.next_attempt("convert", {"BATCH": "0"}) for _ in range(3)]
    assert first == [(1, 1), (2, 0), (3, 0)]
    assert outcomes.next_attempt("convert", {"BATCH": "1"}) == (1, 1)
    assert outcomes.next_attempt("extract", {}) == (1, 0)


# Each patch is needed: moto without it behaves differently -------------------------------------


def run_without(patch: str, definition: dict, **kwargs: Any) -> tuple[Any, Finalizer, MotoStepFunctions]:
    finalizer = Finalizer()
    with MotoStepFunctions(without={patch}) as harness:
        for processor_id in ("convert", "extract", "score"):
            harness.register_processor(processor_id)
        harness.register_lambda("finalize", finalizer)
        result = harness.run_execution(definition, start_input(harness), **kwargs)
    return result, finalizer, harness


def test_without_casing_patch_pascal_case_parameters_never_reach_ecs():
    result, finalizer, _ = run_without("ecs_parameter_casing", SINGLE)

    failure = failure_of(finalizer)
    assert failure["Error"] == "States.Runtime"
    assert "Cluster" in failure["Cause"]
    assert result.run_task_calls == []


def test_without_branch_error_patch_a_failed_branch_skips_the_catch_as_states_runtime():
    flat = workflow(
        "Parallel 1",
        {
            "Parallel 1": {
                "Type": "Parallel",
                "ResultPath": None,
                "Branches": [{"StartAt": "score", "States": {"score": processor("score", End=True)}}],
                "Next": "Finalize run",
            }
        },
    )
    result, finalizer, _ = run_without("states_errors_leave_branches", flat, outcomes={"score": [2]})

    assert (result.status, result.error) == ("FAILED", "States.Runtime")
    assert "MUST NOT begin with the prefix 'States.'" in result.cause
    assert finalizer.payloads == []


def test_without_branch_error_patch_a_map_catch_sees_states_runtime():
    _, finalizer, _ = run_without(
        "states_errors_leave_branches",
        SCATTERED,
        outcomes={"convert": [1]},
        lambdas={"list-batches": lambda event, context: {"batches": ["0"]}},
    )

    failure = failure_of(finalizer)
    assert failure["Error"] == "States.Runtime"
    assert "ExitCode" not in failure["Cause"]


def test_without_exit_code_patch_a_failing_container_succeeds():
    result, _, _ = run_without("ecs_sync_follows_exit_codes", SINGLE, outcomes={"convert": [1]})

    assert result.status == "SUCCEEDED"
    assert len(result.run_task_calls) == 1


def test_without_retry_patch_the_second_attempt_times_out_at_once():
    result, finalizer, _ = run_without("ecs_sync_retries_wait_again", SINGLE, outcomes={"convert": [1, 0]})

    assert failure_of(finalizer)["Error"] == "States.Timeout"
    assert len(result.run_task_calls) == 2


def test_without_stop_patch_an_aborted_execution_leaves_its_task_running():
    with MotoStepFunctions(without={"ecs_sync_stops_abandoned_tasks"}) as harness:
        harness.register_processor("convert")
        execution_arn = harness.start_execution(SINGLE, start_input(harness), outcomes={"convert": [HANG]})
        call = harness.wait_for_run_task("convert")
        harness.stop_execution(execution_arn)

        assert harness.wait(execution_arn).status == "ABORTED"
        assert call.last_status == "RUNNING"


def test_without_lambda_patch_the_handler_never_runs():
    result, finalizer, _ = run_without("lambda_handlers", SINGLE)

    assert result.status == "SUCCEEDED"
    assert finalizer.payloads == []


def test_patches_are_reverted_when_the_harness_closes():
    def patched_names():
        return (
            dict(vars(StateTaskServiceEcs)),
            branches_decl.CustomErrorName,
            retrier_decl.time,
            LambdaSimpleBackend.invoke,
            EC2ContainerServiceBackend.run_task,
        )

    before = patched_names()
    with MotoStepFunctions():
        assert patched_names() != before
    assert patched_names() == before
    assert retrier_decl.time is time


def test_unknown_patch_names_are_refused():
    with pytest.raises(ValueError, match="ecs_casing"):
        MotoStepFunctions(without={"ecs_casing"})


def test_figures_catch_a_parallel_result_over_the_payload_limit_that_moto_lets_pass(aws):
    # two branches each hand back their ~150 KB input: the Parallel's result (the array of both) passes
    # 256 KiB, though its output (ResultPath null: its input) does not, and moto checks only outputs
    branch = {"StartAt": "copy", "States": {"copy": {"Type": "Pass", "End": True}}}
    machine = {
        "StartAt": "both",
        "States": {
            "both": {"Type": "Parallel", "Branches": [branch, branch], "ResultPath": None, "End": True}
        },
    }
    result = aws.run_execution(machine, {"blob": "x" * 150_000})
    assert result.status == "SUCCEEDED"
    largest = result.figures.largest_by_kind
    assert largest["result"].bytes > 2 * 150_000 and largest["result"].state == "both"
    assert largest["output"].bytes < 160_000
    assert result.figures.largest_payload == largest["result"]


def test_figures_count_events_per_state_of_the_parent_history(aws):
    result = aws.run_execution(SINGLE, start_input(aws), lambdas={"finalize": Finalizer()})
    per_state = result.figures.events_per_state
    assert sum(per_state.values()) == result.figures.history_events == len(result.history)
    assert per_state["convert"] == 6  # entered, scheduled, started, submitted, succeeded, exited
