"""Compiler: workflow definition -> Amazon States Language (a dict). Pure and deterministic.

Shape (DESIGN §5): each DAG node is one state named by its id; processors and built-ins are
``ecs:runTask.sync`` tasks (a ``Map`` named by the id when scattered); the series-parallel plan
from :mod:`pennflow.workflow.dag` becomes nested ``Parallel`` states; every top-level state catches into
one failure path that finalizes the run. Only ids and paths travel in the state: the execution
input (see :func:`execution_input`) carries the node's cluster and network, the run's id, its
task definitions and its resolved params.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pennflow.workflow import limits
from pennflow.workflow.contract import LAYERS_MOUNT, RUN_MOUNT, RunLayout, state_key, static_environment
from pennflow.workflow.cost_tags import RUN_TAGS_PATH, run_task_tags
from pennflow.workflow.dag import Dag, Parallel, Plan, Step, decompose, plan_depth
from pennflow.workflow.definition import Processor, ProcessorType, Workflow

DEFAULT_PARTITION = "aws"


def integration_arn(action: str, partition: str = DEFAULT_PARTITION) -> str:
    """A Step Functions service integration (``ecs:runTask.sync``) in the node's partition."""
    return f"arn:{partition}:states:::{action}"


ECS_RUN_TASK_SYNC = integration_arn("ecs:runTask.sync")  # the commercial partition's; see CompileOptions
LAMBDA_INVOKE = integration_arn("lambda:invoke")
CONTAINER_NAME = "processor"
WORKFLOW_STATE = "Run workflow"
FINALIZE_OK = "Finalize run"
FINALIZE_FAILED = "Finalize failed run"
SUCCEEDED = "Run succeeded"
FAILED = "Run failed"
RUN_FAILED_CAUSE = "A processor failed; the run record names it and its exit code (pennflow status RUN)."
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

    def catch_all(self, target: str) -> State:
        self.body["Catch"] = [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.failure", "Next": target}]
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


# ------------------------------------------------------------------ compiler


def compile_workflow(workflow: Workflow, options: CompileOptions | None = None) -> dict[str, Any]:
    """The ASL definition; raises :class:`CompileError` naming the Step Functions limit a workflow
    would cross (definition size, history length, payload size), see :mod:`pennflow.workflow.limits`."""
    problem = limits.processor_count_problem(len(workflow.processors))
    if problem:
        raise CompileError(problem)
    definition = _Compiler(workflow, options or CompileOptions()).compile()
    _check_limits(workflow, definition)
    return definition


def compile_to_json(workflow: Workflow, options: CompileOptions | None = None) -> str:
    """Canonical compact text (what is deployed): the same workflow always gives the same bytes."""
    return _canonical(compile_workflow(workflow, options))


def _canonical(definition: Mapping[str, Any]) -> str:
    return json.dumps(definition, separators=(",", ":"))


def _check_limits(workflow: Workflow, definition: dict[str, Any]) -> None:
    problems = [limits.definition_size_problem(len(_canonical(definition).encode()))]
    try:
        parent, largest_child = limits.worst_case_history(definition)
    except ValueError as exc:
        raise CompileError(f"the run's history cannot be bounded: {exc}") from None
    problems.append(limits.history_problem(parent))
    problems.append(limits.history_problem(largest_child, "a Distributed Map item"))
    problems.append(limits.payload_problem(largest_payload_estimate(workflow)))
    found = [problem for problem in problems if problem]
    if found:
        raise CompileError("; ".join(found))


def largest_payload_estimate(workflow: Workflow) -> int:
    """An upper bound, in bytes, of any state's payload in a run of ``workflow`` with its default
    parameters: its execution input with each id and ARN at its budget, plus what states add
    (scatter listings, a failure). Other parameter values are checked by :func:`execution_input`."""
    processors = [p for p in workflow.processors if p.type is not ProcessorType.DATA_SOURCE]
    skeleton = execution_input(
        workflow,
        run_id="",
        task_definitions={p.id: "" for p in processors},
        params={},
        node=dict.fromkeys(("cluster", "finalizeFunction", "listBatchesFunction", "downloadFunction"), "")
        | {"subnets": [], "securityGroups": []},
        manifest={"bucket": "", "key": ""},
        check_size=False,
    )
    scatters = sum(1 for p in workflow.processors if p.scatter)
    return limits.largest_payload(len(_canonical(skeleton).encode()), len(processors), scatters)


class _Compiler:
    def __init__(self, workflow: Workflow, options: CompileOptions):
        self.workflow = workflow
        self.options = options
        self.layout = RunLayout(RUN_MOUNT)
        self.parallel_count = 0
        try:
            self.decomposition = decompose(Dag.from_workflow(workflow))
        except RecursionError:  # a graph whose plan would nest far past MAX_PLAN_DEPTH anyway
            raise CompileError(
                "the workflow's graph nests too deeply for the compiler to decompose (past Python's "
                f"recursion limit; at most {limits.MAX_PLAN_DEPTH} Parallel levels are written): split it"
            ) from None
        problem = limits.plan_depth_problem(plan_depth(self.decomposition.plan))
        if problem:
            raise CompileError(problem)

    def compile(self) -> dict[str, Any]:
        # The whole DAG is one branch of a wrapper, so a single Catch is the one failure path
        # (and a 1,000-node workflow does not pay for 1,000 Catch blocks).
        workflow_branch = self._branch(self.decomposition.plan)
        top = Machine()
        top.add(State(WORKFLOW_STATE, "Parallel", Branches=[workflow_branch], ResultPath=None)).catch_all(
            FINALIZE_FAILED
        )
        invoke = self.options.resource("lambda:invoke")
        top.add(_finalize_state(FINALIZE_OK, "SUCCEEDED", invoke))
        top.chain()
        top.states[-1].next(SUCCEEDED)
        top.add(State(SUCCEEDED, "Succeed"))
        top.add(_finalize_state(FINALIZE_FAILED, "FAILED", invoke, failure=True)).next(FAILED)
        # The processor's own error is in the history and the run record; the Fail state names the run's fate.
        top.add(State(FAILED, "Fail", Error="pennflow.RunFailed", Cause=RUN_FAILED_CAUSE))
        kind = "series-parallel" if self.decomposition.is_series_parallel else "ordered (not series-parallel)"
        return {
            "Comment": f"{self.options.comment_prefix} {self.workflow.name} ({kind}); "
            f"definition {self.workflow.definition_hash()[:12]}",
            **top.render(),
        }

    def _states(self, plan: Plan) -> list[State]:
        """The states for one element of a sequence (a step, or a Parallel of branches)."""
        if isinstance(plan, Step):
            return self._step_states(self.workflow.processor(plan.id))
        if isinstance(plan, Parallel):
            self.parallel_count += 1
            name = f"Parallel {self.parallel_count}"  # numbered before the nested ones
            branches = [self._branch(b) for b in plan.branches]
            return [State(name, "Parallel", Branches=branches, ResultPath=None)]
        return [state for part in plan.parts for state in self._states(part)]

    def _branch(self, plan: Plan) -> dict[str, Any]:
        machine = Machine()
        for state in self._states(plan):
            machine.add(state)
        return machine.render_branch()

    def _step_states(self, processor: Processor) -> list[State]:
        if processor.type is ProcessorType.DATA_SOURCE:
            return self._data_source_states(processor)
        if processor.scatter is None:
            return [self._ecs_task(processor.id, processor, batch=False)]
        return self._scatter_states(processor)

    def _data_source_states(self, processor: Processor) -> list[State]:
        """A Distributed Map over the run's manifest in S3 (a JSON array of batches of files or byte
        ranges): one download Lambda call per batch, streaming into the run's folder; then one call
        that checks and assembles range-split files."""
        output_dir = str(self.layout.output_dir(processor.id))
        download = Machine()
        download.add(
            State(
                f"{processor.id} download",
                "Task",
                Resource=self.options.resource("lambda:invoke"),
                Parameters={"FunctionName.$": "$.function", "Payload.$": "$"},
                ResultPath=None,
            ).retry(LAMBDA_RETRY, DOWNLOAD_RETRY)
        )
        fan_out = State(
            processor.id,
            "Map",
            ItemReader=_s3_items("$.run.manifest", self.options),
            # The manifest is already grouped into batches by bytes (big files as byte ranges), so
            # each item is one download call; ItemBatcher would only batch by count.
            ItemSelector={
                "action": "download",
                "runId.$": "$.run.id",
                "processorId": processor.id,
                "outputDir": output_dir,
                "function.$": "$.node.downloadFunction",
                "batch.$": "$$.Map.Item.Value",
            },
            MaxConcurrency=self.options.download_max_concurrency,
            ItemProcessor={**DISTRIBUTED, **download.render_branch()},
            ResultWriter=_s3_results("$.run.manifest.bucket", processor.id, self.options),
            ResultPath=None,
        )
        verify = State(
            f"{processor.id} verify",
            "Task",
            Resource=self.options.resource("lambda:invoke"),
            Parameters={
                "FunctionName.$": "$.node.downloadFunction",
                "Payload": {
                    "action": "verify",
                    "runId.$": "$.run.id",
                    "processorId": processor.id,
                    "outputDir": output_dir,
                    "manifest.$": "$.run.manifest",
                },
            },
            ResultPath=None,
        ).retry(LAMBDA_RETRY)
        return [fan_out, verify]

    def _ecs_task(self, name: str, processor: Processor, *, batch: bool) -> State:
        key = state_key(processor.id)
        parameters = {
            "Cluster.$": "$.node.cluster",
            "LaunchType": "FARGATE",
            "TaskDefinition.$": f"$.run.taskDefinitions.{key}",
            "NetworkConfiguration.$": "$.node.network",
            "PropagateTags": "TASK_DEFINITION",
            "Tags.$": RUN_TAGS_PATH,
            "Overrides": {
                "ContainerOverrides": [
                    {"Name": CONTAINER_NAME, "Environment": self._environment(processor, batch)}
                ]
            },
        }
        resource = self.options.resource("ecs:runTask.sync")
        state = State(name, "Task", Resource=resource, Parameters=parameters, ResultPath=None)
        state.body["TimeoutSeconds"] = processor.timeout_seconds
        rules = [INFRA_RETRY]
        if processor.retry and processor.retry.max_attempts:
            rules.append(
                {
                    "ErrorEquals": ["States.TaskFailed"],
                    "IntervalSeconds": processor.retry.interval_seconds,
                    "MaxAttempts": processor.retry.max_attempts,
                    "BackoffRate": processor.retry.backoff_rate,
                },
            )
        return state.retry(*rules)

    def _environment(self, processor: Processor, batch: bool) -> list[dict[str, str]]:
        key = state_key(processor.id)
        static = static_environment(self.workflow, processor, self.layout, LAYERS_MOUNT)
        if batch:
            static.pop("INPUT_DIR", None)
        # PYTHONPATH and LAYERS_DIR come from the task definition, which knows every layer the task
        # mounts (the processor's and the run's); an override here would hide the run's layers.
        env = [{"Name": name, "Value": value} for name, value in static.items()]
        env.append({"Name": "RUN_ID", "Value.$": "$.run.id"})
        env.append({"Name": "DATASET_ID", "Value.$": "$.run.datasetId"})
        # Pennsieve's names for the run (INTEGRATION_ID, ...) and its token come from the slot's
        # parameters through the task definition, costing the state machine nothing per state.
        if self.workflow.organization_id:
            env.append({"Name": "ORGANIZATION_ID", "Value": self.workflow.organization_id})
        if batch:
            env.append({"Name": "INPUT_DIR", "Value.$": "$.batch.inputDir"})
            env.append({"Name": "BATCH_INDEX", "Value.$": "States.Format('{}', $.batch.index)"})
        for param in sorted(processor.default_params):
            env.append({"Name": param, "Value.$": f"$.run.params.{key}.{param}"})
        _check_override_size(processor.id, env, processor.default_params)
        return env

    def _scatter_states(self, processor: Processor) -> list[State]:
        key = state_key(processor.id)
        listing = State(
            f"{processor.id} batches",
            "Task",
            Resource=self.options.resource("lambda:invoke"),
            Parameters={
                "FunctionName.$": "$.node.listBatchesFunction",
                "Payload": {
                    "runId.$": "$.run.id",
                    "processorId": processor.id,
                    "inputDir": str(self.layout.input_dir(processor)),
                    "batchSize": processor.scatter.batch_size,
                },
            },
            # the listing wrote the batches to S3 (pennflow.node.batches): only their location travels
            ResultSelector={
                "bucket.$": "$.Payload.bucket",
                "key.$": "$.Payload.key",
                "count.$": "$.Payload.count",
            },
            ResultPath=f"$.scatter.{key}",
        ).retry(LAMBDA_RETRY)
        inner = Machine()
        inner.add(self._ecs_task(f"{processor.id} batch", processor, batch=True))
        # Up to 10,000 batches: an inline Map would put ~8 events per batch in the run's history
        # (25,000 at ~3,100 batches) and its item list in the state; child executions do neither.
        fan_out = State(
            processor.id,
            "Map",
            ItemReader=_s3_items(f"$.scatter.{key}", self.options),
            ItemSelector={"run.$": "$.run", "node.$": "$.node", "batch.$": "$$.Map.Item.Value"},
            MaxConcurrency=self.options.map_max_concurrency,
            ItemProcessor={**DISTRIBUTED, **inner.render_branch()},
            ResultWriter=_s3_results(f"$.scatter.{key}.bucket", processor.id, self.options),
            ResultPath=None,
        )
        return [listing, fan_out]


DISTRIBUTED = {"ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"}}


