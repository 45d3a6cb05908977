"""Node settings (cdk.json context): defaults, and one precise message per bad value."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stacks.settings import NodeSettings, SettingsError, load_settings

PROJECT_ROOT = Path(__file__).resolve().parents[2]
GOOD_VPC = {
    "vpcId": "vpc-0a1b2c3d",
    "privateSubnetIds": ["subnet-0a1b2c3d", "subnet-1a1b2c3d"],
    "availabilityZones": ["us-east-1a", "us-east-1b"],
}


def errors_of(raw: object) -> list[str]:
    with pytest.raises(SettingsError) as caught:
        load_settings(raw)
    return str(caught.value).splitlines()


def test_cdk_json_settings_are_the_documented_defaults():
    context = json.loads((PROJECT_ROOT / "cdk.json").read_text())["context"]
    assert load_settings(context["pennflow"]) == NodeSettings()


def test_defaults_create_a_vpc_with_one_nat_and_ten_slots():
    settings = load_settings(None)
    assert (settings.vpc, settings.nat_gateways, settings.run_slots) == (None, 1, 10)
    assert settings.workflows_folder == "workflows"
    assert not settings.reuses_vpc


def test_existing_vpc_is_read_from_its_three_ids():
    settings = load_settings({"vpc": GOOD_VPC, "natGateways": 0})
    assert settings.reuses_vpc
    assert settings.vpc.private_subnet_ids == GOOD_VPC["privateSubnetIds"]


def test_json_string_from_the_command_line_is_accepted():
    assert load_settings('{"runSlots": 4}').run_slots == 4


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"runSlots": 80}, "pennflow.runSlots: Input should be less than or equal to 50 (got 80)"),
        ({"natGateways": 2}, "pennflow.natGateways: Input should be 0 or 1 (got 2)"),
        (
            {"vpc": "old"},
            'pennflow.vpc: expected "new" or an object {vpcId, privateSubnetIds, availabilityZones}',
        ),
        ({"vpc": {**GOOD_VPC, "vpcId": "vpc-1"}}, "pennflow.vpc.vpcId: String should match pattern"),
        (
            {"vpc": {**GOOD_VPC, "availabilityZones": ["us-east-1a"]}},
            "pennflow.vpc: privateSubnetIds has 2 entries",
        ),
        ({"retentionDays": {"logs": 8}}, "pennflow.retentionDays.logs: CloudWatch Logs accepts only 1, 3, 5"),
        ({"alarmEmail": "not-an-address"}, "pennflow.alarmEmail: String should match pattern"),
        ({"nodeName": "Node_1"}, "pennflow.nodeName: String should match pattern"),
        ({"nodeName": "lab_dev"}, "pennflow.nodeName: String should match pattern"),  # the name separator
        ({"nodeName": "a" * 16}, "pennflow.nodeName: String should have at most 15 characters"),
        ({"workflowsFolder": "../elsewhere"}, "pennflow.workflowsFolder: give a folder inside the project"),
        ({"runSlot": 3}, "pennflow.runSlot: unknown setting"),
        (
            {"interfaceEndpoints": False, "natGateways": 0},
            "pennflow: interfaceEndpoints false needs natGateways 1",
        ),
        ("{oops", "pennflow: not valid JSON"),
        ([1, 2], "pennflow: expected an object of settings, got list"),
    ],
)
def test_bad_value_is_named_precisely(raw, expected):
    assert any(line.startswith(expected) for line in errors_of(raw)), errors_of(raw)


def test_every_fault_is_listed_at_once():
    lines = errors_of({"runSlots": 0, "natGateways": 3, "alarmEmail": "x"})
    assert [line.split(":")[0] for line in lines] == [
        "pennflow.natGateways",
        "pennflow.alarmEmail",
        "pennflow.runSlots",
    ]
