"""Trigger rule and dataset event models: what is accepted, and the field each refusal names."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from pennflow.triggers.models import (
    EventBridgeDatasetEvent,
    FileRef,
    PendingWindow,
    TriggerRule,
    TriggerRuleRequest,
    TriggerView,
)

DATASET = "N:dataset:6f1c0a52-3d3b-4a4e-9a57-0d9d3f7a1c11"


def request(**changes) -> dict:
    return {"datasetId": DATASET, "workflow": "eeg-quality", **changes}


def faults(data: dict) -> set[str]:
    with pytest.raises(ValidationError) as caught:
        TriggerRuleRequest.model_validate(data)
    return {".".join(str(p) for p in e["loc"]) for e in caught.value.errors()}


def test_a_minimal_rule_gets_the_defaults():
    rule = TriggerRuleRequest.model_validate(request())
    assert (rule.debounce_seconds, rule.max_wait_seconds, rule.enabled, rule.file_glob) == (
        60,
        3600,
        True,
        None,
    )
    assert rule.scope == "uploads" and rule.params == {} and rule.layers == []


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"datasetId": "N:dataset:123"}, "datasetId"),
        ({"datasetId": "N:package:6f1c0a52-3d3b-4a4e-9a57-0d9d3f7a1c11"}, "datasetId"),
        ({"workflow": "Not A Name"}, "workflow"),
        ({"debounceSeconds": 0}, "debounceSeconds"),
        ({"debounceSeconds": 901}, "debounceSeconds"),
        ({"debounceSeconds": "60"}, "debounceSeconds"),  # strict: no silent conversions
        ({"debounceSeconds": True}, "debounceSeconds"),
        ({"debounceSeconds": 120, "maxWaitSeconds": 60}, "maxWaitSeconds"),
        ({"maxWaitSeconds": 86401}, "maxWaitSeconds"),
        ({"fileGlob": ""}, "fileGlob"),
        ({"fileGlob": "a\x00b"}, "fileGlob"),
        ({"params": {"WINDOW": 30}}, "params.WINDOW"),
        ({"params": {"bad key!": "x"}}, "params.bad key!.[key]"),
        ({"layers": ["Bad Layer"]}, "layers.0"),
        ({"enabled": "yes"}, "enabled"),
        ({"scope": "everything"}, "scope"),
        ({"datasetID": DATASET}, "datasetID"),  # misspelt: refused, not ignored
    ],
)
def test_a_bad_field_is_named(changes, field):
    assert field in faults(request(**changes))


def test_missing_fields_are_named():
    assert faults({}) == {"datasetId", "workflow"}


def test_glob_matching_is_fnmatch_on_the_whole_path_case_sensitive():
    rule = TriggerRule.create(
        TriggerRuleRequest.model_validate(request(fileGlob="sub-*/eeg/*.edf")),
        now=datetime.now(UTC),
        created_by=None,
    )
    files = [
        FileRef(path=p)
        for p in ("sub-01/eeg/a.edf", "sub-01/anat/a.edf", "sub-01/eeg/a.EDF", "x/sub-01/eeg/a.edf")
    ]
    assert [f.path for f in rule.matching_files(files)] == ["sub-01/eeg/a.edf"]
    everything = rule.model_copy(update={"file_glob": None})
    assert len(everything.matching_files(files)) == 4


def test_an_eventbridge_event_fills_the_event_id_and_type_from_the_envelope():
    event = EventBridgeDatasetEvent.model_validate(
        {
            "id": "7bf73129-1428-4cd3-a780-95db273d1602",
            "source": "pennflow.datasets",
            "detail-type": "Dataset Files Added",
            "detail": {"datasetId": DATASET, "files": [{"path": "a.edf"}]},
        }
    )
    assert event.detail.event_id == "7bf73129-1428-4cd3-a780-95db273d1602"
    assert event.detail.event_type == "files.uploaded"


@pytest.mark.parametrize(
    ("event", "field"),
    [
        ({"id": "1", "source": "aws.s3", "detail-type": "Dataset Files Added", "detail": {}}, "source"),
        ({"id": "1", "source": "pennflow.datasets", "detail-type": "Other", "detail": {}}, "detail-type"),
        (
            {"id": "1", "source": "pennflow.datasets", "detail-type": "Dataset Files Added", "detail": {}},
            "detail.datasetId",
        ),
        ({"id": "1", "source": "pennflow.datasets", "detail-type": "Dataset Files Added"}, "detail"),
    ],
)
def test_a_malformed_eventbridge_event_names_the_field(event, field):
    with pytest.raises(ValidationError) as caught:
        EventBridgeDatasetEvent.model_validate(event)
    assert field in {".".join(str(p) for p in e["loc"]) for e in caught.value.errors()}


def test_a_window_is_due_after_the_quiet_period_but_never_after_the_max_wait():
    window = PendingWindow(
        rule_id="r",
        window_id="w",
        dataset_id=DATASET,
        opened_at=1000,
        last_event_at=1000,
        debounce_seconds=60,
        max_wait_seconds=300,
        first_event_id="e",
    )
    assert window.due_at == 1060
    assert window.model_copy(update={"last_event_at": 1200}).due_at == 1260
    assert window.model_copy(update={"last_event_at": 1290}).due_at == 1300


def test_the_view_is_camel_case_and_shows_the_open_window():
    rule = TriggerRule.create(
        TriggerRuleRequest.model_validate(request()), now=datetime.now(UTC), created_by="me"
    )
    window = PendingWindow(
        rule_id=rule.rule_id,
        window_id="w",
        dataset_id=DATASET,
        opened_at=1000,
        last_event_at=1010,
        debounce_seconds=60,
        max_wait_seconds=300,
        first_event_id="e",
        event_count=2,
        file_count=3,
    )
    view = TriggerView.of(rule, window).model_dump(mode="json", by_alias=True)
    assert view["ruleId"] == rule.rule_id and view["debounceSeconds"] == 60
    assert view["pending"]["events"] == 2 and view["pending"]["firesAt"] == "1970-01-01T00:17:50Z"