def _s3_items(location: str, options: CompileOptions) -> dict[str, Any]:
    """A Distributed Map's items: the JSON array at ``location`` ({bucket, key} in the state)."""
    return {
        "Resource": options.resource("s3:getObject"),
        "ReaderConfig": {"InputType": "JSON"},
        "Parameters": {"Bucket.$": f"{location}.bucket", "Key.$": f"{location}.key"},
    }


def _s3_results(bucket: str, processor_id: str, options: CompileOptions) -> dict[str, Any]:
    """Where a Distributed Map's child results go (runs/<run_id>/<processor_id>/map-results/): not
    into the state, where their array grows with the items past the 256 KiB payload limit."""
    return {
        "Resource": options.resource("s3:putObject"),
        "Parameters": {
            "Bucket.$": bucket,
            "Prefix.$": f"States.Format('runs/{{}}/{processor_id}/map-results', $.run.id)",
        },
    }


def _finalize_state(name: str, outcome: str, resource: str, failure: bool = False) -> State:
    payload: dict[str, Any] = {"runId.$": "$.run.id", "outcome": outcome}
    if failure:
        payload["failure.$"] = "$.failure"
    parameters = {"FunctionName.$": "$.node.finalizeFunction", "Payload": payload}
    return State(name, "Task", Resource=resource, Parameters=parameters, ResultPath=None).retry(LAMBDA_RETRY)


