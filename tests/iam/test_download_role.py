"""The download function, as the Distributed Map calls it, with the download role as synthesized."""

from __future__ import annotations

import pytest

from pennflow.datasource import write_run_manifest
from pennflow.pennsieve import build_manifest
from pennflow.slots import SlotPool
from tests.iam.moto_node import IamNode

pytest_plugins = ["tests.fakes.pennsieve_fixtures"]
pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")

SOURCE = "recordings"


def test_download_and_verify_batches(iam_node: IamNode, pennsieve, pennsieve_client):
    dataset = pennsieve.add_dataset("eeg")
    for i in range(2):
        dataset.add_package(f"rec-{i}.edf", [(f"rec-{i}.edf", 1024)])
    run_id = "run-download"
    env = iam_node.environment("pennflow-download")
    SlotPool(
        env["SLOTS_TABLE"], file_system_id=env["FILE_SYSTEM_ID"], slot_count=int(env["RUN_SLOTS"])
    ).lease(run_id)
    entries = build_manifest(pennsieve_client, dataset.node_id).entries
    location = write_run_manifest(run_id, entries, bucket=env["RESULTS_BUCKET"])
    event = {"runId": run_id, "processorId": SOURCE, "outputDir": f"/mnt/run/{SOURCE}/output"}
    from pennflow.datasource import read_run_manifest
    from pennflow.pennsieve import BATCHES

    batches = BATCHES.dump_python(read_run_manifest(location), mode="json")
    for batch in batches:
        iam_node.invoke("pennflow-download", {**event, "action": "download", "batch": batch})
    verified = iam_node.invoke(
        "pennflow-download", {**event, "action": "verify", "manifest": location.model_dump()}
    )
    assert verified["files"] == 2
