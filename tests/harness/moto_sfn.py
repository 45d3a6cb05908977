"""Execute compiled state machines in moto's Step Functions interpreter, with scripted processors.

    with MotoStepFunctions() as aws:
        aws.register_processor("convert")
        aws.register_lambda("finalize", finalize_handler)
        result = aws.run_execution(definition, aws.execution_input("r-1"), outcomes={"convert": [1, 0]})
        assert result.status == "SUCCEEDED" and len(result.run_task_calls) == 2

Processor outcomes: for each processor id (the task's `PROCESSOR_ID` environment override, else
its task definition family), a list of outcomes per attempt or a callable
`(environment, attempt) -> outcome`. An outcome is a container exit code or `HANG` (the task stays
RUNNING until something stops it) or `ECS_REFUSED` (RunTask itself fails: the state sees
`ECS.AmazonECSException`). The last listed outcome repeats; unlisted processors exit 0.
`attempt` counts RunTask calls with the same processor id and environment overrides, so the
batches of a Map each count their own retries.

Every result carries `figures` (tests/harness/moto_measure.py): the largest state payload and the
history length of the execution and of each Distributed Map child execution.

Joins: the node's join function (`pennflow.node.joins`) runs as the `join` Lambda on a moto
DynamoDB table and releases waiting states through moto's `SendTaskSuccess`; `aws.node` names it
(`joinFunction`). A test wraps `aws.join_handler` (passing `lambdas={"join": wrapped}`) to drop,
repeat or delay signals.
"""

from __future__ import annotations

import contextlib
import functools
import io
import itertools
import json
import os
import threading
import time
import zipfile
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from unittest import mock

import boto3
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID

from tests.harness import moto_measure, moto_patches

