"""Synthesizes the real node once per test session (no Docker, no AWS) for the template tests."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from aws_cdk import App, Validations
from aws_cdk.assertions import Template
from cdk_nag import AwsSolutionsChecks

from stacks import constants as C
from stacks.entrypoint import PROJECT_ROOT, create_app
from stacks.node_stack import NodeStack

# A node that reuses a VPC, in a fixed account and region, with e-mail alarms and 3 run slots.
VARIANT_CONTEXT = {
    "pennflow": {
        "nodeName": "lab",
        "account": "123456789012",
        "region": "eu-west-1",
        "vpc": {
            "vpcId": "vpc-0a1b2c3d4e5f60718",
            "privateSubnetIds": ["subnet-0a1b2c3d4e5f60001", "subnet-0a1b2c3d4e5f60002"],
            "availabilityZones": ["eu-west-1a", "eu-west-1b"],
            "privateRouteTableIds": ["rtb-0a1b2c3d4e5f60001", "rtb-0a1b2c3d4e5f60002"],
        },
        "natGateways": 0,
        "alarmEmail": "ops@example.org",
        "runSlots": 3,
        "reserveConcurrency": False,
        "retentionDays": {"runFiles": 14, "logs": 7},
        # Run ends to a webhook and another e-mail, a monthly budget and a per-run cost ceiling.
        "notifyEmail": "runs@example.org",
        "notifyWebhook": True,
        "monthlyBudget": 300,
        "runCostCeiling": 10,
        "costPrices": {"natGbProcessed": 0.048},
        # Notebook sessions on (stacks/notebooks.py), for a role with a path and a user.
        "interactive": True,
        "notebookPrincipals": [
            "arn:aws:iam::123456789012:role/lab/analyst",
            "arn:aws:iam::123456789012:user/jo",
        ],
        "notebookIdleMinutes": 30,
    }
}

# The same node where AWS has other partitions: China and GovCloud (a fresh VPC, 2 run slots).
PARTITION_REGIONS = {"aws-cn": "cn-north-1", "aws-us-gov": "us-gov-west-1"}


def region_context(region: str) -> dict[str, Any]:
    return {"pennflow": {"nodeName": "lab", "account": "123456789012", "region": region, "runSlots": 2}}


# A second node beside the variant, in the same account and region, whose name starts with the first's.
NEIGHBOUR_CONTEXT = {"pennflow": {**VARIANT_CONTEXT["pennflow"], "nodeName": "lab-dev"}}

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """One xdist worker runs all of these (with `--dist loadgroup`), so the node is synthesized once."""
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.xdist_group("infrastructure"))


@dataclass(frozen=True)
class Acknowledgement:
    path: str  # construct path the acknowledgement is attached to
    rule: str
    reason: str


@dataclass(frozen=True)
class Finding:
    rule: str
    paths: tuple[str, ...]


@dataclass
class SynthesizedNode:
    app: App
    stack: NodeStack
    template: Template
    outdir: Path
    json: dict[str, Any]  # the template as a dict, read once (each to_json() crosses into node.js)

    def resources(self, resource_type: str) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.json["Resources"].items() if v["Type"] == resource_type}

    def logical_id(self, construct: Any) -> str:
        return self.stack.resolve(self.stack.get_logical_id(construct.node.default_child))

    def role_statements(self, role: Any) -> list[dict[str, Any]]:
        """Every identity-policy statement of a role: inline policies and attached AWS::IAM::Policy."""
        role_id = self.logical_id(role)
        statements = []
        for policy in self.resources("AWS::IAM::Policy").values():
            if {"Ref": role_id} in policy["Properties"].get("Roles", []):
                statements += policy["Properties"]["PolicyDocument"]["Statement"]
        role = self.json["Resources"][role_id]["Properties"]
        for inline in role.get("Policies", []):
            statements += inline["PolicyDocument"]["Statement"]
        for attached in role.get("ManagedPolicyArns", []):
            if isinstance(attached, dict) and "Ref" in attached:  # the stack's own managed policies
                statements += self.json["Resources"][attached["Ref"]]["Properties"]["PolicyDocument"][
                    "Statement"
                ]
        return statements

    def role_actions(self, role: Any) -> set[str]:
        return {action for s in self.role_statements(role) for action in as_list(s["Action"])}

    def nag_findings(self) -> list[Finding]:
        report = AwsSolutionsChecks(verbose=True).validate_scope(self.app)
        return [
            Finding(v.rule_name, tuple(r.construct_path or "" for r in v.violating_resources))
            for v in report.violations
        ]

    def acknowledgements(self) -> list[Acknowledgement]:
        key = Validations.ACKNOWLEDGED_RULES_METADATA_KEY
        found = []
        for construct in self.app.node.find_all():
            for entry in construct.node.metadata:
                if entry.type == key and entry.data:
                    for recorded, reason in entry.data.items():
                        rule = re.sub(r"^annotation::", "", recorded, flags=re.IGNORECASE)
                        if rule.startswith("AwsSolutions-"):  # CDK records its own for its built-in checks
                            found.append(Acknowledgement(construct.node.path, rule, reason))
        return found


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def synthesize(
    outdir: Path, context: dict[str, Any] | None = None, project_root: Path = PROJECT_ROOT
) -> SynthesizedNode:
    app, stack = create_app(context=context, outdir=str(outdir), with_nag=False, project_root=project_root)
    app.synth()
    template = Template.from_stack(stack)
    return SynthesizedNode(app, stack, template, outdir, template.to_json())


def project_copy(root: Path, *, with_dependencies: bool) -> Path:
    """The project as synth sees it, without whatever a developer built locally (build/lambda-deps)."""
    shutil.copy(PROJECT_ROOT / "cdk.json", root / "cdk.json")
    for folder in ("pennflow", "lambdas", "workflows"):
        (root / folder).symlink_to(PROJECT_ROOT / folder, target_is_directory=True)
    if with_dependencies:
        dependencies = root / C.DEPENDENCY_LAYER_DIR / "python" / "yaml"
        dependencies.mkdir(parents=True)
        (dependencies / "__init__.py").write_text("")
    return root


@pytest.fixture(scope="session")
def node(tmp_path_factory: pytest.TempPathFactory) -> SynthesizedNode:
    """The node exactly as `cdk synth` builds it from cdk.json (on a fresh checkout)."""
    project = project_copy(tmp_path_factory.mktemp("project"), with_dependencies=False)
    return synthesize(tmp_path_factory.mktemp("cdk-out"), project_root=project)


@pytest.fixture(scope="session")
def variant(tmp_path_factory: pytest.TempPathFactory) -> SynthesizedNode:
    """Synthesized from a copy of the project that also has the Lambda dependency folder built."""
    project = project_copy(tmp_path_factory.mktemp("project-variant"), with_dependencies=True)
    return synthesize(tmp_path_factory.mktemp("cdk-out-variant"), VARIANT_CONTEXT, project)


@pytest.fixture(scope="session", params=sorted(PARTITION_REGIONS))
def partition_node(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> SynthesizedNode:
    """The node synthesized for China and for GovCloud, once each per session (``request.param``
    is the partition)."""
    project = project_copy(tmp_path_factory.mktemp(f"project-{request.param}"), with_dependencies=True)
    context = region_context(PARTITION_REGIONS[request.param])
    return synthesize(tmp_path_factory.mktemp(f"cdk-out-{request.param}"), context, project)


@pytest.fixture(scope="session")
def neighbour(tmp_path_factory: pytest.TempPathFactory) -> SynthesizedNode:
    """Node "lab-dev" in the variant's account and region (the variant is node "lab")."""
    project = project_copy(tmp_path_factory.mktemp("project-neighbour"), with_dependencies=True)
    return synthesize(tmp_path_factory.mktemp("cdk-out-neighbour"), NEIGHBOUR_CONTEXT, project)


class _NoAcknowledgements:
    """Stands in for `Validations` so that a build records no acknowledgement at all."""

    @staticmethod
    def of(_construct: Any) -> _NoAcknowledgements:
        return _NoAcknowledgements()

    def acknowledge(self, *_rules: Any) -> None:
        return None


@pytest.fixture(scope="session")
def unacknowledged_findings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Finding]]:
    """What cdk-nag reports on the same node when no finding is acknowledged."""
    with mock.patch("stacks.nag.Validations", _NoAcknowledgements):
        app, _ = create_app(outdir=str(tmp_path_factory.mktemp("cdk-out-raw")), with_nag=False)
    report = AwsSolutionsChecks().validate_scope(app)
    yield [
        Finding(v.rule_name, tuple(r.construct_path or "" for r in v.violating_resources))
        for v in report.violations
    ]
