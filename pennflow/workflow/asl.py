"""Compiler: workflow definition -> Amazon States Language (a dict). Pure and deterministic.

Shape (DESIGN §5): each DAG node is one state named by its id; processors and built-ins are
``ecs:runTask.sync`` tasks, ``computeType: lambda`` processors ``lambda:invoke`` of the run slot's
function (:mod:`pennflow.workflow.asl_lambda`), a ``Map`` named by the id when scattered; the plan from
:mod:`pennflow.workflow.dag` becomes nested ``Parallel`` states, a block that is not
series-parallel one ``Parallel`` of paths with join states (:mod:`pennflow.workflow.asl_joins`).
Nothing catches a processor's failure: it fails the execution, and the status tracker finalizes the
run from the execution's FAILED event (:mod:`pennflow.node.tracking`), so the failed processor's own
state stays the execution's unsuccessful one, which a redrive runs again (:mod:`pennflow.node.redrive`).
Only ids and paths travel in the state: the execution input (see :func:`execution_input`) carries
the node's cluster, network and functions, the run's id, its task definitions and its resolved params.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pennflow.workflow import limits
from pennflow.workflow.asl_input import canonical as _canonical
from pennflow.workflow.asl_input import execution_input, largest_payload_estimate
from pennflow.workflow.asl_joins import done_state, wait_state, wait_timeouts
from pennflow.workflow.asl_lambda import is_lambda, lambda_task
from pennflow.workflow.asl_split import ARN_BUDGET, Part, split
from pennflow.workflow.asl_states import (
    CONTAINER_NAME,
    DEFAULT_PARTITION,
    DOWNLOAD_RETRY,
    DYNAMIC_VALUE_BUDGET,
    ECS_OVERRIDE_LIMIT,
    ECS_RUN_TASK_SYNC,
    FINALIZE_OK,
    INFRA_RETRY,
    LAMBDA_INVOKE,
    LAMBDA_RETRY,
    MAX_STATE_NAME,
    SUCCEEDED,
    WORKFLOW_STATE,
    CompileError,
    CompileOptions,
    Machine,
    State,
    integration_arn,
    launch_parameters,
)
from pennflow.workflow.contract import LAYERS_MOUNT, RUN_MOUNT, RunLayout, state_key, static_environment
from pennflow.workflow.cost_tags import RUN_TAGS_PATH
from pennflow.workflow.dag import (
    Dag,
    Decomposition,
    Joined,
    Parallel,
    Plan,
    Series,
    Step,
    decompose,
    plan_depth,
)
from pennflow.workflow.definition import Processor, ProcessorType, Workflow

__all__ = [
    "CONTAINER_NAME",
    "DEFAULT_PARTITION",
    "DOWNLOAD_RETRY",
    "DYNAMIC_VALUE_BUDGET",
    "ECS_OVERRIDE_LIMIT",
    "ECS_RUN_TASK_SYNC",
    "FINALIZE_OK",
    "INFRA_RETRY",
    "LAMBDA_INVOKE",
    "LAMBDA_RETRY",
    "MAX_STATE_NAME",
    "SUCCEEDED",
    "WORKFLOW_STATE",
    "CompileError",
    "CompileOptions",
    "Machine",
    "State",
    "CompiledMachines",
    "compile_machines",
    "compile_to_json",
    "compile_with_plan",
    "compile_workflow",
    "limit_problems",
    "execution_input",
    "integration_arn",
    "largest_payload_estimate",
    "override_problems",
]


# ------------------------------------------------------------------ compiler


def compile_workflow(workflow: Workflow, options: CompileOptions | None = None) -> dict[str, Any]:
    """The ASL definition; raises :class:`CompileError` naming the Step Functions limit a workflow
    would cross (definition size, history length, payload size), see :mod:`pennflow.workflow.limits`.

    A workflow split into child machines gives its parent here, naming each child by a placeholder:
    what deploys it needs :func:`compile_machines`."""
    return compile_machines(workflow, options).definition


@dataclass(frozen=True)
class CompiledMachines:
    """The workflow's state machine and its child machines (none unless it had to be split), each
    child's definition naming earlier children only, by :func:`asl_split.part_placeholder`."""

    definition: dict[str, Any]
    parts: tuple[Part, ...]
    decomposition: Decomposition

    def texts(self) -> tuple[str, list[str]]:
        """Canonical text of the parent and of each part (what is deployed, placeholders unfilled)."""
        return _canonical(self.definition), [_canonical(part.definition) for part in self.parts]


