"""A run's cost estimate before it starts: shown by a dry run, checked against the node's per-run
ceiling (``runCostCeiling``). The estimate is the most the run can cost: every processor to its
timeout on every attempt its retry policy allows, and the dataset's bytes through the NAT and on EFS.
"""

from __future__ import annotations

from dataclasses import dataclass

from pennflow.api.errors import InvalidRequest, field_error
from pennflow.workflow.cost import PriceOverrides, RunCost, estimate_workflow, format_usd, price_table
from pennflow.workflow.definition import Workflow
from pennflow.workflow.gpu import DEFAULT_GPU_INSTANCE_TYPES


@dataclass(frozen=True)
class RunBudget:
    region: str | None = None
    prices: PriceOverrides | None = None
    ceiling_usd: float | None = None  # None: no ceiling
    gpu_instance_type: str = DEFAULT_GPU_INSTANCE_TYPES[0]  # what gpu tasks are priced at (the group's first)

    def estimate(self, workflow: Workflow, dataset_bytes: int) -> RunCost:
        return estimate_workflow(
            workflow,
            price_table(self.region, self.prices),
            dataset_bytes=dataset_bytes,
            gpu_instance_type=self.gpu_instance_type,
        )

    def check(self, estimate: RunCost) -> None:
        """Refuse (422 ``over_cost_ceiling``) a run whose estimate exceeds the ceiling, naming both."""
        if self.ceiling_usd is None or estimate.total_usd <= self.ceiling_usd:
            return
        raise InvalidRequest(
            f"the run's estimated cost, {format_usd(estimate.total_usd)} (every processor to its timeout on "
            f"every attempt), exceeds the node's per-run ceiling of {format_usd(self.ceiling_usd)}: shorten "
            "timeoutSeconds or retries, choose fewer files, or raise runCostCeiling",
            code="over_cost_ceiling",
            fields=[
                field_error(
                    "workflow",
                    f"estimate {format_usd(estimate.total_usd)} > ceiling {format_usd(self.ceiling_usd)}",
                )
            ],
        )
