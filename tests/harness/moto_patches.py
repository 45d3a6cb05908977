"""Small, reversible patches that let moto 5.2.5 execute our compiled state machines.

Each function returns a context manager that applies one patch and reverts it on exit; nothing
is patched at import time. The moto code each one touches, and why, is in its docstring.
"""

from __future__ import annotations

import contextlib
import functools
import json
import threading
import time
import traceback
import types
from collections.abc import Callable, Iterator
from typing import Any
from unittest import mock

import boto3
import botocore
import botocore.session
from botocore.exceptions import ClientError
from botocore.model import OperationModel
from moto.awslambda_simple.models import LambdaSimpleBackend
from moto.ecs.exceptions import ECSException
from moto.ecs.models import EC2ContainerServiceBackend
from moto.stepfunctions.parser.api import HistoryEventType, TaskFailedEventDetails
from moto.stepfunctions.parser.asl.component.common.error_name.custom_error_name import CustomErrorName
from moto.stepfunctions.parser.asl.component.common.error_name.error_name import ErrorName
from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import (
    FailureEvent,
    FailureEventException,
)
from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name import StatesErrorName
from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name_type import (
    StatesErrorNameType,
)
from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl
from moto.stepfunctions.parser.asl.component.state.exec.state_map.iteration import iteration_worker
from moto.stepfunctions.parser.asl.component.state.exec.state_map.result_writer.result_writer_decl import (
    ResultWriter,
)
from moto.stepfunctions.parser.asl.component.state.exec.state_parallel import branches_decl
from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import (
    state_task_service_callback,
)
from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.resource import ResourceCondition
from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_ecs import (
    StateTaskServiceEcs,
)
from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_sfn import (
    StateTaskServiceSfn,
)
from moto.stepfunctions.parser.asl.eval.event.event_detail import EventDetails
from moto.stepfunctions.parser.asl.utils import boto_client as boto_client_module
from moto.stepfunctions.parser.asl.utils.boto_client import boto_client_for
from moto.stepfunctions.parser.asl.utils.encoding import to_json_str

STOPPED_BY_STEP_FUNCTIONS = "Stopped by Step Functions: the state running this task ended"
AMAZON_ECS_EXCEPTION = "ECS.AmazonECSException"


class EcsRefused(ECSException):
    """What the run-task hook raises for an attempt scripted to be refused (ECS's ServerException)."""

    def __init__(self) -> None:
        super().__init__("ServerException", "Service unavailable (scripted by the test harness)")


# 1. ECS parameter casing -------------------------------------------------------------------------


@functools.cache
def _operation_model(boto_service_name: str, boto_action: str) -> OperationModel:
    service_model = botocore.session.get_session().get_service_model(boto_service_name)
    name = next(op for op in service_model.operation_names if botocore.xform_name(op) == boto_action)
    return service_model.operation_model(name)


def _task_operation(
    task: Any, boto_service_name: str | None, service_action_name: str | None
) -> OperationModel:
    return _operation_model(
        task._get_boto_service_name(boto_service_name), task._get_boto_service_action(service_action_name)
    )


def _normalise_parameters(self, parameters, boto_service_name=None, service_action_name=None) -> None:
    """SFN PascalCase request (`Cluster`, `Overrides.ContainerOverrides`) -> boto casing (`cluster`)."""
    self._to_boto_request(
        parameters, _task_operation(self, boto_service_name, service_action_name).input_shape
    )


def _normalise_response(self, response, boto_service_name=None, service_action_name=None) -> None:
    """boto casing response (`tasks`, `exitCode`) -> SFN PascalCase (`Tasks`, `ExitCode`), as on AWS."""
    output_shape = _task_operation(self, boto_service_name, service_action_name).output_shape
    self._from_boto_response(response, output_shape)


@contextlib.contextmanager
def ecs_parameter_casing() -> Iterator[None]:
    """Restore the request/response casing conversion for `ecs:runTask` tasks.

    moto's port of the LocalStack interpreter reduced `StateTaskService._normalise_parameters` and
    `_normalise_response` (stepfunctions/parser/asl/component/state/exec/state_task/service/
    state_task_service.py) to `pass`, while keeping the `_to_boto_request`/`_from_boto_response`
    helpers they used to call. ECS members are camelCase in boto, so the PascalCase ASL parameters
    reach botocore verbatim and serialisation fails with `KeyError: 'Cluster'` (States.Runtime);
    the `.sync` resolver then also reads `Tasks` from an un-normalised `tasks` response.
    The conversion is restored on `StateTaskServiceEcs` only, using botocore's operation model.
    """
    with (
        mock.patch.object(StateTaskServiceEcs, "_normalise_parameters", _normalise_parameters),
        mock.patch.object(StateTaskServiceEcs, "_normalise_response", _normalise_response),
    ):
        yield


