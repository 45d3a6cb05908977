"""Correct wherever AWS runs, and nothing shared: partitions, and two nodes in one account.

The node is synthesized for China (cn-north-1) and GovCloud (us-gov-west-1); with a fixed region
CDK writes the partition as a literal, so any ``arn:aws:`` left in those templates was written by
hand where the partition belongs. Nodes ``lab`` and ``lab-dev`` share an account and a region: no
IAM resource pattern or event prefix of one may match a name or ARN of the other.
"""

from __future__ import annotations

import json
import re
from fnmatch import fnmatchcase
from typing import Any

from stacks import constants as C
from tests.infrastructure.conftest import PARTITION_REGIONS, SynthesizedNode, as_list

ACCOUNT = "123456789012"
REGION = "eu-west-1"  # the variant's and its neighbour's


def test_no_arn_is_written_in_the_commercial_partition(partition_node: SynthesizedNode):
    region = partition_node.stack.region
    partition = next(p for p, r in PARTITION_REGIONS.items() if r == region)
    text = json.dumps(partition_node.json)
    assert f"arn:{partition}:" in text  # CDK wrote the partition as a literal for this region
    leftovers = sorted({m.group(0) for m in re.finditer(r"arn:aws:[a-z0-9-]*:[^\"]{0,40}", text)})
    assert leftovers == [], leftovers


def test_state_machines_integrate_in_the_partition_of_their_region(partition_node: SynthesizedNode):
    region = partition_node.stack.region
    partition = next(p for p, r in PARTITION_REGIONS.items() if r == region)
    machines = partition_node.resources("AWS::StepFunctions::StateMachine").values()
    assert machines
    for machine in machines:
        definition = json.loads(machine["Properties"]["DefinitionString"])
        assert f'"arn:{partition}:states:::ecs:runTask.sync"' in json.dumps(definition)


def test_slot_role_template_names_the_partition(partition_node: SynthesizedNode):
    region = partition_node.stack.region
    partition = next(p for p, r in PARTITION_REGIONS.items() if r == region)
    prepare = partition_node.json["Resources"][
        partition_node.logical_id(partition_node.stack.functions["prepare"])
    ]
    template = prepare["Properties"]["Environment"]["Variables"]["SLOT_TASK_ROLE_ARN_TEMPLATE"]
    assert template == f"arn:{partition}:iam::{ACCOUNT}:role/lab_{region}_{{slot}}-{{kind}}"


# --- two nodes, one account ------------------------------------------------------------------------


def _text(value: Any) -> str | None:
    """A pattern or name as text; an intrinsic (a reference to the node's own resource) is unique to
    its node, so it becomes a marker that matches nothing of the other node."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Fn::Join" in value:
        delimiter, parts = value["Fn::Join"]
        texts = [_text(part) for part in parts]
        return delimiter.join(t if t is not None else "\x00ref\x00" for t in texts)
    if isinstance(value, dict) and value.get("Ref") in ("AWS::Region", "AWS::AccountId", "AWS::Partition"):
        return {"AWS::Region": REGION, "AWS::AccountId": ACCOUNT, "AWS::Partition": "aws"}[value["Ref"]]
    return None


def _policy_documents(node: SynthesizedNode) -> list[dict]:
    documents = []
    for resource in node.json["Resources"].values():
        properties = resource.get("Properties", {})
        for key in ("PolicyDocument", "FileSystemPolicy"):
            if key in properties:
                documents.append(properties[key])
        for inline in properties.get("Policies", []) if resource["Type"] == "AWS::IAM::Role" else []:
            documents.append(inline["PolicyDocument"])
    return documents


def iam_patterns(node: SynthesizedNode) -> set[str]:
    """Every wildcard resource (and ARN condition value) of the node's IAM policies, as text."""
    found = set()
    for document in _policy_documents(node):
        for statement in document["Statement"]:
            values = as_list(statement.get("Resource"))
            for operator, keys in statement.get("Condition", {}).items():
                if operator.startswith(("ArnLike", "StringLike")):
                    values += [v for value in keys.values() for v in as_list(value)]
            found |= {t for t in map(_text, values) if t and "*" in t and t != "*"}
    return found


def event_prefixes(node: SynthesizedNode) -> set[str]:
    found = set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            if "prefix" in value and (text := _text(value["prefix"])):
                found.add(text)
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    for rule in node.resources("AWS::Events::Rule").values():
        walk(rule["Properties"].get("EventPattern", {}))  # a schedule has none
    return found


def names_and_arns(node: SynthesizedNode) -> set[str]:
    """The node's named resources, and the names its runtime gives what it creates (state machines,
    executions, task-definition families), as ARNs in the shared account and region."""
    node_name = node.stack.settings.node_name
    arn = f"arn:aws:{{}}:{REGION}:{ACCOUNT}:{{}}"
    out = set()
    for logical_id, function in node.resources("AWS::Lambda::Function").items():
        # A function the stack does not name (a custom resource's) gets "<stack>-<logical id>-<suffix>".
        name = function["Properties"].get("FunctionName", f"{node.stack.stack_name}-{logical_id}-X")
        out.add(arn.format("lambda", f"function:{name}"))
    workflows = [
        m["Properties"]["StateMachineName"]
        for m in node.resources("AWS::StepFunctions::StateMachine").values()
    ]
    workflows.append(C.state_machine_prefix(node_name) + "registered-at-runtime")
    for name in workflows:
        out.add(arn.format("states", f"stateMachine:{name}"))
        out.add(arn.format("states", f"stateMachine:{name}:1"))
        out.add(arn.format("states", f"execution:{name}:run-1"))
    families = [C.task_family_prefix(node_name) + "0123456789abcdef"]
    families += [C.layer_job_family(node_name, kind) for kind in ("build", "populate", "clean")]
    out |= {arn.format("ecs", f"task-definition/{family}:1") for family in families}
    for role in node.resources("AWS::IAM::Role").values():
        if name := _text(role["Properties"].get("RoleName")):
            out.add(f"arn:aws:iam::{ACCOUNT}:role/{name}")
    return out


def test_neither_node_grants_anything_of_the_other(variant: SynthesizedNode, neighbour: SynthesizedNode):
    for this, other in ((variant, neighbour), (neighbour, variant)):
        patterns, prefixes, theirs = iam_patterns(this), event_prefixes(this), names_and_arns(other)
        assert patterns and prefixes and theirs
        crossing = {(p, n) for p in patterns for n in theirs if fnmatchcase(n, p)}
        crossing |= {(p, n) for p in prefixes for n in theirs if n.startswith(p)}
        assert crossing == set(), (this.stack.settings.node_name, sorted(crossing)[:5])


def test_the_patterns_do_match_the_node_own_names(variant: SynthesizedNode):
    """The check above is not vacuous: the same patterns reach what the node itself creates."""
    patterns, ours = iam_patterns(variant), names_and_arns(variant)
    reached = {n for n in ours if any(fnmatchcase(n, p) for p in patterns)}
    expected = {
        f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:lab_registered-at-runtime",
        f"arn:aws:states:{REGION}:{ACCOUNT}:execution:lab_registered-at-runtime:run-1",
        f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/lab_proc-0123456789abcdef:1",
        f"arn:aws:iam::{ACCOUNT}:role/lab_{REGION}_slot-00-processor",
        f"arn:aws:iam::{ACCOUNT}:role/lab_{REGION}_slot-02-builtin",
    }
    assert expected <= reached, expected - reached
    # and the old "<node>-" prefix would have crossed over
    assert fnmatchcase("lab-dev-x", "lab-*")