def override_problems(workflow: Workflow, params: Mapping[str, Mapping[str, str]]) -> list[str]:
    """The ECS override check with a run's actual param values (POST /runs), not the defaults."""
    problems = []
    compiler = _Compiler(workflow, CompileOptions())
    for processor in workflow.processors:
        if processor.type is ProcessorType.DATA_SOURCE:
            continue
        values = {**processor.default_params, **params.get(processor.id, {})}
        try:
            _check_override_size(
                processor.id, compiler._environment(processor, bool(processor.scatter)), values
            )
        except CompileError as exc:
            problems.append(str(exc))
    return problems


def _check_override_size(processor_id: str, env: list[dict[str, str]], params: Mapping[str, str]) -> None:
    """Each param counts its own value (a long param is long at RunTask); other run values a budget."""

    def value_size(e: Mapping[str, str]) -> int:
        if "Value.$" not in e:
            return len(e.get("Value", ""))
        return len(params[e["Name"]]) if e["Name"] in params else DYNAMIC_VALUE_BUDGET

    size = sum(len(e["Name"]) + value_size(e) for e in env)
    if size > ECS_OVERRIDE_LIMIT:
        raise CompileError(
            f"processor {processor_id!r}: its environment needs about {size} characters of ECS overrides, "
            f"over the {ECS_OVERRIDE_LIMIT} limit (fewer params or layers)"
        )