@contextlib.contextmanager
def sfn_parameter_casing() -> Iterator[None]:
    """The same casing conversion for `states:startExecution` tasks (a split workflow's children).

    `StateTaskServiceSfn._normalise_parameters` turns `Input` into JSON text and then calls the
    reduced base method, so `StateMachineArn` reaches botocore verbatim (`KeyError:
    'StateMachineArn'`, States.Runtime), and the `.sync:2` resolver reads `ExecutionArn` from an
    un-normalised `executionArn` response. Its own conversion of `Input` is kept."""
    own = StateTaskServiceSfn._normalise_parameters

    def normalise_parameters(self, parameters, boto_service_name=None, service_action_name=None) -> None:
        own(self, parameters, boto_service_name, service_action_name)
        _normalise_parameters(self, parameters, boto_service_name, service_action_name)

    with (
        mock.patch.object(StateTaskServiceSfn, "_normalise_parameters", normalise_parameters),
        mock.patch.object(StateTaskServiceSfn, "_normalise_response", _normalise_response),
    ):
        yield


# 2. States.* errors leaving Parallel branches and Map iterations ---------------------------------


def _error_name_keeping_states_errors(error_name: str | None) -> ErrorName:
    if error_name and error_name.startswith("States."):
        with contextlib.suppress(ValueError):
            return StatesErrorName.from_name(error_name)
    return CustomErrorName(error_name=error_name)


@contextlib.contextmanager
def states_errors_leave_branches() -> Iterator[None]:
    """Let `States.TaskFailed`, `States.Timeout`... leave a Parallel branch or Map iteration as is.

    `BranchesDecl._eval_body` (state_parallel/branches_decl.py) and `IterationWorker._eval_job`
    (state_map/iteration/iteration_worker.py) rebuild the failed branch's error with
    `CustomErrorName(error_name)`, whose constructor rejects any name starting with `States.`.
    The ValueError replaces the branch's error and cause: a Map's Catch sees `States.Runtime`, and
    from a Parallel it even escapes the Catch and fails the whole execution with `States.Runtime`.
    On AWS the Parallel/Map state fails with the branch's own error and cause. The name
    `CustomErrorName` is rebound in those two modules only, to a factory that builds a
    `StatesErrorName` for `States.*` names.
    """
    with (
        mock.patch.object(branches_decl, "CustomErrorName", _error_name_keeping_states_errors),
        mock.patch.object(iteration_worker, "CustomErrorName", _error_name_keeping_states_errors),
    ):
        yield


# 3. ECS exit codes and stopping tasks ------------------------------------------------------------


def _failed_container(task: dict) -> bool:
    return any(container.get("ExitCode") not in (0, None) for container in task.get("Containers", []))


def _task_failed(task_state: StateTaskServiceEcs, env: Any, task: dict) -> FailureEventException:
    return FailureEventException(
        FailureEvent(
            env=env,
            error_name=StatesErrorName(typ=StatesErrorNameType.StatesTaskFailed),
            event_type=HistoryEventType.TaskFailed,
            event_details=EventDetails(
                taskFailedEventDetails=TaskFailedEventDetails(
                    resource=task_state._get_sfn_resource(),
                    resourceType=task_state._get_sfn_resource_type(),
                    error=StatesErrorNameType.StatesTaskFailed.to_name(),
                    cause=to_json_str(task),
                )
            ),
        )
    )


@contextlib.contextmanager
def ecs_sync_follows_exit_codes() -> Iterator[None]:
    """Make `ecs:runTask.sync` fail with `States.TaskFailed` on a non-zero container exit code.

    `StateTaskServiceEcs._build_sync_resolver` (state_task_service_ecs.py) returns the task
    description as soon as the task is STOPPED, whatever its containers' exit codes. On AWS a
    non-zero exit code fails the state with `States.TaskFailed` and a Cause that is the task
    description JSON; the wrapped resolver raises exactly that.
    """
    original_build = StateTaskServiceEcs._build_sync_resolver

    def build_sync_resolver(self, env, resource_runtime_part, normalised_parameters, state_credentials):
        resolve_stopped_task = original_build(
            self, env, resource_runtime_part, normalised_parameters, state_credentials
        )

        def resolve() -> dict | None:
            task = resolve_stopped_task()
            if task is not None and _failed_container(task):
                raise _task_failed(self, env, task)
            return task

        return resolve

    with mock.patch.object(StateTaskServiceEcs, "_build_sync_resolver", build_sync_resolver):
        yield


