"""The compiler's vocabulary: integration ARNs, retry rules, options, and the state builders."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pennflow.workflow import limits
from pennflow.workflow.definition import ComputeType, Processor

DEFAULT_PARTITION = "aws"


def integration_arn(action: str, partition: str = DEFAULT_PARTITION) -> str:
    """A Step Functions service integration (``ecs:runTask.sync``) in the node's partition."""
    return f"arn:{partition}:states:::{action}"


ECS_RUN_TASK_SYNC = integration_arn("ecs:runTask.sync")  # the commercial partition's; see CompileOptions
LAMBDA_INVOKE = integration_arn("lambda:invoke")
CONTAINER_NAME = "processor"
WORKFLOW_STATE = "Run workflow"
FINALIZE_OK = "Finalize run"
SUCCEEDED = "Run succeeded"
MAX_STATE_NAME = 80
ECS_OVERRIDE_LIMIT = 8192
# Room left in the ECS override for values only known at run time (run id, dataset id, params).
DYNAMIC_VALUE_BUDGET = 256

# Capacity and API hiccups are worth retrying whatever the processor's own policy says. Step Functions
# uses the first retrier that matches and States.TaskFailed matches ECS errors too, so this one
# comes first: otherwise a refused RunTask would use up the processor's own attempts instead.
INFRA_RETRY = {
    "ErrorEquals": [limits.ECS_API_ERROR],
    "IntervalSeconds": 10,
    "MaxAttempts": 5,
    "BackoffRate": 2.0,
    "JitterStrategy": "FULL",
}
LAMBDA_RETRY = {
    "ErrorEquals": [
        "Lambda.ServiceException",
        "Lambda.AWSLambdaException",
        "Lambda.SdkClientException",
        "Lambda.TooManyRequestsException",
    ],
    "IntervalSeconds": 2,
    "MaxAttempts": 6,
    "BackoffRate": 2.0,
    "JitterStrategy": "FULL",
}


# A download batch that failed part-way is retried: finished files are skipped on the next try.
DOWNLOAD_RETRY = {
    "ErrorEquals": ["States.TaskFailed"],
    "IntervalSeconds": 5,
    "MaxAttempts": 3,
    "BackoffRate": 2.0,
}


# A gpu processor's task runs on the node's GPU capacity provider, which the execution input names
# (pennflow.node.gpu); every other task on Fargate.
GPU_CAPACITY_KEY = "gpuCapacity"
GPU_CAPACITY_PATH = f"$.node.{GPU_CAPACITY_KEY}"


def launch_parameters(processor: Processor) -> dict[str, Any]:
    """RunTask's launch: ``LaunchType: FARGATE``, or the GPU capacity-provider strategy."""
    if processor.compute_type is ComputeType.GPU:
        return {"CapacityProviderStrategy.$": GPU_CAPACITY_PATH}
    return {"LaunchType": "FARGATE"}


class CompileError(ValueError):
    """The workflow is valid but cannot be expressed within Step Functions/ECS limits."""


@dataclass(frozen=True)
class CompileOptions:
    map_max_concurrency: int = 40
    download_max_concurrency: int = 50
    comment_prefix: str = "pennflow workflow"
    # Integration ARNs name the partition (aws, aws-cn, aws-us-gov): the stack passes a placeholder
    # its template substitutes, the node the partition of its own ARNs.
    partition: str = DEFAULT_PARTITION

    def resource(self, action: str) -> str:
        return integration_arn(action, self.partition)


# ------------------------------------------------------------------ builders


class State:
    """One ASL state; fluent setters keep the compiler free of nested dict literals."""

    def __init__(self, name: str, kind: str, **fields: Any):
        if len(name) > MAX_STATE_NAME:
            raise CompileError(f"state name {name!r} is longer than {MAX_STATE_NAME} characters")
        self.name = name
        self.body: dict[str, Any] = {"Type": kind, **fields}

    def next(self, name: str | None) -> State:
        self.body.pop("End", None)
        if name is None:
            self.body["End"] = True
        else:
            self.body["Next"] = name
        return self

    def retry(self, *rules: Mapping[str, Any]) -> State:
        if rules:
            self.body["Retry"] = [dict(r) for r in rules]
        return self


class Machine:
    """An ordered set of states: the whole state machine or one Parallel/Map branch."""

    def __init__(self) -> None:
        self.states: list[State] = []

    def add(self, state: State) -> State:
        self.states.append(state)
        return state

    def chain(self, end: str | None = None) -> None:
        """Link the states in order; the last one goes to ``end`` (or ends the branch)."""
        for state, following in zip(self.states, self.states[1:], strict=False):
            state.next(following.name)
        if self.states:
            self.states[-1].next(end)

    def render(self) -> dict[str, Any]:
        return {"StartAt": self.states[0].name, "States": {s.name: s.body for s in self.states}}

    def render_branch(self) -> dict[str, Any]:
        """A Parallel branch or Map item processor: chained, and handing back ``{}`` (OutputPath null),
        so that a Parallel's or Map's result is an array of empty objects, not of copies of its input
        (a few dozen copies of a large run's input would pass the 256 KiB payload limit)."""
        self.chain()
        self.states[-1].body["OutputPath"] = None
        return self.render()
