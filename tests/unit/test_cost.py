"""The cost formula, checked against sums worked by hand at us-east-1 list prices."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from pennflow.workflow.cost import (
    Architecture,
    LambdaUsage,
    PriceOverrides,
    RunUsage,
    TaskUsage,
    estimate_workflow,
    estimated_transitions,
    fargate_billed_seconds,
    format_usd,
    price_table,
    run_cost,
)
from pennflow.workflow.definition import load_definition

US = price_table("us-east-1")
EXAMPLE = Path(__file__).parents[2] / "workflows" / "eeg-quality.yaml"


def test_fargate_bills_per_second_with_a_one_minute_minimum():
    assert fargate_billed_seconds(0.4) == 60
    assert fargate_billed_seconds(59.99) == 60
    assert fargate_billed_seconds(60.01) == 61
    assert fargate_billed_seconds(3600) == 3600


def test_one_task_of_two_vcpu_and_four_gb_for_half_an_hour():
    # 2 vCPU x 0.5 h x $0.04048 = $0.04048; 4 GB x 0.5 h x $0.004445 = $0.00889
    cost = run_cost(RunUsage(tasks=[TaskUsage("p", 2048, 4096, 1800)]), US)
    by_item = cost.by_item()
    assert by_item["fargate-vcpu"] == pytest.approx(0.04048)
    assert by_item["fargate-memory"] == pytest.approx(0.00889)
    assert cost.total_usd == pytest.approx(0.04937)
    assert cost.by_processor() == {"p": pytest.approx(0.04937)}


def test_a_ten_second_task_is_billed_a_minute():
    # 0.25 vCPU x 60 s / 3600 x $0.04048 = $0.000168667; 0.5 GB x 60/3600 x $0.004445 = $0.0000370417
    cost = run_cost(RunUsage(tasks=[TaskUsage("p", 256, 512, 10)]), US)
    assert cost.total_usd == pytest.approx(0.000168667 + 0.0000370417, abs=1e-8)


def test_arm_tasks_use_the_arm_prices():
    # 1 vCPU x 1 h x $0.03238 + 2 GB x 1 h x $0.00356 = $0.0395
    cost = run_cost(RunUsage(tasks=[TaskUsage("p", 1024, 2048, 3600, Architecture.ARM64)]), US)
    assert cost.total_usd == pytest.approx(0.0395)
    assert "arm64" in cost.lines[0].description


def test_lambda_step_functions_nat_and_efs_lines():
    usage = RunUsage(
        # 1 GB x 100 s x $0.0000133334 = $0.00133334; 40 requests x $0.20/1e6 = $0.000008
        lambdas=[LambdaUsage("download", 40, 1024, 100.0)],
        state_transitions=2000,  # 2 x $0.025 = $0.05
        nat_bytes=10 * 1024**3,  # 10 GB x $0.045 = $0.45
        efs_bytes=73 * 1024**3,  # 73 GB for 10 hours: 73 x 10/730 = 1 GB-month x $0.30
        efs_seconds=36_000,
    )
    by_item = run_cost(usage, US).by_item()
    assert by_item["lambda-duration"] == pytest.approx(0.00133334)
    assert by_item["lambda-requests"] == pytest.approx(0.000008)
    assert by_item["state-transitions"] == pytest.approx(0.05)
    assert by_item["nat-processed"] == pytest.approx(0.45)
    assert by_item["efs-storage"] == pytest.approx(0.30)


def test_overrides_replace_only_the_prices_they_name():
    table = price_table("us-east-1", {"natGbProcessed": 0.1})
    assert table.prices.nat_gb_processed == 0.1
    assert table.prices.efs_gb_month == US.prices.efs_gb_month
    assert table.overridden == ("nat_gb_processed",)
    cost = run_cost(RunUsage(nat_bytes=1024**3), table)
    assert cost.total_usd == pytest.approx(0.1)
    assert cost.overridden == ["nat_gb_processed"]


def test_a_region_without_list_prices_says_so():
    table = price_table("ap-south-2")
    assert not table.listed
    assert table.prices == US.prices
    assert run_cost(RunUsage(), table).list_prices is False


def test_overrides_are_validated():
    with pytest.raises(ValidationError, match="greater than or equal to 0"):
        PriceOverrides.model_validate({"efsGbMonth": -1})
    with pytest.raises(ValidationError, match="Extra inputs"):
        PriceOverrides.model_validate({"gpuHour": 1})


def test_the_worst_case_estimate_runs_every_attempt_to_its_timeout():
    workflow = load_definition(EXAMPLE)
    cost = estimate_workflow(workflow, US)
    assert cost.estimate
    per = cost.by_processor()
    # convert: 0.5 vCPU, 1 GB, 86,400 s timeout, 3 attempts: 3 x 24 h x (0.5 x 0.04048 + 1 x 0.004445)
    assert per["convert"] == pytest.approx(3 * 24 * (0.5 * 0.04048 + 0.004445))
    # bandpower: 1 vCPU, 2 GB, 1 h, 1 attempt
    assert per["bandpower"] == pytest.approx(0.04048 + 2 * 0.004445)
    assert "recordings" not in per  # a data source is Lambda downloads, not a task


def test_measured_seconds_and_dataset_bytes():
    workflow = load_definition(EXAMPLE)
    seconds = {"convert": [5.0], "bandpower": [70.0], "quality": [3.0], "report": [1.0], "results": [2.0]}
    cost = estimate_workflow(workflow, US, seconds=seconds, dataset_bytes=1024**3)
    per = cost.by_processor()
    assert per["bandpower"] == pytest.approx(70 / 3600 * (0.04048 + 2 * 0.004445))
    assert per["report"] == pytest.approx(60 / 3600 * (0.25 * 0.04048 + 0.5 * 0.004445), abs=1e-9)
    assert cost.by_item()["nat-processed"] == pytest.approx(0.045)


def test_transitions_of_the_example():
    # wrapper + finalize + succeed, 6 processors (data source: map + verify = 2) -> 7, one Parallel
    assert estimated_transitions(load_definition(EXAMPLE)) == 3 + 7 + 1


def test_amounts_are_readable():
    assert format_usd(0) == "$0.00"
    assert format_usd(0.000123) == "$0.00012"
    assert format_usd(0.04048) == "$0.0405"
    assert format_usd(12.345) == "$12.35"


def test_the_function_sizes_priced_are_the_stack_s():
    from pennflow.workflow import cost
    from stacks import constants

    assert constants.LAMBDA_MEMORY_OVERRIDES_MB["download"] == cost.DOWNLOAD_FUNCTION_MB
    assert constants.LAMBDA_MEMORY_MB == cost.LIFECYCLE_FUNCTION_MB


LAMBDA_WORKFLOW = """
name: quick
processors:
  - id: prep
    image: prep:1
    cpu: 1024
    memory: 2048
  - id: thumbs
    image: thumbs:1
    computeType: lambda
    memory: 1769
    timeoutSeconds: 600
    retry: {maxAttempts: 1}
    dependsOn: [prep]
  - id: joined
    image: joined:1
    computeType: lambda
    memory: 2048
    dependsOn: [prep, thumbs]