@contextlib.contextmanager
def ecs_sync_retries_wait_again() -> Iterator[None]:
    """Let a retried `ecs:runTask.sync` attempt wait for its new task.

    `StateTaskServiceCallback._eval_sync` (state_task_service_callback.py) also listens on the
    state's task-token endpoint, and `_eval_integration_pattern` interrupts that endpoint when an
    attempt ends. The token is made once per state entry, not per attempt, so every retry finds
    the endpoint already interrupted and fails at once with `States.Timeout`. A `.sync` task has
    no task token on AWS, so the ECS `.sync` wait is run without the token listener.
    """
    original_eval_sync = StateTaskServiceEcs._eval_sync

    def eval_sync(self, env, sync_resolver, timeout_seconds, callback_endpoint, heartbeat_endpoint):
        if self.resource.condition == ResourceCondition.Sync:
            callback_endpoint = None
        return original_eval_sync(
            self,
            env=env,
            sync_resolver=sync_resolver,
            timeout_seconds=timeout_seconds,
            callback_endpoint=callback_endpoint,
            heartbeat_endpoint=heartbeat_endpoint,
        )

    with mock.patch.object(StateTaskServiceEcs, "_eval_sync", eval_sync):
        yield


@contextlib.contextmanager
def ecs_sync_stops_abandoned_tasks() -> Iterator[None]:
    """Stop the ECS task when its `.sync` state stops waiting before the task ended.

    `_eval_sync` leaves its polling loop once the state's frame is no longer running: the
    execution was stopped, the state timed out, or a sibling Parallel branch failed. AWS then
    stops the ECS task (StopTask); moto leaves it running. The wrapped resolver remembers the
    task, and the wrapped `_eval_sync` stops it in that case.
    """
    original_build = StateTaskServiceEcs._build_sync_resolver
    original_eval_sync = StateTaskServiceEcs._eval_sync

    def build_sync_resolver(self, env, resource_runtime_part, normalised_parameters, state_credentials):
        submitted = env.stack[-1]["Tasks"][0]
        resolver = original_build(self, env, resource_runtime_part, normalised_parameters, state_credentials)

        def stop_task() -> None:
            ecs = boto_client_for(
                region=resource_runtime_part.region, service="ecs", state_credentials=state_credentials
            )
            ecs.stop_task(
                cluster=submitted["ClusterArn"], task=submitted["TaskArn"], reason=STOPPED_BY_STEP_FUNCTIONS
            )

        resolver.stop_task = stop_task
        return resolver

    def eval_sync(self, env, sync_resolver, timeout_seconds, callback_endpoint, heartbeat_endpoint):
        outcome = original_eval_sync(
            self,
            env=env,
            sync_resolver=sync_resolver,
            timeout_seconds=timeout_seconds,
            callback_endpoint=callback_endpoint,
            heartbeat_endpoint=heartbeat_endpoint,
        )
        if not env.is_running():
            sync_resolver.stop_task()
        return outcome

    with (
        mock.patch.object(StateTaskServiceEcs, "_build_sync_resolver", build_sync_resolver),
        mock.patch.object(StateTaskServiceEcs, "_eval_sync", eval_sync),
    ):
        yield


