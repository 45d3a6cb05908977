"""The calls Step Functions makes with a state machine's role for each state of its definition,
as the Step Functions Developer Guide lists them per integration:

- ``ecs:runTask(.sync)``: ecs:RunTask on the task definition (ecs:cluster), ecs:TagResource when tags
  propagate, iam:PassRole of the task definition's roles; ``.sync`` also ecs:StopTask and
  ecs:DescribeTasks on the task, and events:PutTargets/PutRule/DescribeRule on the managed rule
  ``StepFunctionsGetEventsForECSTaskRule`` ("IAM policies for Amazon ECS/AWS Fargate");
- ``lambda:invoke``: lambda:InvokeFunction on the function named in the state's input;
- a Distributed Map: states:StartExecution on the machine itself (unqualified and as the version the
  run was started on), states:DescribeExecution/StopExecution on its child executions
  (``execution:<machine>/<map run>:<id>``), and for an S3 ItemReader s3:GetObject on the object
  ("IAM policies for using Distributed Map states"); a ResultWriter s3:PutObject, s3:GetObject,
  s3:ListMultipartUploadParts and s3:AbortMultipartUpload on the objects under its prefix;
- ``lambda:invoke.waitForTaskToken`` (a join's wait): lambda:InvokeFunction, as ``lambda:invoke``;
- ``states:startExecution.sync:2`` (a split workflow's child machine): states:StartExecution on the
  child (the version the parent names), states:DescribeExecution/StopExecution on its executions,
  and events:PutTargets/PutRule/DescribeRule on ``StepFunctionsGetEventsForStepFunctionsExecutionRule``
  ("Start a new AWS Step Functions state machine from a running execution", IAM policies);
- logging to CloudWatch Logs and X-Ray tracing: the vended-log and X-Ray actions on "*".

Paths (``"X.$": "$.a.b"``) are read from the execution's real input, so the ARNs are those a run
hands the machine. A state type or integration without a rule here raises.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from tests.iam.actions import Call, Lookup, requests_for
from tests.iam.evaluator import Request

ECS_EVENTS_RULE = "StepFunctionsGetEventsForECSTaskRule"
SFN_EVENTS_RULE = "StepFunctionsGetEventsForStepFunctionsExecutionRule"
LOG_DELIVERY = (
    "CreateLogDelivery",
    "GetLogDelivery",
    "UpdateLogDelivery",
    "DeleteLogDelivery",
    "ListLogDeliveries",
    "PutResourcePolicy",
    "DescribeResourcePolicies",
    "DescribeLogGroups",
)
TRACING = ("PutTraceSegments", "PutTelemetryRecords", "GetSamplingRules", "GetSamplingTargets")
# What a Map's ResultWriter needs on the objects it writes (Developer Guide, "ResultWriter (Map)").
RESULT_WRITER = ("s3:PutObject", "s3:GetObject", "s3:ListMultipartUploadParts", "s3:AbortMultipartUpload")
PASSIVE_STATES = {"Pass", "Choice", "Wait", "Succeed", "Fail"}


@dataclass(frozen=True)
class StateCall:
    state: str
    request: Request


class Unknown(str):
    """A path into what an earlier state wrote (a Catch's error, a task's result), not the run's input:
    fine as a payload value, an error if an ARN would be built from it."""


def read_path(path: str, data: Any, context: Mapping[str, Any]) -> Any:
    """A reference path (``$.a.b``, ``$$.Map.Item.Value``) as Step Functions reads it."""
    in_context = path.startswith("$$.")
    value: Any = context if in_context else data
    for part in filter(None, path[3 if in_context else 2 :].split(".")):
        if not isinstance(value, Mapping) or part not in value:
            return Unknown(path)
        value = value[part]
    return value


def _known(params: Mapping[str, Any], key: str, state: str) -> Any:
    value = params[key]
    if isinstance(value, Unknown):
        raise LookupError(f"state {state}: {key} comes from {value}, which the run's input does not hold")
    return value


def _format(expression: str, data: Any, context: Mapping[str, Any]) -> str:
    """``States.Format('a/{}/b', $.x)``: the one intrinsic function the compiled machines use in paths."""
    inner = expression.removeprefix("States.Format(").removesuffix(")")
    template, *arguments = [part.strip() for part in inner.split(",")]
    values = [str(read_path(a, data, context)) for a in arguments]
    return template.strip("'").format(*values)


def parameters(template: Mapping[str, Any], data: Any, context: Mapping[str, Any]) -> dict[str, Any]:
    """A Parameters/ItemSelector block with its ``.$`` paths read (nested blocks too)."""
    out: dict[str, Any] = {}
    for key, value in template.items():
        if key.endswith(".$") and value.startswith("States.Format("):
            out[key[:-2]] = _format(value, data, context)
        elif key.endswith(".$"):
            out[key[:-2]] = read_path(value, data, context)
        elif isinstance(value, dict):
            out[key] = parameters(value, data, context)
        else:
            out[key] = value
    return out


@dataclass
class MachineCalls:
    machine_arn: str  # the machine (unqualified)
    started_on: str  # what the run was started on (a version ARN, or the machine)
    region: str
    lookup: Lookup
    # What a Lambda state's function returns (its Payload), by state name, for the states whose result
    # later states read (ResultSelector/ResultPath), e.g. a scatter's batch list location.
    task_results: Mapping[str, Any] = field(default_factory=dict)

    def of_definition(self, definition: Mapping[str, Any], execution_input: Any) -> list[StateCall]:
        return list(self._states(definition["States"], execution_input, {}))

    def of_machine(self, logging: bool, tracing: bool) -> list[StateCall]:
        calls = []
        if logging:
            calls += [StateCall("(logging)", Request(f"logs:{a}", "*")) for a in LOG_DELIVERY]
        if tracing:
            calls += [StateCall("(tracing)", Request(f"xray:{a}", "*")) for a in TRACING]
        return calls

    def _states(
        self, states: Mapping[str, Any], data: Any, context: Mapping[str, Any]
    ) -> Iterator[StateCall]:
        for name, state in states.items():
            kind = state["Type"]
            if kind == "Task":
                yield from self._task(name, state, data, context)
                data = self._with_result(name, state, data, context)
            elif kind == "Parallel":
                for branch in state["Branches"]:
                    yield from self._states(branch["States"], data, context)
            elif kind == "Map":
                yield from self._map(name, state, data, context)
            elif kind not in PASSIVE_STATES:
                raise NotImplementedError(f"state {name}: type {kind} has no IAM rule in the tier")

    def _with_result(self, name: str, state: Mapping[str, Any], data: Any, context: Mapping[str, Any]) -> Any:
        """The state's output: its result (as ``task_results`` gives it) placed at its ResultPath."""
        path = state.get("ResultPath", "$")
        if path is None or name not in self.task_results:
            return data
        result: Any = {"Payload": self.task_results[name]}
        if "ResultSelector" in state:
            result = parameters(state["ResultSelector"], result, context)
        output = json.loads(json.dumps(data))
        target = output
        *parents, last = path[2:].split(".")
        for part in parents:
            target = target.setdefault(part, {})
        target[last] = result
        return output

    def _calls(self, state: str, *calls: Call) -> Iterator[StateCall]:
        for call in calls:
            for request in requests_for(call, self.lookup):
                yield StateCall(state, request)

    def _task(
        self, name: str, state: Mapping[str, Any], data: Any, context: Mapping[str, Any]
    ) -> Iterator[StateCall]:
        resource = state["Resource"]
        params = parameters(state.get("Parameters", {}), data, context)
        if resource in ("arn:aws:states:::ecs:runTask.sync", "arn:aws:states:::ecs:runTask"):
            cluster = _known(params, "Cluster", name)
            run = {"cluster": cluster, "taskDefinition": _known(params, "TaskDefinition", name)}
            if params.get("PropagateTags"):
                run["propagateTags"] = params["PropagateTags"]
            yield from self._calls(name, Call("ecs", "RunTask", run, self.region))
            if resource.endswith(".sync"):
                task = f"{cluster.rsplit('/', 1)[1]}/0123456789abcdef0123456789abcdef"
                yield from self._calls(
                    name,
                    Call("ecs", "DescribeTasks", {"cluster": cluster, "tasks": [task]}, self.region),
                    Call("ecs", "StopTask", {"cluster": cluster, "task": task}, self.region),
                    Call("events", "PutTargets", {"Rule": ECS_EVENTS_RULE}, self.region),
                    Call("events", "PutRule", {"Name": ECS_EVENTS_RULE}, self.region),
                    Call("events", "DescribeRule", {"Name": ECS_EVENTS_RULE}, self.region),
                )
        elif resource == "arn:aws:states:::states:startExecution.sync:2":
            target = _known(params, "StateMachineArn", name)
            machine = target.split(":stateMachine:")[1].split(":")[0]  # a version ARN names its machine
            child = f"{target.split(':stateMachine:')[0]}:execution:{machine}:0123abcd-child"
            yield from self._calls(
                name,
                Call("stepfunctions", "StartExecution", {"stateMachineArn": target}, self.region),
                Call("stepfunctions", "DescribeExecution", {"executionArn": child}, self.region),
                Call("stepfunctions", "StopExecution", {"executionArn": child}, self.region),
                Call("events", "PutTargets", {"Rule": SFN_EVENTS_RULE}, self.region),
                Call("events", "PutRule", {"Name": SFN_EVENTS_RULE}, self.region),
                Call("events", "DescribeRule", {"Name": SFN_EVENTS_RULE}, self.region),
            )
        elif resource in (
            "arn:aws:states:::lambda:invoke",
            "arn:aws:states:::lambda:invoke.waitForTaskToken",
        ):
            yield from self._calls(
                name,
                Call("lambda", "Invoke", {"FunctionName": _known(params, "FunctionName", name)}, self.region),
            )
        else:
            raise NotImplementedError(f"state {name}: integration {resource} has no IAM rule in the tier")

    def _map(
        self, name: str, state: Mapping[str, Any], data: Any, context: Mapping[str, Any]
    ) -> Iterator[StateCall]:
        processor = state.get("ItemProcessor") or state["Iterator"]
        reader = state.get("ItemReader")
        items: list[Any] = [{}]
        if reader is not None:
            if reader["Resource"] != "arn:aws:states:::s3:getObject":
                raise NotImplementedError(f"state {name}: ItemReader {reader['Resource']} has no IAM rule")
            location = parameters(reader["Parameters"], data, context)
            yield from self._calls(
                name,
                Call(
                    "s3",
                    "GetObject",
                    {"Bucket": _known(location, "Bucket", name), "Key": _known(location, "Key", name)},
                    self.region,
                ),
            )
        elif "ItemsPath" in state:
            items = read_path(state["ItemsPath"], data, context) or [{}]
        writer = state.get("ResultWriter")
        if writer is not None:
            if writer["Resource"] != "arn:aws:states:::s3:putObject":
                raise NotImplementedError(f"state {name}: ResultWriter {writer['Resource']} has no IAM rule")
            target = parameters(writer["Parameters"], data, context)
            results = f"arn:aws:s3:::{_known(target, 'Bucket', name)}/{_known(target, 'Prefix', name)}/0123-manifest.json"
            yield from (StateCall(name, Request(action, results)) for action in RESULT_WRITER)
        if processor.get("ProcessorConfig", {}).get("Mode") == "DISTRIBUTED":
            prefix, machine_name = self.machine_arn.split(":stateMachine:")
            child = f"{prefix}:execution:{machine_name}/{name}:0123abcd-child"
            for target in dict.fromkeys((self.machine_arn, self.started_on)):
                yield from self._calls(
                    name, Call("stepfunctions", "StartExecution", {"stateMachineArn": target}, self.region)
                )
            yield from self._calls(
                name,
                Call("stepfunctions", "DescribeExecution", {"executionArn": child}, self.region),
                Call("stepfunctions", "StopExecution", {"executionArn": child}, self.region),
            )
        item_context = {**context, "Map": {"Item": {"Value": items[0], "Index": 0}}}
        selector = state.get("ItemSelector") or state.get("Parameters")
        item = parameters(selector, data, item_context) if selector else items[0]
        yield from self._states(processor["States"], item, item_context)