REGION = "us-east-1"
JOINS_TABLE = "pennflow-test-joins"
JOIN_FUNCTION = "join"
MOTO_CONFIG = {"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}
PROCESSOR_CONTAINER = "processor"
HANG: Literal["hang"] = "hang"
ECS_REFUSED: Literal["ecs-refused"] = "ecs-refused"

Outcome = int | Literal["hang", "ecs-refused"]
OutcomeScript = Sequence[Outcome] | Callable[[dict[str, str], int], Outcome]
LambdaHandler = moto_patches.LambdaHandler
TERMINAL_STATUSES = {"SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"}
# The fixes to moto, in the order they are applied; `without=` leaves some out to show they matter.
OPTIONAL_PATCHES = (
    "ecs_parameter_casing",
    "sfn_parameter_casing",
    "states_errors_leave_branches",
    "ecs_sync_follows_exit_codes",
    "ecs_sync_retries_wait_again",
    "ecs_sync_stops_abandoned_tasks",
    "sfn_sync_stops_abandoned_children",
    "lambda_handlers",
    "ecs_errors_are_amazon_ecs_exceptions",
    "distributed_map_fails",
    "result_writer_reads_state_input",
    "callback_waits_end_with_execution",
)


class ProcessorOutcomes:
    """Which exit code each RunTask attempt of each processor gets (see the module docstring)."""

    def __init__(self, scripts: Mapping[str, OutcomeScript] | None = None):
        self._scripts = dict(scripts or {})
        for processor_id, script in self._scripts.items():
            if callable(script):
                continue
            if isinstance(script, str | int) or not script:
                raise ValueError(
                    f"outcomes[{processor_id!r}] must be a non-empty list of outcomes or a callable"
                )
            for outcome in script:
                _check_outcome(processor_id, outcome)
        self._attempts: dict[tuple[str, tuple[tuple[str, str], ...]], int] = {}
        self._lock = threading.Lock()

    def next_attempt(self, processor_id: str, environment: dict[str, str]) -> tuple[int, Outcome]:
        key = (processor_id, tuple(sorted(environment.items())))
        with self._lock:
            attempt = self._attempts.get(key, 0) + 1
            self._attempts[key] = attempt
        script = self._scripts.get(processor_id, [0])
        if callable(script):
            return attempt, _check_outcome(processor_id, script(environment, attempt))
        return attempt, script[min(attempt, len(script)) - 1]


def _check_outcome(processor_id: str, outcome: Any) -> Outcome:
    if outcome not in (HANG, ECS_REFUSED) and (isinstance(outcome, bool) or not isinstance(outcome, int)):
        raise ValueError(
            f"outcomes[{processor_id!r}]: {outcome!r} is neither an exit code nor HANG nor ECS_REFUSED"
        )
    return outcome


@dataclass
class RunTaskCall:
    """One ECS RunTask made by the state machine, with the moto task it started."""

    processor_id: str
    environment: dict[str, str]
    attempt: int
    outcome: Outcome
    task_definition_arn: str
    cluster_arn: str
    launch_type: str
    network_configuration: dict[str, Any]
    task_arn: str
    task: Any = field(repr=False)

    @property
    def last_status(self) -> str:
        return self.task.last_status

    @property
    def stopped_reason(self) -> str:
        return self.task.stopped_reason


@dataclass
class LambdaCall:
    function_name: str
    payload: Any
    result: Any
    error: dict[str, Any] | None


@dataclass
class ExecutionResult:
    status: str
    output: Any
    error: str | None
    cause: str | None
    history: list[dict[str, Any]]
    run_task_calls: list[RunTaskCall]
    lambda_calls: list[LambdaCall]
    figures: moto_measure.Figures | None = None
    # a split workflow's child executions (pennflow.workflow.asl_split), each one's history
    child_histories: list[list[dict[str, Any]]] = field(default_factory=list)

    def events(self, event_type: str) -> list[dict[str, Any]]:
        return [event for event in self.history if event["type"] == event_type]

    def calls_of(self, processor_id: str) -> list[RunTaskCall]:
        return [call for call in self.run_task_calls if call.processor_id == processor_id]


def _environment_overrides(task: Any) -> dict[str, str]:
    overrides = task.overrides.get("containerOverrides", [])
    return {
        variable["name"]: variable["value"]
        for container in overrides
        if container.get("name") == PROCESSOR_CONTAINER
        for variable in container.get("environment", [])
    }


def _family(task_definition_arn: str) -> str:
    return task_definition_arn.rsplit("/", 1)[-1].split(":")[0]


def _script_outcome(task: Any, outcome: Outcome) -> None:
    if outcome == ECS_REFUSED:
        outcome = 0  # the call fails; the task moto already made just stops
    if outcome == HANG:
        # No lifecycle transition out of RUNNING: only StopTask ends the task.
        task._transitions = []
        return
    for container in task.containers:
        container.exitCode = outcome
    task.stop_code = "EssentialContainerExited"
    task.stopped_reason = "Essential container in task exited"


@functools.cache
def _shared_session() -> boto3.Session:
    return boto3.Session(region_name=REGION)


def _function_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("index.py", "def handler(event, context):\n    return event\n")
    return buffer.getvalue()


class MotoStepFunctions:
    """moto with the Step Functions interpreter, the harness patches, and a node's network."""

    def __init__(
        self,
        *,
        sync_poll_seconds: float = 0.01,
        retry_scale: float = 0.0,
        without: Collection[str] = (),
    ):
        unknown = set(without) - set(OPTIONAL_PATCHES)
        if unknown:
            raise ValueError(f"unknown patches in 'without': {sorted(unknown)}; known: {OPTIONAL_PATCHES}")
        self._without = set(without)
        self._sync_poll_seconds = sync_poll_seconds
        self._retry_scale = retry_scale
        self._lock = threading.Lock()
        self._run_task_calls: list[RunTaskCall] = []
        self._lambda_calls: list[LambdaCall] = []
        self._handlers: dict[str, LambdaHandler] = {}
        self._outcomes = ProcessorOutcomes()
        self._task_definitions: dict[str, str] = {}
        self._names = itertools.count(1)
        self._stack = contextlib.ExitStack()
        self._clock: moto_patches.ScaledSleep | None = None
        self._recorder = moto_measure.Recorder()
        self.node: dict[str, Any] = {}
        self._part_arns: list[str] = []

    # Lifecycle ---------------------------------------------------------------------------------

    def __enter__(self) -> MotoStepFunctions:
        try:
            # Our VPC needs no AMIs, and loading moto's catalogue of them costs 0.2 s per harness.
            self._stack.enter_context(mock.patch.dict(os.environ, {"MOTO_EC2_LOAD_DEFAULT_AMIS": "false"}))
            self._stack.enter_context(mock_aws(config=MOTO_CONFIG))
            # mock_aws resets boto3's default session (moto's interpreter creates its clients from
            # it); a shared one keeps the loaded service models, which take 0.3 s to parse.
            boto3.DEFAULT_SESSION = _shared_session()
            for name in OPTIONAL_PATCHES:
                if name not in self._without:
                    self._stack.enter_context(self._patch(name))
            self._stack.enter_context(moto_patches.shared_interpreter_clients())
            self._stack.enter_context(moto_patches.ecs_backend_serialised())
            self._stack.enter_context(moto_patches.ecs_run_task_hook(self._on_task_started))
            self._stack.enter_context(moto_measure.measure_payloads(self._recorder))
            self._stack.enter_context(moto_measure.child_execution_histories(self._recorder))
            self._clock = self._stack.enter_context(
                moto_patches.fast_clock(self._sync_poll_seconds, self._retry_scale)
            )
            self.sfn = boto3.client("stepfunctions", region_name=REGION)
            self.ecs = boto3.client("ecs", region_name=REGION)
            self.lambda_ = boto3.client("lambda", region_name=REGION)
            self._role_arn = self._create_role()
            self.node = self._create_node()
            self.node["joinFunction"] = self._create_joins()
        except BaseException:
            self._stack.close()
            raise
        return self

    def _patch(self, name: str) -> contextlib.AbstractContextManager:
        if name == "lambda_handlers":
            return moto_patches.lambda_handlers(self._handlers, self._on_invoke)
        if name == "distributed_map_fails":
            return moto_measure.distributed_map_fails()
        return getattr(moto_patches, name)()

    def __exit__(self, *exc_info: object) -> None:
        try:
            self._stop_running_executions()
        finally:
            self._stack.close()

    def _stop_running_executions(self, timeout: float = 5.0) -> None:
        # Worker threads must finish while the mock is active, or they would call real endpoints.
        running = [
            execution["executionArn"]
            for machine in self.sfn.list_state_machines()["stateMachines"]
            for execution in self.sfn.list_executions(stateMachineArn=machine["stateMachineArn"])[
                "executions"
            ]
            if execution["status"] == "RUNNING"
        ]
        for execution_arn in running:
            self.sfn.stop_execution(executionArn=execution_arn)
        for execution_arn in running:
            self._wait_status(execution_arn, timeout)

    # Resources ---------------------------------------------------------------------------------

    def _create_role(self) -> str:
        iam = boto3.client("iam", region_name=REGION)
        trust = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": ["states.amazonaws.com", "lambda.amazonaws.com"]},
                    "Action": "sts:AssumeRole",
                }
            ],
        }
        return iam.create_role(RoleName="pennflow-test-role", AssumeRolePolicyDocument=json.dumps(trust))[
            "Role"
        ]["Arn"]

    def _create_node(self) -> dict[str, Any]:
        ec2 = boto3.client("ec2", region_name=REGION)
        vpc_id = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        # moto's ECS gives awsvpc tasks an ENI whose private DNS name exists only with DNS hostnames.
        ec2.modify_vpc_attribute(VpcId=vpc_id, EnableDnsHostnames={"Value": True})
        subnets = [
            ec2.create_subnet(VpcId=vpc_id, CidrBlock=cidr)["Subnet"]["SubnetId"]
            for cidr in ("10.0.1.0/24", "10.0.2.0/24")
        ]
        group = ec2.create_security_group(GroupName="pennflow-tasks", Description="tasks", VpcId=vpc_id)
        cluster = self.ecs.create_cluster(clusterName="pennflow-test")["cluster"]["clusterArn"]
        return {"cluster": cluster, "subnets": subnets, "securityGroups": [group["GroupId"]]}

    def _create_joins(self) -> str:
        from pennflow.node.joins import JoinStore

        self.dynamodb = boto3.client("dynamodb", region_name=REGION)
        self.dynamodb.create_table(
            TableName=JOINS_TABLE,
            KeySchema=[
                {"AttributeName": "runId", "KeyType": "HASH"},
                {"AttributeName": "item", "KeyType": "RANGE"},
            ],
            AttributeDefinitions=[
                {"AttributeName": "runId", "AttributeType": "S"},
                {"AttributeName": "item", "AttributeType": "S"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )
        self.join_store = JoinStore(JOINS_TABLE, dynamodb=self.dynamodb, sfn=self.sfn)
        return self.register_lambda(JOIN_FUNCTION, self.join_handler)

    def join_handler(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        """The join Lambda: the node's own logic on the harness's table and Step Functions."""
        from pennflow.node.joins import JoinRequest, handle

        return handle(JoinRequest.model_validate(event), self.join_store).as_dict()

    def register_processor(self, processor_id: str, *, family: str | None = None) -> str:
        """A Fargate task definition for the processor; returns its ARN."""
        arn = self.ecs.register_task_definition(
            family=family or processor_id,
            networkMode="awsvpc",
            requiresCompatibilities=["FARGATE"],
            cpu="256",
            memory="512",
            containerDefinitions=[
                {"name": PROCESSOR_CONTAINER, "image": f"{processor_id}:test", "memory": 512}
            ],
        )["taskDefinition"]["taskDefinitionArn"]
        self._task_definitions[processor_id] = arn
        return arn

    def register_lambda(self, name: str, handler: LambdaHandler) -> str:
        """A moto Lambda function whose invocations run `handler(event, context)`; returns its ARN."""
        with self._lock:
            known = name in self._handlers
            self._handlers[name] = handler
        if known:
            return self.function_arn(name)
        return self.lambda_.create_function(
            FunctionName=name,
            Runtime="python3.12",
            Role=self._role_arn,
            Handler="index.handler",
            Code={"ZipFile": _function_zip()},
        )["FunctionArn"]

    @staticmethod
    def function_arn(name: str) -> str:
        return f"arn:aws:lambda:{REGION}:{DEFAULT_ACCOUNT_ID}:function:{name}"

    def execution_input(
        self,
        run_id: str,
        params: Mapping[str, Mapping[str, str]] | None = None,
        *,
        finalize_function: str = "finalize",
        list_batches_function: str = "list-batches",
    ) -> dict[str, Any]:
        """The execution input the compiled state machine expects, naming this harness's resources."""
        return {
            "run": {
                "id": run_id,
                "taskDefinitions": dict(self._task_definitions),
                "params": {key: dict(value) for key, value in (params or {}).items()},
            },
            "node": {
                **self.node,
                "finalizeFunction": self.function_arn(finalize_function),
                "listBatchesFunction": self.function_arn(list_batches_function),
            },
        }

    # Executions --------------------------------------------------------------------------------

    def start_execution(
        self,
        definition: dict[str, Any],
        input: dict[str, Any],
        *,
        outcomes: Mapping[str, OutcomeScript] | None = None,
        lambdas: Mapping[str, LambdaHandler] | None = None,
        parts: Sequence[dict[str, Any]] = (),
    ) -> str:
        """``parts``: a split workflow's child machines, created first as the node's registry does
        (``<machine>_part<k>``, each placeholder replaced by the ARN of the part it names)."""
        from pennflow.workflow.asl_split import part_name, substitute

        for name, handler in (lambdas or {}).items():
            self.register_lambda(name, handler)
        self._outcomes = ProcessorOutcomes(outcomes)
        self._recorder.reset()  # figures are those of the latest execution
        name = f"pennflow-test-{next(self._names)}"
        self._part_arns = []
        for number, part in enumerate(parts, 1):
            text = substitute(json.dumps(part), self._part_arns)
            self._part_arns.append(
                self.sfn.create_state_machine(
                    name=part_name(name, number), definition=text, roleArn=self._role_arn
                )["stateMachineArn"]
            )
        machine_arn = self.sfn.create_state_machine(
            name=name, definition=substitute(json.dumps(definition), self._part_arns), roleArn=self._role_arn
        )["stateMachineArn"]
        return self.sfn.start_execution(stateMachineArn=machine_arn, name=name, input=json.dumps(input))[
            "executionArn"
        ]

    def run_execution(
        self,
        definition: dict[str, Any],
        input: dict[str, Any],
        *,
        outcomes: Mapping[str, OutcomeScript] | None = None,
        lambdas: Mapping[str, LambdaHandler] | None = None,
        timeout: float = 10.0,
        parts: Sequence[dict[str, Any]] = (),
    ) -> ExecutionResult:
        """Create the state machine, start it, and wait (at most `timeout` s) for it to end."""
        first_task, first_lambda = len(self._run_task_calls), len(self._lambda_calls)
        execution_arn = self.start_execution(
            definition, input, outcomes=outcomes, lambdas=lambdas, parts=parts
        )
        return self.wait(execution_arn, timeout=timeout, since=(first_task, first_lambda))

    def stop_execution(self, execution_arn: str) -> None:
        self.sfn.stop_execution(executionArn=execution_arn, error="Cancelled", cause="stopped by the test")

    def wait(
        self, execution_arn: str, *, timeout: float = 10.0, since: tuple[int, int] = (0, 0)
    ) -> ExecutionResult:
        """Wait for the execution to end; calls are those recorded from `since` (default: all)."""
        description = self._wait_status(execution_arn, timeout)
        if description["status"] not in TERMINAL_STATUSES:
            self.sfn.stop_execution(executionArn=execution_arn)
            history = self._history(execution_arn)
            raise TimeoutError(
                f"execution still {description['status']} after {timeout}s; last events: "
                f"{[event['type'] for event in history[-8:]]}"
            )
        with self._lock:
            run_task_calls = self._run_task_calls[since[0] :]
            lambda_calls = self._lambda_calls[since[1] :]
        output = description.get("output")
        history = self._history(execution_arn)
        return ExecutionResult(
            status=description["status"],
            output=json.loads(output) if output else None,
            error=description.get("error"),
            cause=description.get("cause"),
            history=history,
            run_task_calls=run_task_calls,
            lambda_calls=lambda_calls,
            figures=moto_measure.figures(self._recorder, history),
            child_histories=self.part_histories(),
        )

    def part_executions(self) -> list[dict[str, Any]]:
        """The executions of the latest split workflow's child machines (name, status, ARN)."""
        return [
            execution
            for machine_arn in self._part_arns
            for execution in self.sfn.list_executions(stateMachineArn=machine_arn)["executions"]
        ]

    def part_histories(self, timeout: float = 3.0) -> list[list[dict[str, Any]]]:
        """Each child's history once it has ended (for at most ``timeout`` in all: a test may leave
        children running on purpose): a child still being stopped, its parent just ended, has a
        history moto is writing, which it cannot serialise meanwhile."""
        arns = [execution["executionArn"] for execution in self.part_executions()]
        deadline = time.monotonic() + timeout
        for arn in arns:
            self._wait_status(arn, max(0.0, deadline - time.monotonic()))
        return [self._history(arn) for arn in arns]

    def wait_for_run_task(self, processor_id: str, *, timeout: float = 5.0) -> RunTaskCall:
        """The first RunTask of `processor_id`, waiting for the state machine to make it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            calls = [call for call in self.run_task_calls if call.processor_id == processor_id]
            if calls:
                return calls[0]
            time.sleep(0.01)
        raise TimeoutError(f"no RunTask for processor {processor_id!r} within {timeout}s")

    @property
    def run_task_calls(self) -> list[RunTaskCall]:
        with self._lock:
            return list(self._run_task_calls)

    @property
    def lambda_calls(self) -> list[LambdaCall]:
        with self._lock:
            return list(self._lambda_calls)

    @property
    def retry_intervals(self) -> list[float]:
        """The Retry waits the state machine asked for, in seconds, before scaling."""
        return list(self._clock.requested) if self._clock else []

    def _wait_status(self, execution_arn: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            description = self.sfn.describe_execution(executionArn=execution_arn)
            if description["status"] in TERMINAL_STATUSES or time.monotonic() >= deadline:
                return description
            time.sleep(0.01)

    def _history(self, execution_arn: str) -> list[dict[str, Any]]:
        return self.sfn.get_execution_history(executionArn=execution_arn)["events"]

    # Hooks called from moto ----------------------------------------------------------------------

    def _on_task_started(self, task: Any) -> bool:
        environment = _environment_overrides(task)
        processor_id = environment.get("PROCESSOR_ID") or _family(task.task_definition_arn)
        attempt, outcome = self._outcomes.next_attempt(processor_id, environment)
        _script_outcome(task, outcome)
        call = RunTaskCall(
            processor_id=processor_id,
            environment=environment,
            attempt=attempt,
            outcome=outcome,
            task_definition_arn=task.task_definition_arn,
            cluster_arn=task.cluster_arn,
            launch_type=task.launch_type,
            network_configuration=getattr(task, "network_configuration", {}),
            task_arn=task.task_arn,
            task=task,
        )
        with self._lock:
            self._run_task_calls.append(call)
        return outcome != ECS_REFUSED

    def _on_invoke(self, function_name: str, payload: Any, result: Any, error: dict | None) -> None:
        with self._lock:
            self._lambda_calls.append(LambdaCall(function_name, payload, result, error))


def run_execution(
    definition: dict[str, Any],
    input: dict[str, Any] | Callable[[MotoStepFunctions], dict[str, Any]],
    *,
    processors: Sequence[str] = (),
    outcomes: Mapping[str, OutcomeScript] | None = None,
    lambdas: Mapping[str, LambdaHandler] | None = None,
    timeout: float = 10.0,
) -> ExecutionResult:
    """One execution in a fresh harness: registers `processors`, builds `input` if it is a function
    of the harness (e.g. `lambda aws: aws.execution_input("r-1")`), runs, and tears moto down."""
    with MotoStepFunctions() as aws:
        for processor_id in processors:
            aws.register_processor(processor_id)
        execution_input = input(aws) if callable(input) else input
        return aws.run_execution(
            definition, execution_input, outcomes=outcomes, lambdas=lambdas, timeout=timeout
        )