@contextlib.contextmanager
def sfn_sync_stops_abandoned_children() -> Iterator[None]:
    """Stop a child execution when its `startExecution.sync:2` state stops waiting before it ended.

    The same case as `ecs_sync_stops_abandoned_tasks` (the parent was stopped, or a sibling branch
    failed): AWS's documented policy for `.sync` starts grants `states:StopExecution` on the child's
    executions so that Step Functions can stop them; moto leaves the child running.
    """
    original_build = StateTaskServiceSfn._build_sync2_resolver
    original_eval_sync = StateTaskServiceSfn._eval_sync

    def build_sync2_resolver(self, env, resource_runtime_part, normalised_parameters, state_credentials):
        execution_arn = env.stack[-1]["ExecutionArn"]
        resolver = original_build(self, env, resource_runtime_part, normalised_parameters, state_credentials)

        def stop_child() -> None:
            sfn = boto_client_for(
                region=resource_runtime_part.region,
                service="stepfunctions",
                state_credentials=state_credentials,
            )
            if sfn.describe_execution(executionArn=execution_arn)["status"] == "RUNNING":
                sfn.stop_execution(executionArn=execution_arn, cause=STOPPED_BY_STEP_FUNCTIONS)

        resolver.stop_child = stop_child
        return resolver

    def eval_sync(self, env, sync_resolver, timeout_seconds, callback_endpoint, heartbeat_endpoint):
        outcome = original_eval_sync(
            self,
            env=env,
            sync_resolver=sync_resolver,
            timeout_seconds=timeout_seconds,
            callback_endpoint=callback_endpoint,
            heartbeat_endpoint=heartbeat_endpoint,
        )
        if not env.is_running() and hasattr(sync_resolver, "stop_child"):
            sync_resolver.stop_child()
        return outcome

    with (
        mock.patch.object(StateTaskServiceSfn, "_build_sync2_resolver", build_sync2_resolver),
        mock.patch.object(StateTaskServiceSfn, "_eval_sync", eval_sync),
    ):
        yield


@contextlib.contextmanager
def ecs_errors_are_amazon_ecs_exceptions() -> Iterator[None]:
    """Fail an `ecs:runTask` state whose ECS call was refused with `ECS.AmazonECSException`.

    `StateTaskServiceEcs` has no `_from_error` of its own, so a `ClientError` from RunTask (a
    throttle, no capacity) reaches `ExecutionState._from_error` (execute_state.py) and becomes
    `States.Runtime`, which no Retry on ECS errors can match. On AWS the state fails with
    `ECS.AmazonECSException` and a cause naming the ECS error code; the wrapped `_from_error`
    builds that failure for a `ClientError`.
    """
    original_from_error = StateTaskServiceEcs._from_error

    def from_error(self, env, ex):
        if not isinstance(ex, ClientError):
            return original_from_error(self, env, ex)
        error = ex.response["Error"]
        status = ex.response["ResponseMetadata"].get("HTTPStatusCode", 400)
        return FailureEvent(
            env=env,
            error_name=CustomErrorName(AMAZON_ECS_EXCEPTION),
            event_type=HistoryEventType.TaskFailed,
            event_details=EventDetails(
                taskFailedEventDetails=TaskFailedEventDetails(
                    resource=self._get_sfn_resource(),
                    resourceType=self._get_sfn_resource_type(),
                    error=AMAZON_ECS_EXCEPTION,
                    cause=f"{error.get('Message', '')} (Service: AmazonECS; Status Code: {status}; "
                    f"Error Code: {error.get('Code', '')})",
                )
            ),
        )

    with mock.patch.object(StateTaskServiceEcs, "_from_error", from_error):
        yield


@contextlib.contextmanager
def result_writer_reads_state_input() -> Iterator[None]:
    """Evaluate a Distributed Map's `ResultWriter.Parameters` paths against the Map's input.

    `ResultWriter._eval_body` (state_map/result_writer/result_writer_decl.py) evaluates its
    parameters with the items' results on top of the stack, so `"Bucket.$": "$.run.manifest.bucket"`
    is looked up in `[{}, {}, ...]` and fails with `States.Runtime`. On AWS the paths select from
    the state's input, like every other field of the state. The wrapped body evaluates them against
    the state input, then hands the results and parameters on as moto's S3 writer expects.
    """

    def eval_body(self, env):
        results = env.stack.pop()
        env.stack.append(env.states.get_input())
        self.parargs.eval(env=env)
        parameters = env.stack.pop()
        env.stack.pop()
        env.stack.extend([results, parameters])
        self.resource_eval.eval_resource(env=env)

    with mock.patch.object(ResultWriter, "_eval_body", eval_body):
        yield


# 4. Lambda handlers run in-process ---------------------------------------------------------------

LambdaHandler = Callable[[Any, Any], Any]


class LambdaContext(types.SimpleNamespace):
    """The attributes of the AWS Lambda context object that handlers (and Powertools) read."""

    def get_remaining_time_in_millis(self) -> int:
        return 300_000


