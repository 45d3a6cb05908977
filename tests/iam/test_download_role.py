"""The download function, as the Distributed Map calls it, with the download role as synthesized."""

from __future__ import annotations

import pytest

from tests.iam.lifecycle import download_batches, slot_of
from tests.iam.moto_node import IamNode

pytest_plugins = ["tests.fakes.pennsieve_fixtures"]
pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")


def test_every_batch_downloads_and_verify_checks_the_files(iam_node: IamNode, pennsieve, pennsieve_client):
    dataset = pennsieve.add_dataset("eeg")
    for i in range(3):
        dataset.add_package(f"rec-{i}.edf", [(f"rec-{i}.edf", 1024)])

    verified = download_batches(iam_node, pennsieve_client, dataset.node_id, "run-download", "recordings")

    assert verified["files"] == 3
    slot = slot_of(iam_node, "run-download")
    assert sorted(
        p.name for p in (iam_node.runs_mount / "slots" / slot.slot_id / "recordings" / "output").iterdir()
    )
    role = iam_node.role("download")
    assert iam_node.recorder.actions[role] >= {
        "dynamodb:BatchGetItem",
        "secretsmanager:GetSecretValue",
        "s3:GetObject",
    }
