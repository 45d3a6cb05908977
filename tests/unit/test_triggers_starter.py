"""Triggered runs start the way POST /runs does, and unchanged inputs start nothing new."""

from __future__ import annotations

from pennflow.api.models import RunAccepted, RunDuplicate, RunSummary
from pennflow.triggers.models import TriggeredRun
from pennflow.triggers.starter import ApiRunStarter

RUN = TriggeredRun(
    key="window-1",
    workflow="eeg-quality",
    dataset_id="N:dataset:00000000-0000-0000-0000-000000000001",
    package_ids=[],
    params={},
    layers=[],
    reason="trigger trg-1: 3 files uploaded",
)


def test_a_new_window_starts_a_run():
    requests = []

    def start(request):
        requests.append(request)
        return RunAccepted.model_construct(run_id="r-new")

    assert ApiRunStarter(start).start(RUN) == "r-new"
    assert requests[0].workflow == "eeg-quality" and requests[0].dataset_id == RUN.dataset_id


def test_a_window_whose_inputs_already_succeeded_returns_that_run():
    summary = RunSummary.model_construct(run_id="r-old")

    def start(request):
        return RunDuplicate(duplicate_of="r-old", content_key="k" * 64, run=summary, message="duplicate")

    assert ApiRunStarter(start).start(RUN) == "r-old"
