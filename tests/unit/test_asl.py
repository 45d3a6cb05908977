"""The compiler: DESIGN §5 shape, determinism, the asl-validator gate, and order checked by running the ASL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pennflow.workflow.asl import (
    ECS_RUN_TASK_SYNC,
    FINALIZE_OK,
    SUCCEEDED,
    WORKFLOW_STATE,
    CompileError,
    compile_to_json,
    compile_workflow,
    execution_input,
    override_problems,
)
from pennflow.workflow.dag import Dag, simulate
from pennflow.workflow.definition import load_definition, validate_definition
from pennflow.workflow.limits import DEFINITION_LIMIT
from tests.asl_run import run_asl
from tests.dag_strategies import random_dags, random_durations, series_parallel_dags, workflow_from_dag
from tests.gates.asl import assert_valid_asl, validate_asl

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "definitions"
CONTROL_STATES = {"Finalize run", "Run succeeded"}


def all_states(machine: dict) -> dict[str, dict]:
    """Every state, nested ones included (names are unique across the whole machine)."""
    found: dict[str, dict] = {}
    for name, state in machine["States"].items():
        assert name not in found, f"duplicate state name {name}"
        found[name] = state
        for branch in state.get("Branches", []):
            found.update(all_states(branch))
        if "ItemProcessor" in state:
            found.update(all_states(state["ItemProcessor"]))
    return found


def node_states(asl: dict, dag: Dag) -> dict[str, dict]:
    states = all_states(asl)
    return {n: states[n] for n in dag.nodes}


def test_example_compiles_to_the_design_shape():
    workflow = load_definition(FIXTURES / "diamond.yaml")
    asl = compile_workflow(workflow)
    states = all_states(asl)
    assert asl["StartAt"] == WORKFLOW_STATE
    assert asl["States"][WORKFLOW_STATE]["Branches"][0]["StartAt"] == "recordings"
    # the data source: a Distributed Map over the run's manifest, a download Lambda per batch
    source = states["recordings"]
    assert source["Type"] == "Map"
    assert source["ItemProcessor"]["ProcessorConfig"]["Mode"] == "DISTRIBUTED"
    assert source["ItemReader"]["Parameters"] == {
        "Bucket.$": "$.run.manifest.bucket",
        "Key.$": "$.run.manifest.key",
    }
    assert source["ItemSelector"]["outputDir"] == "/mnt/run/recordings/output"
    assert source["ItemSelector"]["batch.$"] == "$$.Map.Item.Value"
    assert states["recordings download"]["Parameters"]["FunctionName.$"] == "$.function"
    assert states["recordings verify"]["Parameters"]["Payload"]["action"] == "verify"
    for node in ("convert", "quality", "report", "results"):
        assert states[node]["Resource"] == ECS_RUN_TASK_SYNC
        params = states[node]["Parameters"]
        assert params["Cluster.$"] == "$.node.cluster"
        assert params["NetworkConfiguration.$"] == "$.node.network"
        assert params["TaskDefinition.$"].startswith("$.run.taskDefinitions.")
    # scatter -> a Map named by the id, with a batch task inside
    assert states["band-power"]["Type"] == "Map"
    assert states["band-power batch"]["Resource"] == ECS_RUN_TASK_SYNC
    # ... run as child executions over the batch list the listing wrote to S3
    scatter = states["band-power"]
    assert scatter["ItemProcessor"]["ProcessorConfig"]["Mode"] == "DISTRIBUTED"
    assert scatter["ItemReader"]["Parameters"] == {
        "Bucket.$": "$.scatter.band_power.bucket",
        "Key.$": "$.scatter.band_power.key",
    }
    assert states["band-power batches"]["ResultSelector"] == {
        "bucket.$": "$.Payload.bucket",
        "key.$": "$.Payload.key",
        "count.$": "$.Payload.count",
    }
    # no Distributed Map hands its items' results back: they go to the run's prefix in S3
    for name in ("band-power", "recordings"):
        writer = states[name]["ResultWriter"]
        assert writer["Resource"] == "arn:aws:states:::s3:putObject"
        assert writer["Parameters"]["Prefix.$"] == f"States.Format('runs/{{}}/{name}/map-results', $.run.id)"
    # ids and params travel as environment overrides
    env = states["convert"]["Parameters"]["Overrides"]["ContainerOverrides"][0]["Environment"]
    by_name = {e["Name"]: e for e in env}
    assert by_name["PROCESSOR_ID"]["Value"] == "convert"
    assert by_name["RUN_ID"]["Value.$"] == "$.run.id"
    assert by_name["FORMAT"]["Value.$"] == "$.run.params.convert.FORMAT"
    assert by_name["INPUT_DIR"]["Value"] == "/mnt/run/recordings/output"
    report_env = {
        e["Name"]: e
        for e in states["report"]["Parameters"]["Overrides"]["ContainerOverrides"][0]["Environment"]
    }
    assert report_env["INPUT_DIR"]["Value"] == "/mnt/run/report/input"
    assert report_env["INPUT_DIR_BAND_POWER"]["Value"] == "/mnt/run/band-power/output"
    quality_env = {
        e["Name"]: e
        for e in states["quality"]["Parameters"]["Overrides"]["ContainerOverrides"][0]["Environment"]
    }
    assert quality_env["LAYER_SCIENTIFIC_STACK_DIR"]["Value"] == "/mnt/layers/scientific-stack"
    assert "PYTHONPATH" not in quality_env, "the task definition sets it for every mounted layer"
    # retry and timeout from the definition
    # the infrastructure retrier comes first: Step Functions uses the first that matches, and
    # States.TaskFailed also matches ECS.AmazonECSException
    infra, retry = states["convert"]["Retry"]
    assert infra["ErrorEquals"] == ["ECS.AmazonECSException"]
    assert retry == {
        "ErrorEquals": ["States.TaskFailed"],
        "IntervalSeconds": 5,
        "MaxAttempts": 2,
        "BackoffRate": 1.5,
    }
    assert states["convert"]["TimeoutSeconds"] == 600
    # No Catch anywhere: a processor's failure fails the execution at the processor's own state (what a
    # redrive runs again); the status tracker finalizes the run from the execution's FAILED event.
    assert set(asl["States"]) == CONTROL_STATES | {WORKFLOW_STATE}
    assert not any("Catch" in state for state in states.values())
    assert asl["States"][WORKFLOW_STATE]["Next"] == FINALIZE_OK
    assert asl["States"][FINALIZE_OK]["Next"] == SUCCEEDED
    assert not any(state["Type"] == "Fail" for state in states.values())
    assert_valid_asl(asl)


def test_nothing_account_specific_is_hard_coded():
    text = compile_to_json(load_definition(FIXTURES / "diamond.yaml"))
    for fragment in ("arn:aws:ecs", "arn:aws:lambda", "subnet-", "sg-", "dkr.ecr"):
        assert fragment not in text


def test_compilation_is_deterministic_to_the_byte():
    a = compile_to_json(load_definition(FIXTURES / "diamond.yaml"))
    b = compile_to_json(load_definition(FIXTURES / "diamond.yaml"))
    assert a == b
    assert json.loads(a) == compile_workflow(load_definition(FIXTURES / "diamond.yaml"))


def test_pennsieve_definition_compiles_and_validates():
    assert_valid_asl(compile_workflow(load_definition(FIXTURES / "pennsieve-workflow.json")))


def test_gate_rejects_a_broken_definition():
    """The gate itself can fail."""
    errors = validate_asl([{"StartAt": "x", "States": {"x": {"Type": "Pass", "Next": "nowhere"}}}])
    assert errors[0]


def test_override_limit_is_checked_at_compile_time():
    params = {f"P{i}": "v" * 150 for i in range(60)}
    data = {
        "name": "big",
        "processors": [
            {"id": "s", "type": "data-source"},
            {"id": "a", "image": "i", "dependsOn": ["s"], "defaultParams": params},
        ],
    }
    with pytest.raises(CompileError, match="'a'.*8192"):
        compile_workflow(validate_definition(data))


def test_each_param_counts_its_own_length_not_a_fixed_budget():
    """Three 4,096-character params are over ECS's 8,192 limit at compile time, and so are long run values."""

    def workflow(value: str):
        return validate_definition(
            {
                "name": "long",
                "processors": [
                    {"id": "a", "image": "i", "defaultParams": {f"P{i}": value for i in range(3)}},
                ],
            }
        )

    with pytest.raises(CompileError, match="'a'"):
        compile_workflow(workflow("v" * 4096))
    short = workflow("v")
    compile_workflow(short)
    assert override_problems(short, {"a": {"P0": "v"}}) == []
    problems = override_problems(short, {"a": {f"P{i}": "v" * 4096 for i in range(3)}})
    assert len(problems) == 1 and "8192" in problems[0]


