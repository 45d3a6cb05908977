"""Whole-template checks: cfn-lint, cdk-nag AwsSolutions, and the acknowledgements' reasons."""

from __future__ import annotations

import json

import pytest
from cfnlint.api import lint

from stacks.nag import MIN_REASON_CHARS


@pytest.mark.parametrize(("which", "region"), [("node", "us-east-1"), ("variant", "eu-west-1")])
def test_cfn_lint_reports_no_error(which, region, request):
    synthesized = request.getfixturevalue(which)
    matches = lint(json.dumps(synthesized.json), regions=[region])
    errors = [str(m) for m in matches if m.rule.id.startswith("E")]
    assert errors == []


@pytest.mark.parametrize("which", ["node", "variant"])
def test_cdk_nag_aws_solutions_has_no_unacknowledged_finding(which, request):
    findings = request.getfixturevalue(which).nag_findings()
    assert [(f.rule, f.paths) for f in findings] == []


def test_the_nag_gate_would_catch_a_finding(unacknowledged_findings):
    """Without the written acknowledgements the same node has findings: the gate is live."""
    assert any(f.rule.startswith("AwsSolutions-IAM5[") for f in unacknowledged_findings)


def test_every_acknowledgement_matches_a_real_finding(node, unacknowledged_findings):
    """No stale acknowledgement: each one silences a finding on its construct or below it."""
    stale = [
        (ack.path, ack.rule)
        for ack in node.acknowledgements()
        if not any(
            finding.rule == ack.rule
            and any(p == ack.path or p.startswith(ack.path + "/") for p in finding.paths)
            for finding in unacknowledged_findings
        )
    ]
    assert stale == []


def test_acknowledgements_are_scoped_and_explained(node):
    acknowledgements = node.acknowledgements()
    assert acknowledgements, "the node acknowledges some findings; they must be visible here"
    for ack in acknowledgements:
        assert len(ack.reason) >= MIN_REASON_CHARS, ack
        assert ack.path != node.stack.node.path, f"{ack.rule} is acknowledged for the whole stack"
        # Wildcard findings are acknowledged one finding at a time, never as the bare rule.
        assert ack.rule != "AwsSolutions-IAM5", ack
    places = [(ack.path, ack.rule) for ack in acknowledgements]
    assert sorted({p for p in places if places.count(p) > 1}) == [], "one reason per finding and construct"
