"""The Task state of a ``computeType: lambda`` processor: ``lambda:invoke`` of the run slot's function.

The function is the node's (``pennflow.node.lambda_functions``: one per image digest and slot, so it
mounts only that slot's folder); like an ECS state's task definition, its name travels in the
execution input (``$.run.functions.<key>``), never in the definition. The payload carries the same
environment list as an ECS container override (``Name``/``Value``), which the image's bootstrap
(``pennflow.processors.lambda_bootstrap``) hands to the processor. A non-zero exit is the function
error ``pennflow.ProcessorFailed``: the processor's own Retry (``States.TaskFailed``) and then the
run's one failure path, as for a failed ECS task. Lambda's service errors and a function that is
still being created are retried first, so they never use up the processor's attempts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pennflow.workflow.asl_states import LAMBDA_RETRY, CompileOptions, State
from pennflow.workflow.contract import state_key
from pennflow.workflow.definition import Processor, runs_on_lambda

FUNCTIONS_KEY = "functions"  # run.functions.<key> in the execution input
PROCESSOR_FAILED = "pennflow.ProcessorFailed"
PROCESSOR_TIMED_OUT = "pennflow.ProcessorTimedOut"
# A function created by this run's preparation is Pending for a few seconds to a minute (its image is
# optimised); one idle for weeks is Inactive until its network is back. Invoke answers both with these.
FUNCTION_NOT_READY_RETRY = {
    "ErrorEquals": ["Lambda.ResourceConflictException", "Lambda.ResourceNotReadyException"],
    "IntervalSeconds": 5,
    "MaxAttempts": 8,  # about four minutes in all
    "BackoffRate": 1.5,
    "JitterStrategy": "FULL",
}
# The state outlives the function (whose timeout is the processor's) by this much, so Lambda's own
# timeout, not the state's, ends a processor that overruns.
STATE_TIMEOUT_MARGIN_SECONDS = 60


def is_lambda(processor: Processor) -> bool:
    """Runs as the slot's Lambda function (a lambda processor with layers or a fan-in is a Fargate task)."""
    return runs_on_lambda(processor)


def lambda_processors(processors: Sequence[Processor]) -> list[Processor]:
    return [p for p in processors if is_lambda(p)]


def invoked_processor(parameters: Mapping[str, Any]) -> str | None:
    """The processor a ``lambda:invoke`` state's (resolved) parameters run, or None for the node's
    own functions (downloads, batch listings, joins, finalize), whose payloads carry no environment."""
    payload = parameters.get("Payload")
    if isinstance(payload, Mapping) and "environment" in payload and "action" not in payload:
        processor_id = payload.get("processorId")
        return processor_id if isinstance(processor_id, str) else None
    return None


def lambda_task(
    name: str,
    processor: Processor,
    environment: list[dict[str, str]],
    options: CompileOptions,
    processor_retry: Sequence[Mapping[str, Any]] = (),
) -> State:
    parameters = {
        "FunctionName.$": f"$.run.{FUNCTIONS_KEY}.{state_key(processor.id)}",
        "Payload": {"processorId": processor.id, "environment": environment},
    }
    state = State(
        name, "Task", Resource=options.resource("lambda:invoke"), Parameters=parameters, ResultPath=None
    )
    state.body["TimeoutSeconds"] = processor.timeout_seconds + STATE_TIMEOUT_MARGIN_SECONDS
    return state.retry(LAMBDA_RETRY, FUNCTION_NOT_READY_RETRY, *processor_retry)