def test_execution_input_shape_and_missing_pieces():
    workflow = load_definition(FIXTURES / "diamond.yaml")
    node = {
        "cluster": "c",
        "subnets": ["s"],
        "securityGroups": ["g"],
        "finalizeFunction": "f",
        "listBatchesFunction": "l",
        "downloadFunction": "d",
    }
    manifest = {"bucket": "b", "key": "runs/r-1/manifest.json"}
    tds = {p.id: f"td-{p.id}" for p in workflow.processors}
    data = execution_input(
        workflow,
        run_id="r-1",
        task_definitions=tds,
        params={"convert": {"FORMAT": "csv"}},
        node=node,
        manifest=manifest,
    )
    assert data["run"]["taskDefinitions"]["band_power"] == "td-band-power"
    assert data["run"]["params"]["convert"] == {"FORMAT": "csv"}
    assert data["run"]["datasetId"] == ""
    assert data["run"]["manifest"] == manifest
    assert data["node"]["network"]["AwsvpcConfiguration"] == {
        "Subnets": ["s"],
        "SecurityGroups": ["g"],
        "AssignPublicIp": "DISABLED",
    }
    with pytest.raises(ValueError, match="no task definition for processor"):
        execution_input(workflow, run_id="r", task_definitions={}, params={}, node=node, manifest=manifest)
    with pytest.raises(ValueError, match="manifest location"):
        execution_input(workflow, run_id="r", task_definitions=tds, params={}, node=node)
    for missing in ("listBatchesFunction", "downloadFunction"):
        with pytest.raises(ValueError, match=missing):
            execution_input(
                workflow,
                run_id="r",
                task_definitions=tds,
                params={},
                node={k: v for k, v in node.items() if k != missing},
                manifest=manifest,
            )