# ------------------------------------------------------------------ execution input


def execution_input(
    workflow: Workflow,
    *,
    run_id: str,
    task_definitions: Mapping[str, str],
    params: Mapping[str, Mapping[str, str]],
    node: Mapping[str, Any],
    dataset_id: str | None = None,
    manifest: Mapping[str, str] | None = None,
    check_size: bool = True,
) -> dict[str, Any]:
    """The input every compiled state machine expects; missing pieces fail here, not mid-run, and
    so does an input over Step Functions' 256 KiB (long parameter values)."""
    # data sources are a Distributed Map of download Lambdas: no task definition
    missing = [
        p.id
        for p in workflow.processors
        if p.type is not ProcessorType.DATA_SOURCE and p.id not in task_definitions
    ]
    if missing:
        raise ValueError(f"no task definition for processor(s) {', '.join(missing)}")
    needed = {"cluster", "subnets", "securityGroups", "finalizeFunction"}
    if any(p.scatter for p in workflow.processors):
        needed.add("listBatchesFunction")
    has_source = any(p.type is ProcessorType.DATA_SOURCE for p in workflow.processors)
    if has_source:
        needed.add("downloadFunction")
        if not manifest or not {"bucket", "key"} <= set(manifest):
            raise ValueError("a workflow with a data source needs the run's manifest location {bucket, key}")
    absent = sorted(needed - set(node))
    if absent:
        raise ValueError(f"node settings missing: {', '.join(absent)}")
    payload = {
        "run": {
            "id": run_id,
            "datasetId": dataset_id or "",
            **({"manifest": dict(manifest)} if manifest else {}),
            "taskDefinitions": {state_key(pid): arn for pid, arn in sorted(task_definitions.items())},
            "tags": run_task_tags(workflow.name, run_id),
            "params": {
                state_key(p.id): {
                    k: params.get(p.id, {}).get(k, v) for k, v in sorted(p.default_params.items())
                }
                for p in workflow.processors
            },
        },
        "node": {
            **node,
            "network": {
                "AwsvpcConfiguration": {
                    "Subnets": list(node["subnets"]),
                    "SecurityGroups": list(node["securityGroups"]),
                    "AssignPublicIp": "DISABLED",
                }
            },
        },
    }
    size = len(_canonical(payload).encode())
    # the states add a failure and scatter listings to this input: leave them their budget
    room = limits.PAYLOAD_LIMIT - limits.FAILURE_BUDGET
    if check_size and size > room:
        raise ValueError(
            f"the run's execution input is {size:,} bytes; Step Functions allows 256 KiB "
            f"({limits.PAYLOAD_LIMIT:,} bytes) per state, less {limits.FAILURE_BUDGET:,} kept for a failure: "
            "shorten the parameter values"
        )
    return payload
