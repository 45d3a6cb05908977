"""POST/GET /runs, cancel and rerun through the API Lambda (moto tables, fake hand-offs)."""

from __future__ import annotations

import pytest

from pennflow.workflow.runs import Status
from tests.integration import api_support
from tests.integration.api_support import ACCOUNT, Api, tiny
from tests.integration.aws_fixtures import REGION

api = api_support.api
mocked_aws = api_support.mocked_aws

EXECUTIONS = f"arn:aws:states:{REGION}:{ACCOUNT}:execution:pennflow-api_tiny"


@pytest.fixture
def node(api: Api) -> Api:
    api.register(tiny())
    return api


def test_starting_a_run_creates_it_hands_it_over_and_answers_202(node: Api) -> None:
    reply = node.start(
        datasetId="N:dataset:1234", packageIds=["N:package:1"], params={"WINDOW": "10"}, layers=["sci"]
    )

    assert reply.status == 202, reply.body
    run_id = reply.body["runId"]
    assert reply.body["status"] == "NOT_STARTED"
    assert reply.body["executionArn"] == f"{EXECUTIONS}:{run_id}"
    assert reply.body["consoleUrl"] == (
        f"https://{REGION}.console.aws.amazon.com/states/home?region={REGION}"
        f"#/v2/executions/details/{EXECUTIONS}:{run_id}"
    )
    assert node.launcher.run_ids == [run_id]
    stored = node.store.get_run(run_id)
    assert stored.status is Status.NOT_STARTED and stored.origin == "api"
    assert stored.dataset_id == "N:dataset:1234"
    assert stored.params == {"source": {}, "work": {"WINDOW": "10", "MODE": "fast"}, "target": {}}
    assert stored.layers == [{"name": "sci"}]
    assert [s.processor_id for s in node.store.list_steps(run_id)] == ["source", "work", "target"]


def test_params_may_name_the_processor(node: Api) -> None:
    reply = node.start(params={"work.MODE": "slow"})
    assert node.store.get_run(reply.body["runId"]).params["work"] == {"WINDOW": "30", "MODE": "slow"}


def test_an_unknown_param_is_400_naming_it_and_nothing_is_created(node: Api) -> None:
    reply = node.start(params={"WINDOWS": "10", "work.MODE": "x", "other.MODE": "y"})

    assert reply.status == 400
    assert reply.error["code"] == "unknown_param"
    assert reply.fields() == {("body", "params.WINDOWS"), ("body", "params.other.MODE")}
    assert node.launcher.run_ids == []
    assert node.store.list_runs().runs == []


def test_an_unknown_workflow_is_404(node: Api) -> None:
    reply = node.start("never-registered")
    assert reply.status == 404 and ("body", "workflow") in reply.fields()


def test_a_dry_run_returns_the_plan_and_starts_nothing(node: Api) -> None:
    reply = node.start(dryRun=True, params={"MODE": "slow"})

    assert reply.status == 200
    assert reply.body["dryRun"] is True
    assert reply.body["params"]["work"] == {"WINDOW": "30", "MODE": "slow"}
    assert "series-parallel" in reply.body["plan"] and "work" in reply.body["plan"]
    assert node.launcher.run_ids == [] and node.store.list_runs().runs == []


def test_a_failed_hand_over_fails_the_run_and_answers_503(node: Api) -> None:
    node.launcher.fail_with = RuntimeError("Rate exceeded")
    reply = node.start()

    assert reply.status == 503 and reply.error["code"] == "unavailable"
    (run,) = node.store.list_runs().runs
    assert run.status is Status.FAILED and "Rate exceeded" in run.reason


def test_get_run_shows_each_processor(node: Api) -> None:
    run_id = node.start().body["runId"]
    node.store.update_run(run_id, Status.STARTED)
    node.store.update_step(run_id, "source", Status.STARTED)
    node.store.update_step(run_id, "source", Status.SUCCEEDED, exit_code=0)

    reply = node("GET", f"/runs/{run_id}")

    assert reply.status == 200
    assert reply.body["status"] == "STARTED"
    assert reply.body["consoleUrl"].endswith(f"{EXECUTIONS}:{run_id}")
    assert [(s["processorId"], s["status"]) for s in reply.body["steps"]] == [
        ("source", "SUCCEEDED"),
        ("work", "NOT_STARTED"),
        ("target", "NOT_STARTED"),
    ]
    assert reply.body["steps"][0]["exitCode"] == 0


