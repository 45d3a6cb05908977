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


def _with_ceiling(monkeypatch, usd: str) -> None:
    from lambdas import api as module

    monkeypatch.setenv("RUN_COST_CEILING_USD", usd)
    api_support.forget_ports(module)


# tiny: work and target at 1 vCPU / 2 GB to the default 24 h timeout, once each
WORST_CASE = 2 * 24 * (0.04048 + 2 * 0.004445)


def test_a_dry_run_shows_the_worst_case_estimate(node: Api) -> None:
    reply = node.start(dryRun=True)
    assert reply.status == 200, reply.body
    estimate = reply.body["costEstimate"]
    assert estimate["estimate"] is True
    assert estimate["totalUsd"] == pytest.approx(WORST_CASE, rel=1e-3)  # + a few transitions and the finalize


def test_a_run_over_the_ceiling_is_refused_naming_the_estimate_and_the_ceiling(
    node: Api, monkeypatch
) -> None:
    _with_ceiling(monkeypatch, "0.5")
    reply = node.start()
    assert reply.status == 422, reply.body
    assert reply.error["code"] == "over_cost_ceiling"
    assert f"${WORST_CASE:.2f}" in reply.error["message"] and "$0.5000" in reply.error["message"]
    assert node.store.list_runs().runs == [] and node.launcher.run_ids == []
    assert node.start(dryRun=True).status == 200  # a dry run still shows what it would cost


def test_a_run_under_the_ceiling_starts(node: Api, monkeypatch) -> None:
    _with_ceiling(monkeypatch, "10")
    assert node.start().status == 202


def test_a_rerun_over_the_ceiling_is_refused_too(node: Api, monkeypatch) -> None:
    run_id = node.start().body["runId"]  # started before the node had a ceiling
    _with_ceiling(monkeypatch, "0.5")
    reply = node("POST", f"/runs/{run_id}/rerun")
    assert reply.status == 422, reply.body
    assert reply.error["code"] == "over_cost_ceiling"
    assert [run.run_id for run in node.store.list_runs().runs] == [run_id]