def compile_machines(workflow: Workflow, options: CompileOptions | None = None) -> CompiledMachines:
    """The plan always keeps its joins (makespan = critical path): a workflow whose one machine
    would pass the 1 MB definition or the 25,000-event history limit is split into child machines
    (:mod:`pennflow.workflow.asl_split`), each of them inside both limits. What no split helps (the
    256 KiB payload: every state carries the run's input) is refused first, before compiling."""
    problem = interactive_problem(workflow)
    if problem:
        raise CompileError(problem)
    problem = limits.payload_problem(largest_payload_estimate(workflow))
    if problem:
        raise CompileError(f"{len(workflow.processors):,} processors: {problem}")
    options = options or CompileOptions()
    decomposition = decompose(Dag.from_workflow(workflow))  # iterative: any depth
    definition = _Compiler(workflow, options, decomposition).compile()
    result = split(definition, options)
    problems = limit_problems(workflow, result.definition)
    for number, part in enumerate(result.parts, 1):
        problems += [f"child machine {number}: {p}" for p in _machine_problems(part.definition)]
    if problems:
        raise CompileError("; ".join(problems))
    return CompiledMachines(result.definition, tuple(result.parts), decomposition)


def compile_with_plan(
    workflow: Workflow, options: CompileOptions | None = None
) -> tuple[dict[str, Any], Decomposition]:
    """The (parent) definition and the plan it was compiled from."""
    compiled = compile_machines(workflow, options)
    return compiled.definition, compiled.decomposition


def interactive_problem(workflow: Workflow) -> str | None:
    """A notebook session waits for its user, which no state machine task does: it is refused here."""
    sessions = [p.id for p in workflow.processors if p.interactive]
    if not sessions:
        return None
    return (
        f"processor {sessions[0]!r} is interactive (a notebook session), which a state machine does not run: "
        "on a compute node a session is a notebook task, started when the node's `interactive` setting is on; "
        "run this workflow with `pennflow run` on this machine"
    )


def compile_to_json(workflow: Workflow, options: CompileOptions | None = None) -> str:
    """Canonical compact text (what is deployed): the same workflow always gives the same bytes."""
    return _canonical(compile_workflow(workflow, options))


def limit_problems(workflow: Workflow, definition: dict[str, Any]) -> list[str]:
    """Each Step Functions limit the compiled definition could cross, as a sentence naming it."""
    problems = _machine_problems(definition)
    problems.append(limits.payload_problem(largest_payload_estimate(workflow)))
    return [problem for problem in problems if problem]


def _machine_problems(definition: dict[str, Any]) -> list[str]:
    """The definition-size and history limits of one machine (parent or child)."""
    size = len(_canonical(definition).encode()) + _canonical(definition).count("${Part") * ARN_BUDGET
    problems = [limits.definition_size_problem(size)]
    try:
        parent, largest_child = limits.worst_case_history(definition)
    except ValueError as exc:
        raise CompileError(f"the run's history cannot be bounded: {exc}") from None
    problems.append(limits.history_problem(parent))
    problems.append(limits.history_problem(largest_child, "a Distributed Map item"))
    return [problem for problem in problems if problem]