def test_a_missing_run_is_404_and_a_malformed_id_422(node: Api) -> None:
    missing = node("GET", "/runs/r-nothing-00000000")
    malformed = node("GET", "/runs/" + "x" * 81)

    assert missing.status == 404 and ("path", "run_id") in missing.fields()
    assert malformed.status == 422 and ("path", "run_id") in malformed.fields()


def test_list_runs_filters_and_pages_newest_first(node: Api) -> None:
    node.register(tiny("other"))
    ids = [node.start().body["runId"] for _ in range(5)]
    node.start("other")
    node.store.update_run(ids[0], Status.STARTED)

    first = node("GET", "/runs", query={"workflow": "tiny", "limit": "2"})
    second = node("GET", "/runs", query={"workflow": "tiny", "limit": "2", "cursor": first.body["cursor"]})
    started = node("GET", "/runs", query={"status": "STARTED"})
    everything = node("GET", "/runs")

    assert first.status == second.status == 200
    assert [r["runId"] for r in first.body["runs"] + second.body["runs"]] == ids[::-1][:4]
    assert [r["runId"] for r in started.body["runs"]] == [ids[0]]
    assert len(everything.body["runs"]) == 6 and everything.body["cursor"] is None


def test_cancel_hands_the_run_to_the_canceller(node: Api) -> None:
    run_id = node.start().body["runId"]

    reply = node("POST", f"/runs/{run_id}/cancel", body={})  # the CLI sends {} (the stage validates bodies)

    assert reply.status == 202
    assert reply.body == {"runId": run_id, "status": "CANCELING"}
    assert node.canceller.run_ids == [run_id]


def test_cancelling_a_finished_run_is_409_and_a_missing_one_404(node: Api) -> None:
    run_id = node.start().body["runId"]
    node.store.update_run(run_id, Status.STARTED)
    node.store.update_run(run_id, Status.SUCCEEDED)

    finished = node("POST", f"/runs/{run_id}/cancel")
    missing = node("POST", "/runs/r-none-00000000/cancel")

    assert finished.status == 409 and "SUCCEEDED" in finished.error["message"]
    assert missing.status == 404
    assert node.canceller.run_ids == []


def test_rerun_copies_the_configuration_of_the_original(node: Api) -> None:
    original = node.start(datasetId="N:dataset:77", params={"MODE": "slow"}, layers=["sci"]).body["runId"]

    reply = node("POST", f"/runs/{original}/rerun", body={})

    assert reply.status == 202
    assert reply.body["rerunOf"] == original
    rerun_id = reply.body["runId"]
    assert rerun_id != original
    assert node.launcher.run_ids == [original, rerun_id]
    before, after = node.store.get_run(original), node.store.get_run(rerun_id)
    for field in ("workflow", "definition_hash", "dataset_id", "params", "layers"):
        assert getattr(after, field) == getattr(before, field), field
    assert after.status is Status.NOT_STARTED


def test_rerun_keeps_the_original_definition_after_the_workflow_changed(node: Api) -> None:
    original = node.start().body["runId"]
    node.register(tiny(cpu=2048, memory=4096))

    rerun_id = node("POST", f"/runs/{original}/rerun").body["runId"]
    fresh_id = node.start().body["runId"]

    original_hash = node.store.get_run(original).definition_hash
    assert node.store.get_run(rerun_id).definition_hash == original_hash
    assert node.store.get_run(fresh_id).definition_hash != original_hash


def test_rerun_of_a_missing_run_is_404(node: Api) -> None:
    assert node("POST", "/runs/r-none-00000000/rerun").status == 404


def test_a_workflow_of_more_processors_than_one_store_transaction_holds_starts(api: Api) -> None:
    definition = tiny("wide")
    work = definition["processors"][1]
    definition["processors"][1:2] = [{**work, "id": f"work-{i}"} for i in range(100)]
    definition["processors"][-1]["dependsOn"] = [f"work-{i}" for i in range(100)]
    api.register(definition)

    reply = api.start("wide")

    assert reply.status == 202, reply.body
    assert api.launcher.run_ids == [reply.body["runId"]]
    assert len(api.store.list_steps(reply.body["runId"])) == 102  # source, 100 workers, target
