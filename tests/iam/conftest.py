"""The IAM tier: the node synthesized once per session for moto's account and region, and for each
test a moto node built from it whose calls are authorized against the roles as synthesized."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Template

from stacks.entrypoint import create_app
from tests.iam.moto_node import PENNSIEVE_SECRET, IamNode, build_node, executions_of_versions
from tests.iam.template import ACCOUNT, REGION, NodeTemplate

HERE = Path(__file__).resolve().parent
CHECKED: Counter[str] = Counter()  # requests authorized per role, over the session
ACTIONS: dict[str, set[str]] = {}


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if CHECKED:
        terminalreporter.section("IAM tier: requests authorized per synthesized role")
        for role, count in sorted(CHECKED.items()):
            terminalreporter.line(f"{role}: {count} requests, {len(ACTIONS.get(role, ()))} distinct actions")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """One xdist worker runs the tier (with `--dist loadgroup`), so the node is synthesized once."""
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.xdist_group("iam"))


@pytest.fixture(scope="session")
def synthesized(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The node's template, synthesized for moto's default account and region."""
    app, stack = create_app(
        context={"pennflow": {"account": ACCOUNT, "region": REGION}},
        outdir=str(tmp_path_factory.mktemp("cdk-out-iam")),
        with_nag=False,
    )
    app.synth()
    return json.loads(json.dumps(Template.from_stack(stack).to_json()))


@pytest.fixture
def node_template(synthesized: dict[str, Any]) -> NodeTemplate:
    return NodeTemplate(synthesized, suffix=uuid.uuid4().hex[:6])


@pytest.fixture
def iam_node(
    pennsieve_aws: None, cognito_user: Any, pennsieve: Any, node_template: NodeTemplate, tmp_path: Path
) -> Iterator[IamNode]:
    """A moto node; at teardown, every call its functions made must have been allowed."""
    secret = json.dumps({"apiKey": cognito_user.api_key, "apiSecret": cognito_user.api_secret})
    node = build_node(node_template, tmp_path / "runs", {PENNSIEVE_SECRET: secret})
    node.extra_environment.update(
        {"PENNSIEVE_API_HOST": pennsieve.api_host, "PENNSIEVE_API2_HOST": pennsieve.api2_host}
    )
    with node.recorder.installed(), executions_of_versions():
        yield node
    CHECKED.update(node.recorder.checked)
    for role, actions in node.recorder.actions.items():
        ACTIONS.setdefault(role, set()).update(actions)
    node.recorder.assert_clean()