def _lambda_context(fn: Any) -> LambdaContext:
    return LambdaContext(
        function_name=fn.function_name,
        function_version="$LATEST",
        invoked_function_arn=fn.function_arn,
        memory_limit_in_mb=128,
        aws_request_id=f"req-{time.monotonic_ns()}",
        log_group_name=f"/aws/lambda/{fn.function_name}",
        log_stream_name="test",
    )


@contextlib.contextmanager
def lambda_handlers(
    handlers: dict[str, LambdaHandler], on_invoke: Callable[[str, Any, Any, dict | None], None]
) -> Iterator[None]:
    """Run registered Python callables as the code of moto Lambda functions.

    Without docker moto uses `LambdaSimpleBackend.invoke` (awslambda_simple/models.py), which
    echoes the request payload and never runs code. The patched `invoke` resolves the function
    (unknown names still fail with ResourceNotFoundException), calls the handler registered under
    its name with the decoded event and a context, and returns its JSON result; an exception
    becomes an `Unhandled` function error with AWS's `errorType`/`errorMessage` payload.
    Functions with no registered handler keep moto's echo behaviour.
    `on_invoke(function_name, event, result, error)` sees every call.
    """
    original_invoke = LambdaSimpleBackend.invoke

    def invoke(self, function_name, qualifier, body, headers, response_headers):
        fn = self.get_function(function_name, qualifier)
        event = json.loads(body) if body else {}
        handler = handlers.get(fn.function_name)
        if handler is None:
            on_invoke(fn.function_name, event, None, None)
            return original_invoke(self, function_name, qualifier, body, headers, response_headers)
        try:
            result = handler(event, _lambda_context(fn))
        except Exception as exc:
            error = {
                "errorType": type(exc).__name__,
                "errorMessage": str(exc),
                "stackTrace": traceback.format_tb(exc.__traceback__),
            }
            on_invoke(fn.function_name, event, None, error)
            response_headers["x-amz-function-error"] = "Unhandled"
            return json.dumps(error).encode()
        on_invoke(fn.function_name, event, result, None)
        return json.dumps(result).encode()

    with mock.patch.object(LambdaSimpleBackend, "invoke", invoke):
        yield


# 5. Time: fast polling, recorded and scaled retry intervals --------------------------------------


class ScaledSleep:
    """Stands in for the `time` module inside moto's retrier: records each interval, sleeps less."""

    def __init__(self, scale: float):
        self.scale = scale
        self.requested: list[float] = []
        self._lock = threading.Lock()

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.requested.append(seconds)
        time.sleep(seconds * self.scale)


@contextlib.contextmanager
def fast_clock(sync_poll_seconds: float, retry_scale: float) -> Iterator[ScaledSleep]:
    """Shorten the `.sync` polling delay and the Retry back-off waits.

    `StateTaskServiceCallback._eval_sync` sleeps `_DELAY_SECONDS_SYNC_CONDITION_CHECK` (0.5 s)
    between DescribeTasks polls, and moto's ECS task needs four polls to reach STOPPED.
    `RetrierDecl._eval_body` (common/retry/retrier_decl.py) sleeps the full IntervalSeconds with
    `time.sleep`; its module's `time` is replaced by a `ScaledSleep` that keeps the requested
    intervals so tests can still assert the back-off.
    """
    clock = ScaledSleep(retry_scale)
    with (
        mock.patch.object(
            state_task_service_callback, "_DELAY_SECONDS_SYNC_CONDITION_CHECK", sync_poll_seconds
        ),
        mock.patch.object(retrier_decl, "time", clock),
    ):
        yield clock


# Speed -------------------------------------------------------------------------------------------


class _CachingBoto3:
    """Stands in for `boto3` inside moto's `boto_client_for`: one client per service and region."""

    def __init__(self) -> None:
        self._clients: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()

    def client(self, *, service_name: str, region_name: str, **kwargs: Any) -> Any:
        key = (service_name, region_name)
        with self._lock:
            if key not in self._clients:
                self._clients[key] = boto3.client(
                    service_name=service_name, region_name=region_name, **kwargs
                )
            return self._clients[key]


@contextlib.contextmanager
def shared_interpreter_clients() -> Iterator[None]:
    """Reuse the interpreter's boto clients instead of making one per service call.

    `boto_client_for` (stepfunctions/parser/asl/utils/boto_client.py) builds a new client for every
    task, poll and Map item; with a thousand Map items that is most of the run's time. botocore
    clients are thread-safe and every one of them goes to moto, so one per service is the same.
    """
    with mock.patch.object(boto_client_module, "boto3", _CachingBoto3()):
        yield