"""


def _lambda_workflow(tmp_path: Path):
    path = tmp_path / "quick.yaml"
    path.write_text(LAMBDA_WORKFLOW)
    return load_definition(path)


def test_a_lambda_processor_is_priced_as_lambda_gb_seconds_and_requests_not_as_a_fargate_task(tmp_path):
    workflow = _lambda_workflow(tmp_path)
    cost = estimate_workflow(workflow, US, seconds={"prep": [60.0], "thumbs": [12.5, 7.5], "joined": [60.0]})
    thumbs = [line for line in cost.lines if line.processor_id == "thumbs"]
    assert sorted(line.item for line in thumbs) == ["lambda-duration", "lambda-requests"]
    duration = next(line for line in thumbs if line.item == "lambda-duration")
    # x86_64 (the function's architecture): 1769 MB x 20 s, and two requests
    assert duration.quantity == pytest.approx(1769 / 1024 * 20.0)
    assert duration.unit_price == US.prices.lambda_gb_second_x86
    assert cost.by_processor()["thumbs"] == pytest.approx(1769 / 1024 * 20.0 * 0.0000166667 + 2 * 0.20 / 1e6)
    # As a Fargate task of its vCPU share (1 vCPU, 2 GB) each attempt would be billed a whole minute.
    assert cost.by_processor()["thumbs"] < 2 * 60 / 3600 * (1 * 0.04048 + 2 * 0.004445)
    assert not any(line.item.startswith("fargate") for line in thumbs)
    # A fan-in cannot run as a function (limits.lambda_fallback): it is still a Fargate task.
    assert {line.item for line in cost.lines if line.processor_id == "joined"} <= {
        "fargate-vcpu",
        "fargate-memory",
    }
    assert "fargate-vcpu" in {line.item for line in cost.lines if line.processor_id == "joined"}


def test_the_worst_case_of_a_lambda_processor_is_every_attempt_to_its_timeout(tmp_path):
    cost = estimate_workflow(_lambda_workflow(tmp_path), US)
    lines = {line.item: line for line in cost.lines if line.processor_id == "thumbs"}
    assert lines["lambda-duration"].quantity == pytest.approx(1769 / 1024 * 600 * 2)
    assert lines["lambda-requests"].quantity == pytest.approx(2 / 1e6)


def test_measured_and_estimated_processor_functions_are_priced_alike():
    from pennflow.workflow.cost import PROCESSOR_FUNCTION, processor_function_usage

    usage = processor_function_usage("thumbs", 3, 1024, 30.0)
    assert usage.function == PROCESSOR_FUNCTION + "thumbs" and usage.architecture is Architecture.X86_64
    cost = run_cost(RunUsage(lambdas=[usage]), US)
    assert cost.by_processor() == {"thumbs": pytest.approx(30.0 * 0.0000166667 + 3 * 0.20 / 1e6)}