def test_thousand_node_dag_is_under_step_functions_definition_limit():
    import random

    rng = random.Random(5)
    nodes = [f"p{i}" for i in range(1000)]
    edges = sorted({(nodes[rng.randrange(j)], nodes[j]) for j in range(1, 1000) for _ in range(2)})
    text = compile_to_json(workflow_from_dag(Dag.from_edges(nodes, edges)))
    assert len(text.encode()) < DEFINITION_LIMIT
    assert_valid_asl(json.loads(text))


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(
    st.lists(
        st.tuples(random_dags(max_nodes=18) | series_parallel_dags(), st.integers(0, 1000)),
        min_size=3,
        max_size=3,
    )
)
def test_generated_dags_compile_to_valid_asl_in_dependency_order(cases):
    compiled = []
    for dag, seed in cases:
        workflow = workflow_from_dag(dag)
        asl = compile_workflow(workflow)
        compiled.append(asl)
        states = all_states(asl)
        assert set(dag.nodes) <= set(states), "every node is a state named by its id"
        assert sum(1 for name in states if name in dag.nodes) == len(dag.nodes)
        durations = random_durations(dag, seed)
        makespan, times = run_asl(asl, durations)
        assert set(times) == set(dag.nodes), "every node runs exactly once"
        for node in dag.nodes:
            for dep in dag.deps[node]:
                assert times[dep][1] <= times[node][0] + 1e-9
        # joins keep every edge and make nobody wait for more: exactly the critical path
        assert makespan == pytest.approx(dag.critical_path(durations))
        assert makespan <= simulate(dag.kahn_plan(), durations) + 1e-9
    for errors in validate_asl(compiled):
        assert not errors


def test_series_parallel_workflows_compile_to_the_same_bytes_as_before_joins():
    from tests.sp_golden import GOLDEN, compiled_hashes

    assert compiled_hashes() == json.loads(GOLDEN.read_text())


@settings(max_examples=60, deadline=None)
@given(series_parallel_dags())
def test_series_parallel_dags_compile_with_no_join_state(dag):
    asl = compile_workflow(workflow_from_dag(dag))
    assert "series-parallel" in asl["Comment"]
    assert not [name for name in all_states(asl) if name.endswith((" waits", " done"))]
    assert "joinFunction" not in json.dumps(asl)
