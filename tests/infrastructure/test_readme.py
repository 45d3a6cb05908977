"""The README's deploy section names only what the stack makes: its outputs, the secret to fill, the dashboard."""

from __future__ import annotations

import re

import pytest

from stacks.entrypoint import PROJECT_ROOT

SECTION = "## Deploying a compute node (AWS)"


def deploy_section() -> str:
    text = (PROJECT_ROOT / "README.md").read_text()
    start = text.index(SECTION) + len(SECTION)
    end = text.find("\n## ", start)
    return text[start : end if end >= 0 else None]


def outputs_named(section: str) -> set[str]:
    """`<Name output>` placeholders and "the `Name` output" mentions."""
    return set(re.findall(r"<(\w+) output>", section)) | set(re.findall(r"the `(\w+)` output", section))


def test_the_section_is_found_and_names_its_outputs() -> None:
    assert {"PennsieveSecretArn", "ApiUrl"} <= outputs_named(deploy_section())


@pytest.mark.parametrize("synthesized", ["node", "variant"])
def test_every_output_the_deploy_section_names_exists(
    synthesized: str, request: pytest.FixtureRequest
) -> None:
    outputs = request.getfixturevalue(synthesized).json["Outputs"]
    missing = outputs_named(deploy_section()) - set(outputs)
    assert not missing, (
        f"README names outputs the stack does not have: {sorted(missing)}; it has {sorted(outputs)}"
    )


def test_the_secret_to_fill_is_the_pennsieve_secret_output(node) -> None:
    (placeholder,) = re.findall(r"put-secret-value --secret-id <(\w+) output>", deploy_section())
    value = node.json["Outputs"][placeholder]["Value"]
    assert value == {"Ref": node.logical_id(node.stack.compute.pennsieve_secret)}
    assert node.json["Resources"][value["Ref"]]["Type"] == "AWS::SecretsManager::Secret"


@pytest.mark.parametrize("synthesized", ["node", "variant"])
def test_the_dashboard_named_is_the_nodes(synthesized: str, request: pytest.FixtureRequest) -> None:
    node = request.getfixturevalue(synthesized)
    (suffix,) = re.findall(r"dashboard\s+`<nodeName>([^`]*)`", deploy_section())
    (dashboard,) = node.resources("AWS::CloudWatch::Dashboard").values()
    assert dashboard["Properties"]["DashboardName"] == node.stack.settings.node_name + suffix
