"""Step Functions' hard limits, and the checks that keep every compiled machine inside them.

A workflow the validator accepts must run without crossing any of these, whatever its data:

* a state's input, output or result (for a Parallel or Map: the array of its branches' or items'
  outputs) over 256 KiB fails the state with ``States.DataLimitExceeded``;
* an execution whose history reaches 25,000 events fails;
* a state machine definition over 1 MiB cannot be created (a workflow past it, or past the history
  limit, is split into child machines: :mod:`pennflow.workflow.asl_split`).

The compiler (:mod:`pennflow.workflow.asl`) keeps payloads small by construction: each branch and
item hands back ``{}``, large fan-outs run as Distributed Maps whose items are read from S3 and
whose results go to S3, each item a child execution with its own history. What still grows with
the workflow (the definition, the run's execution input, the parent history) is estimated here
from the compiled definition, and a workflow that cannot fit is refused with a message naming the
limit it would cross.

The definition format's own names and sizes (shared by the models and the Pennsieve-shape reader)
are here too, with the nesting limit the loader and the node's API both enforce.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

PAYLOAD_LIMIT = 262_144  # bytes: 256 KiB, any state input/output/result and the execution input
HISTORY_EVENT_LIMIT = 25_000  # events in one execution's history
DEFINITION_LIMIT = 1_048_576  # bytes: 1 MiB, a state machine definition
MAX_SCATTER_BATCHES = 10_000  # batches one scatter may make (a Distributed Map over an S3 manifest)
# Processors in one workflow the node's API registers. The API refuses more before validating or
# compiling; the compiler's own bound is the 256 KiB payload (every state carries the run's input,
# a task definition ARN per processor): about 1,400 processors.
MAX_PROCESSORS = 1000
MAX_PLAN_DEPTH = 100  # nested Parallel levels the compiler writes (each is about 5 JSON levels)

# Budgets for values only known at run time, used to bound the execution input and state payloads.
# arn:aws:ecs:<region>:<account>:task-definition/<node>-proc-<16 hex>:<revision> is about 100
TASK_DEFINITION_ARN_BUDGET = 128
NODE_SETTINGS_BUDGET = 4_096  # cluster, subnets, security groups and function ARNs
RUN_IDS_BUDGET = 512  # run id, dataset id, manifest location
SCATTER_LISTING_BUDGET = 512  # what one scatter's listing adds to the state (its manifest location)

# History events per state on a successful attempt, and per failed attempt a Retry allows.
_ENTER_EXIT = 2
# Scheduled, Started, [Submitted,] Succeeded: a .sync task and a join's .waitForTaskToken submit
_TASK_EVENTS = {"sync": 4, "lambda": 3}
_FAILED_ATTEMPT_EVENTS = {"sync": 4, "lambda": 3}  # Scheduled, Started, [Submitted,] Failed
_REFUSED_SUBMISSION_EVENTS = 3  # Scheduled, Started, Failed: an ECS API error before any task ran
_PARALLEL_EVENTS = 2  # ParallelStateStarted, ParallelStateSucceeded (plus enter/exit)
_DISTRIBUTED_MAP_EVENTS = 4  # MapStateStarted, MapRunStarted, MapRunSucceeded, MapStateSucceeded
_EXECUTION_EVENTS = 2  # ExecutionStarted, ExecutionSucceeded/Failed
_DEFAULT_MAX_ATTEMPTS = 3  # ASL's default for a Retrier without MaxAttempts
ECS_API_ERROR = "ECS.AmazonECSException"


MAX_JSON_DEPTH = 32  # levels of nested arrays/objects in a definition file or an API body

# ------------------------------------------------------------------ the definition format

# Anchored for pydantic (whose regex engine's ``$`` is the end of the text); Python code must use
# ``fullmatch``, since ``re.match`` with ``$`` accepts a final newline ("FOO\n").
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")
PARAM_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_NAME = 64
MAX_DISPLAY_NAME = 255

# Valid Fargate cpu -> memory (MiB) combinations.
FARGATE_MEMORY: dict[int, tuple[int, ...]] = {
    256: (512, 1024, 2048),
    512: tuple(range(1024, 4097, 1024)),
    1024: tuple(range(2048, 8193, 1024)),
    2048: tuple(range(4096, 16385, 1024)),
    4096: tuple(range(8192, 30721, 1024)),
    8192: tuple(range(16384, 61441, 4096)),
    16384: tuple(range(32768, 122881, 8192)),
}
# A computeType gpu processor is an ECS task on EC2 GPU instances: any cpu and memory within these,
# and up to 8 GPUs (the largest instances pennflow prices, pennflow.workflow.gpu, have 8).
MIN_EC2_CPU = 128
MIN_EC2_MEMORY = 128
MAX_GPU_CPU = 192 * 1024
MAX_GPU_MEMORY = 2_000_000
MAX_GPUS = 8
# Lambda memory sizes (MB) and the memory at which Lambda gives one full vCPU.
LAMBDA_MEMORY = (128, 10_240)
LAMBDA_MB_PER_VCPU = 1769
LAMBDA_TIMEOUT_SECONDS = 900  # one Lambda invocation's limit: a lambda processor's timeout and its default


def lambda_fallback(layers: Sequence[Any], dependencies: Sequence[Any]) -> str | None:
    """Why a ``computeType: lambda`` processor runs as a Fargate task instead (None: as a Lambda
    function). A function has one file system (the run slot's folder, no layers) and no init
    container to build a fan-in's union INPUT_DIR; Pennsieve's own lambda processors use layers."""
    if layers:
        return "it uses layers (a Lambda function mounts one file system: the run's folder)"
    if len(dependencies) > 1:
        return "it is a fan-in (Lambda has no init container to build the union INPUT_DIR)"
    return None


def is_name(text: object) -> bool:
    return isinstance(text, str) and len(text) <= MAX_NAME and NAME_RE.fullmatch(text) is not None


def is_param_name(text: object) -> bool:
    return isinstance(text, str) and PARAM_RE.fullmatch(text) is not None


def mib(size: int) -> str:
    return f"{size / 1_048_576:.2f} MB"


def definition_size_problem(size: int) -> str | None:
    if size <= DEFINITION_LIMIT:
        return None
    return f"compiled definition is {mib(size)}; Step Functions allows 1 MB ({DEFINITION_LIMIT:,} bytes)"


def plan_depth_problem(depth: int) -> str | None:
    if depth <= MAX_PLAN_DEPTH:
        return None
    return (
        f"the workflow's structure nests {depth} Parallel levels deep; the compiler writes at most "
        f"{MAX_PLAN_DEPTH} (a deeply nested definition cannot be encoded or read back safely)"
    )


def largest_payload(skeleton_bytes: int, task_definitions: int, scatters: int) -> int:
    """Bound a run's largest state payload from its execution input with empty ids and ARNs."""
    return (
        skeleton_bytes
        + task_definitions * TASK_DEFINITION_ARN_BUDGET
        + NODE_SETTINGS_BUDGET
        + RUN_IDS_BUDGET
        + scatters * SCATTER_LISTING_BUDGET
    )


def payload_problem(largest: int) -> str | None:
    """``largest``: a run's largest state payload with the default parameter values (longer values
    given at run start are checked then, against the same limit, before the run starts)."""
    if largest < PAYLOAD_LIMIT:
        return None
    return (
        f"a state's payload could reach {largest:,} bytes (the run's ids, task definitions and parameters); "
        f"Step Functions allows 256 KiB ({PAYLOAD_LIMIT:,} bytes): fewer processors or parameters"
    )


def history_problem(events: int, where: str = "a run") -> str | None:
    if events < HISTORY_EVENT_LIMIT:
        return None
    return (
        f"{where} could write {events:,} history events (every processor's retries used); Step Functions "
        f"allows {HISTORY_EVENT_LIMIT:,} per execution: fewer processors or retries"
    )


# ------------------------------------------------------------------ history estimate


def worst_case_history(machine: Mapping[str, Any]) -> tuple[int, int]:
    """(parent events, largest child execution's events) when every state runs and every Retry is
    used to the full: an upper bound, since the compiled machine enters each state at most once
    (no loops, no Catch). A Distributed Map's items are child executions with their own history;
    an inline Map grows with its items and cannot be bounded."""
    parent = _EXECUTION_EVENTS
    largest_child = 0
    for state in _all_states(machine):
        parent += _state_events(state)
        if state["Type"] == "Map":
            processor = state.get("ItemProcessor") or state["Iterator"]
            if processor.get("ProcessorConfig", {}).get("Mode") != "DISTRIBUTED":
                raise ValueError(f"inline Map {state.get('Comment', '')!r}: its history grows with its items")
            child, grandchild = worst_case_history(processor)
            largest_child = max(largest_child, child, grandchild)
    return parent, largest_child


def state_events_within(state: Mapping[str, Any]) -> int:
    """Worst-case events of one state and of every state in its Parallel branches (a Map's
    items are child executions: not counted here)."""
    return sum(_state_events(s) for s in _all_states({"States": {"": state}}))


def _all_states(machine: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every state of the machine and of its Parallel branches (not of Map item processors)."""
    pending = [machine]
    while pending:
        current = pending.pop()
        for state in current["States"].values():
            yield state
            pending.extend(state.get("Branches", ()))


def _state_events(state: Mapping[str, Any]) -> int:
    kind = state["Type"]
    if kind == "Parallel":
        return _ENTER_EXIT + _PARALLEL_EVENTS
    if kind == "Map":
        return _ENTER_EXIT + _DISTRIBUTED_MAP_EVENTS
    if kind != "Task":
        return _ENTER_EXIT
    resource = str(state.get("Resource", ""))
    # a child machine's start (startExecution.sync:2) submits and waits like a .sync task
    pattern = "sync" if resource.endswith((".sync", ".sync:2", ".waitForTaskToken")) else "lambda"
    events = _ENTER_EXIT + _TASK_EVENTS[pattern]
    for rule in state.get("Retry", ()):
        attempts = rule.get("MaxAttempts", _DEFAULT_MAX_ATTEMPTS)
        per_attempt = (
            _REFUSED_SUBMISSION_EVENTS
            if rule["ErrorEquals"] == [ECS_API_ERROR]
            else _FAILED_ATTEMPT_EVENTS[pattern]
        )
        events += attempts * per_attempt
    return events