# ECS RunTask hook (outcome scripting and call recording) -----------------------------------------


# A slice short enough that a stopped execution's waiting task ends at once, long enough to cost nothing.
CALLBACK_POLL_SECONDS = 0.02


@contextlib.contextmanager
def callback_waits_end_with_execution() -> Iterator[None]:
    """End a `waitForTaskToken` wait when its execution stops, as on AWS.

    `StateTaskServiceCallback._eval_wait_for_task_token` (state_task_service_callback.py) blocks
    in `CallbackEndpoint.wait(timeout=TimeoutSeconds)` without looking at the execution: after
    `StopExecution` the Parallel around a waiting branch waits for it, so the execution stays
    RUNNING for the whole timeout (a join's is days). The patched wait takes the timeout in short
    slices and, as moto's own heartbeat loop does, returns no outcome as soon as the environment
    is no longer running (the stopped program goes no further). A wait with a heartbeat keeps that loop.
    For a `lambda:invoke.waitForTaskToken` task moto passes the state's input where the timeout
    belongs (its evaluation stack holds one value more than the callback code pops); the state's
    own `TimeoutSeconds` is used then.
    """
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import (
        state_task_service_callback as callback_module,
    )

    cls = callback_module.StateTaskServiceCallback
    original = cls._eval_wait_for_task_token

    def wait_while_running(self, env, timeout_seconds, callback_endpoint, heartbeat_endpoint):
        if heartbeat_endpoint is not None:
            return original(self, env, timeout_seconds, callback_endpoint, heartbeat_endpoint)
        if not isinstance(timeout_seconds, int | float):  # moto hands a Lambda wait its state input here
            timeout_seconds = self.timeout.timeout_seconds
        deadline = time.monotonic() + timeout_seconds
        outcome = None
        while outcome is None and env.is_running() and time.monotonic() < deadline:
            outcome = callback_endpoint.wait(timeout=min(CALLBACK_POLL_SECONDS, deadline - time.monotonic()))
            if outcome is None and callback_endpoint._notify_event.is_set():
                break  # interrupted with no outcome: moto's own wait returns at once here too
        if outcome is None and env.is_running():
            return callback_module.CallbackOutcomeTimedOut(callback_id=callback_endpoint.callback_id)
        return outcome

    with mock.patch.object(cls, "_eval_wait_for_task_token", wait_while_running):
        yield


@contextlib.contextmanager
def ecs_backend_serialised() -> Iterator[None]:
    """Serialise moto's ECS task calls, as the real service is consistent under concurrent callers.

    `EC2ContainerServiceBackend.describe_tasks` and `list_tasks` (ecs/models.py) iterate the
    cluster's task dict while `run_task` on another interpreter thread inserts into it, so with a
    few dozen Map items in flight a poll fails with "dictionary changed size during iteration"
    (`States.Runtime`). One re-entrant lock around the task calls removes the race.
    """
    lock = threading.RLock()
    names = ("run_task", "describe_tasks", "list_tasks", "stop_task")
    originals = {name: getattr(EC2ContainerServiceBackend, name) for name in names}

    def serialised(original):
        @functools.wraps(original)
        def call(self, *args, **kwargs):
            with lock:
                return original(self, *args, **kwargs)

        return call

    with contextlib.ExitStack() as stack:
        for name, original in originals.items():
            stack.enter_context(mock.patch.object(EC2ContainerServiceBackend, name, serialised(original)))
        yield


@contextlib.contextmanager
def ecs_run_task_hook(on_task_started: Callable[[Any], bool]) -> Iterator[None]:
    """Call `on_task_started(task)` with each moto ECS `Task` that RunTask creates.

    moto's `EC2ContainerServiceBackend.run_task` (ecs/models.py) gives every container exit
    code 0; the hook lets the harness record the call and script the task's outcome. When
    `on_task_started` answers False the call is refused instead (`EcsRefused`, ECS's ServerException).
    """
    original_run_task = EC2ContainerServiceBackend.run_task

    def run_task(self, *args, **kwargs):
        tasks = original_run_task(self, *args, **kwargs)
        accepted = [on_task_started(task) for task in tasks]
        if not all(accepted):
            raise EcsRefused()
        return tasks

    with mock.patch.object(EC2ContainerServiceBackend, "run_task", run_task):
        yield
