"""GPU instance types: the fit a registration checks, a task's share of an instance, and its price."""

from __future__ import annotations

import pytest

from pennflow.workflow.cost import (
    RunUsage,
    TaskUsage,
    estimate_workflow,
    price_table,
    run_cost,
    summary_lines,
)
from pennflow.workflow.definition import validate_definition
from pennflow.workflow.gpu import GPU_INSTANCES, fit_problem, instance, task_share


def test_every_instance_type_leaves_room_for_the_ecs_agent_and_has_a_gpu():
    for kind in GPU_INSTANCES.values():
        assert kind.gpus >= 1 and kind.usd_per_hour > 0
        assert kind.task_memory_mib == kind.memory_gib * 1024 - 1024


def test_a_task_fits_when_one_instance_type_holds_all_it_asks_for():
    types = ["g4dn.xlarge", "g4dn.12xlarge"]
    assert fit_problem("a", gpus=1, cpu=4096, memory=15360, instance_types=types) is None
    assert fit_problem("a", gpus=4, cpu=8192, memory=32768, instance_types=types) is None
    # 4 GPUs fit only the 12xlarge, 200 GiB fits neither
    problem = fit_problem("a", gpus=4, cpu=8192, memory=200 * 1024, instance_types=types)
    assert problem is not None and "asks for 4 GPU, 8192 cpu and 204800 MiB" in problem
    assert "g4dn.12xlarge (4 GPU, 49152 cpu, 195584 MiB for tasks)" in problem
    # the full 16 GiB of a g4dn.xlarge is not a task's: the agent keeps some
    assert fit_problem("a", gpus=1, cpu=1024, memory=16384, instance_types=["g4dn.xlarge"]) is not None


def test_an_unknown_type_is_named_with_the_known_ones():
    with pytest.raises(
        ValueError, match=r"'g9.huge' is not a GPU instance type pennflow knows: one of g4dn.xlarge"
    ):
        instance("g9.huge")


def test_a_task_is_charged_its_largest_share_of_the_instance():
    big = GPU_INSTANCES["g4dn.12xlarge"]  # 4 GPUs, 48 vCPUs
    assert task_share(big, gpus=1, cpu=1024, memory=2048) == pytest.approx(0.25)
    assert task_share(big, gpus=1, cpu=24 * 1024, memory=2048) == pytest.approx(0.5)
    assert task_share(GPU_INSTANCES["g4dn.xlarge"], gpus=1, cpu=1024, memory=2048) == 1.0


def test_gpu_time_is_priced_per_instance_hour_and_fargate_time_as_before():
    usage = RunUsage(
        tasks=[
            TaskUsage("infer", 4096, 15360, 1800.0, gpus=1, instance_type="g4dn.xlarge"),
            TaskUsage("infer", 4096, 15360, 10.0, gpus=1, instance_type="g4dn.xlarge"),  # one minute billed
            TaskUsage("prep", 1024, 2048, 3600.0),
        ]
    )
    cost = run_cost(usage, price_table("us-east-1"))
    (gpu,) = [line for line in cost.lines if line.item == "gpu-instance"]
    assert gpu.quantity == pytest.approx((1800 + 60) / 3600)
    assert gpu.unit_price == GPU_INSTANCES["g4dn.xlarge"].usd_per_hour
    assert gpu.usd == pytest.approx(1860 / 3600 * 0.526)
    assert "2 task(s), 1860 billed s on g4dn.xlarge (1 x NVIDIA T4)" in gpu.description
    fargate = {line.item for line in cost.lines if line.processor_id == "prep"}
    assert fargate == {"fargate-vcpu", "fargate-memory"}
    assert not any(line.processor_id == "infer" and line.item.startswith("fargate") for line in cost.lines)
    assert any("GPU instances at us-east-1 on-demand list prices" in note for note in cost.notes)
    assert "GPU instances" in summary_lines(cost)[1]


def test_another_region_says_its_gpu_prices_are_us_east_1s():
    usage = RunUsage(tasks=[TaskUsage("infer", 1024, 2048, 60.0, gpus=1)])
    assert (
        "no GPU instance prices for eu-west-1: us-east-1's used"
        in run_cost(usage, price_table("eu-west-1")).notes
    )


def test_an_estimate_prices_a_gpu_processor_at_the_nodes_first_instance_type():
    workflow = validate_definition(
        {
            "name": "wf",
            "processors": [
                {"id": "infer", "image": "i", "computeType": "gpu", "timeoutSeconds": 3600},
                {"id": "prep", "image": "i", "timeoutSeconds": 3600},
            ],
        }
    )
    cost = estimate_workflow(workflow, price_table("us-east-1"), gpu_instance_type="g5.xlarge")
    (gpu,) = [line for line in cost.lines if line.item == "gpu-instance"]
    assert (gpu.processor_id, gpu.quantity, gpu.unit_price) == ("infer", 1.0, 1.006)
    without = estimate_workflow(
        validate_definition(
            {"name": "wf", "processors": [{"id": "prep", "image": "i", "timeoutSeconds": 3600}]}
        ),
        price_table("us-east-1"),
    )
    assert not any("GPU" in note for note in without.notes)
