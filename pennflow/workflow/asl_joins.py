"""Join states: how a node on one path waits for dependencies that run on other paths.

Step Functions has no "start when these N states are done" state, so a block that is not
series-parallel runs as one ``Parallel`` branch per path (:class:`pennflow.workflow.dag.Joined`)
and the cross-path edges are kept by the node's join function (``pennflow.node.joins``):

* before a node with a dependency on another path, ``<id> waits`` is a
  ``lambda:invoke.waitForTaskToken`` task: the function stores the task token with the node's
  dependencies and releases it (``SendTaskSuccess``) once every one of them is done;
* after a node some other path waits for, ``<id> done`` calls the function to mark it done (a
  conditional write, so a repeated signal is harmless) and release the waiters that were waiting
  only for it. When the next node on the path waits itself, its wait carries the signal instead
  (one call and one state fewer).

A dependency that fails never signals: the Parallel fails, which stops every branch, the waiting
ones too. The wait's timeout is a backstop (a lost signal fails the run instead of hanging it): the
longest its dependencies can take, every timeout and retry used, from the block's start.
"""

from __future__ import annotations

import graphlib
from collections.abc import Mapping, Sequence

from pennflow.workflow.asl_states import INFRA_RETRY, CompileOptions, State
from pennflow.workflow.dag import Joined
from pennflow.workflow.definition import Processor, ProcessorType

WAIT_SUFFIX = " waits"
DONE_SUFFIX = " done"
JOIN_FUNCTION = "$.node.joinFunction"
# A dependency with no time bound of its own (a data source's downloads, a scatter's batches):
# its waiter gives up after this long, which still ends the run long before its one-year limit.
UNBOUNDED_WAIT_SECONDS = 7 * 86_400
# Time for the last signal's Lambda call and SendTaskSuccess, on top of the dependencies' own.
SIGNAL_SLACK_SECONDS = 900
# The join function is idempotent, so any failure of a call is worth retrying (States.TaskFailed
# matches Lambda's service errors too, not a wait's States.Timeout): shorter than LAMBDA_RETRY's
# list of errors, which matters in a state written once per join.
JOIN_RETRY = {
    "ErrorEquals": ["States.TaskFailed"],
    "IntervalSeconds": 2,
    "MaxAttempts": 6,
    "BackoffRate": 2.0,
    "JitterStrategy": "FULL",
}


def wait_state_name(node_id: str) -> str:
    return node_id + WAIT_SUFFIX


def done_state_name(node_id: str) -> str:
    return node_id + DONE_SUFFIX


def wait_state(
    node_id: str,
    deps: Sequence[str],
    timeout_seconds: int,
    options: CompileOptions,
    signal: tuple[str, Sequence[str]] | None = None,
) -> State:
    """``signal``: (the path's previous node, its waiters) when this wait also says it is done."""
    payload: dict[str, object] = {
        "action": "wait",
        "runId.$": "$.run.id",
        "node": node_id,
        "deps": list(deps),
        "token.$": "$$.Task.Token",
    }
    if signal:
        payload["done"], payload["waiters"] = signal[0], list(signal[1])
    state = State(
        wait_state_name(node_id),
        "Task",
        Resource=options.resource("lambda:invoke.waitForTaskToken"),
        Parameters={"FunctionName.$": JOIN_FUNCTION, "Payload": payload},
        ResultPath=None,
        TimeoutSeconds=timeout_seconds,
    )
    return state.retry(JOIN_RETRY)


def done_state(node_id: str, waiters: Sequence[str], options: CompileOptions) -> State:
    payload = {"action": "done", "runId.$": "$.run.id", "node": node_id, "waiters": list(waiters)}
    state = State(
        done_state_name(node_id),
        "Task",
        Resource=options.resource("lambda:invoke"),
        Parameters={"FunctionName.$": JOIN_FUNCTION, "Payload": payload},
        ResultPath=None,
    )
    return state.retry(JOIN_RETRY)


def wait_timeouts(block: Joined, processors: Mapping[str, Processor]) -> dict[str, int]:
    """Each waiting node's backstop: the latest its dependencies can end, counted from the block's
    start with every attempt of each processor on the way taking its whole timeout."""
    deps = block.deps_within()
    latest: dict[str, int] = {}
    for node in graphlib.TopologicalSorter(deps).static_order():
        before = max((latest[d] for d in deps[node]), default=0)
        latest[node] = min(UNBOUNDED_WAIT_SECONDS, before + worst_duration(processors[node]))
    return {join.node: max(latest[d] for d in join.deps) + SIGNAL_SLACK_SECONDS for join in block.joins}


def worst_duration(processor: Processor) -> int:
    """The longest a processor's states can take with every retry used, or the unbounded cap."""
    if processor.type is ProcessorType.DATA_SOURCE or processor.scatter is not None:
        return UNBOUNDED_WAIT_SECONDS
    attempts, waits = 1, _retry_waits(INFRA_RETRY["MaxAttempts"], INFRA_RETRY["IntervalSeconds"], 2.0)
    if processor.retry and processor.retry.max_attempts:
        attempts += processor.retry.max_attempts
        waits += _retry_waits(
            processor.retry.max_attempts, processor.retry.interval_seconds, processor.retry.backoff_rate
        )
    return processor.timeout_seconds * attempts + waits


def _retry_waits(attempts: int, interval: float, backoff: float) -> int:
    return int(sum(interval * backoff**k for k in range(attempts))) + 1
