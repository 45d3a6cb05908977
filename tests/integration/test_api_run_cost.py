"""GET /runs/{id} carries the run's itemised cost once finalize has measured it."""

from __future__ import annotations

import pytest

from pennflow.workflow.cost import RunUsage, TaskUsage, price_table, run_cost
from pennflow.workflow.runs import Status
from tests.integration import api_support
from tests.integration.api_support import Api, tiny

api = api_support.api
mocked_aws = api_support.mocked_aws


@pytest.fixture
def node(api: Api) -> Api:
    api.register(tiny())
    return api


def test_the_cost_is_null_until_measured_then_itemised(node: Api) -> None:
    run_id = node.start().body["runId"]
    assert node("GET", f"/runs/{run_id}").body["cost"] is None

    measured = run_cost(RunUsage(tasks=[TaskUsage("work", 1024, 2048, 3600)]), price_table("us-east-1"))
    node.store.update_run(run_id, Status.FAILED, cost=measured.model_dump(mode="json", by_alias=True))
    body = node("GET", f"/runs/{run_id}").body

    assert body["cost"]["totalUsd"] == pytest.approx(0.04048 + 2 * 0.004445)
    assert body["cost"]["currency"] == "USD" and body["cost"]["pricesAsOf"]
    assert [(line["item"], line["processorId"]) for line in body["cost"]["lines"]] == [
        ("fargate-vcpu", "work"),
        ("fargate-memory", "work"),
    ]