class _Compiler:
    def __init__(
        self, workflow: Workflow, options: CompileOptions, decomposition: Decomposition | None = None
    ):
        self.workflow = workflow
        self.options = options
        self.layout = RunLayout(RUN_MOUNT)
        self.parallel_count = 0
        # Workflow.processor() searches the list: a map keeps 5,000 lookups linear
        self.processors = {processor.id: processor for processor in workflow.processors}
        self.decomposition = decomposition or decompose(Dag.from_workflow(workflow))
        problem = limits.plan_depth_problem(plan_depth(self.decomposition.plan))
        if problem:
            raise CompileError(problem)

    def compile(self) -> dict[str, Any]:
        # The whole DAG is one branch of a wrapper: the machine's one entry for it, whose input (the
        # run and node) goes on to the finalize state unchanged. No Catch: a Catch would make its
        # target the execution's failing state, and a redrive would run only that (node/redrive.py).
        workflow_branch = self._branch(self.decomposition.plan)
        top = Machine()
        top.add(State(WORKFLOW_STATE, "Parallel", Branches=[workflow_branch], ResultPath=None))
        top.add(_finalize_state(FINALIZE_OK, "SUCCEEDED", self.options.resource("lambda:invoke")))
        top.chain()
        top.states[-1].next(SUCCEEDED)
        top.add(State(SUCCEEDED, "Succeed"))
        if self.decomposition.is_series_parallel:
            kind = "series-parallel"
        elif self.decomposition.joins:
            kind = "joined (not series-parallel)"
        else:  # a plan built with level cuts (the previous compiler's, kept to compare)
            kind = "ordered (not series-parallel)"
        return {
            "Comment": f"{self.options.comment_prefix} {self.workflow.name} ({kind}); "
            f"definition {self.workflow.definition_hash()[:12]}",
            **top.render(),
        }

    def _states(self, plan: Plan) -> list[State]:
        """The states for one element of a sequence (a step, or a Parallel of branches)."""
        if isinstance(plan, Step):
            return self._step_states(self.processors[plan.id])
        if isinstance(plan, Parallel):
            self.parallel_count += 1
            name = f"Parallel {self.parallel_count}"  # numbered before the nested ones
            branches = [self._branch(b) for b in plan.branches]
            return [State(name, "Parallel", Branches=branches, ResultPath=None)]
        if isinstance(plan, Joined):
            return [self._joined(plan)]
        return [state for part in plan.parts for state in self._states(part)]

    def _joined(self, block: Joined) -> State:
        """One branch per path; a node waits before it runs for its dependencies on other paths and
        signals after it ends when another path waits for it (see :mod:`pennflow.workflow.asl_joins`)."""
        self.parallel_count += 1
        name = f"Paths {self.parallel_count}"
        waits = {join.node: join.deps for join in block.joins}
        signals = block.signals()
        timeouts = wait_timeouts(block, self.processors)
        branches = []
        for path in block.paths:
            machine = Machine()
            for index, node in enumerate(path):
                before = path[index - 1] if index else None
                if node in waits:
                    signal = (before, signals[before]) if before in signals else None
                    machine.add(wait_state(node, waits[node], timeouts[node], self.options, signal))
                elif before in signals:
                    machine.add(done_state(before, signals[before], self.options))
                for state in self._step_states(self.processors[node]):
                    machine.add(state)
            if path[-1] in signals:
                machine.add(done_state(path[-1], signals[path[-1]], self.options))
            branches.append(machine.render_branch())
        return State(name, "Parallel", Branches=branches, ResultPath=None)

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
        if is_lambda(processor):  # computeType lambda: the slot's function (asl_lambda)
            env = self._environment(processor, batch)
            return lambda_task(name, processor, env, self.options, _processor_retry(processor))
        key = state_key(processor.id)
        parameters = {
            "Cluster.$": "$.node.cluster",
            **launch_parameters(processor),
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
        return state.retry(INFRA_RETRY, *_processor_retry(processor))

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


def _processor_retry(processor: Processor) -> list[dict[str, Any]]:
    """The processor's own retry policy, after the infrastructure's retriers."""
    if not (processor.retry and processor.retry.max_attempts):
        return []
    return [
        {
            "ErrorEquals": ["States.TaskFailed"],
            "IntervalSeconds": processor.retry.interval_seconds,
            "MaxAttempts": processor.retry.max_attempts,
            "BackoffRate": processor.retry.backoff_rate,
        }
    ]


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


def _finalize_state(name: str, outcome: str, resource: str) -> State:
    parameters = {
        "FunctionName.$": "$.node.finalizeFunction",
        "Payload": {"runId.$": "$.run.id", "outcome": outcome},
    }
    return State(name, "Task", Resource=resource, Parameters=parameters, ResultPath=None).retry(LAMBDA_RETRY)


def override_problems(workflow: Workflow, params: Mapping[str, Mapping[str, str]]) -> list[str]:
    """The ECS override check with a run's actual param values (POST /runs), not the defaults."""
    problems = []
    compiler = _Compiler(workflow, CompileOptions(), Decomposition(Series(()), ()))  # no plan needed
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
