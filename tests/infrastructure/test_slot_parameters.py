"""Each run slot's SSM parameters (run id, SESSION_TOKEN): written by the runs manager at lease
time, read only by ECS through the task execution role, named to the lifecycle functions."""

from __future__ import annotations

import json

from stacks import constants as C
from tests.infrastructure.test_functions import function_properties


def _statements_with(node, role, action: str) -> list[dict]:
    return [s for s in node.role_statements(role) if action in json.dumps(s.get("Action"))]


def test_the_lifecycle_functions_know_the_slot_parameter_prefix_and_deployment_mode(node):
    environment = function_properties(node, "prepare")["Environment"]["Variables"]
    assert environment["SLOT_PARAMETER_PREFIX"] == C.slot_parameter_prefix("pennflow")
    assert environment["DEPLOYMENT_MODE"] in ("secure", "compliant")


def test_only_the_execution_role_reads_and_only_the_runs_manager_writes_slot_parameters(node):
    compute = node.stack.compute
    reads = _statements_with(node, compute.execution_role, "ssm:GetParameters")
    assert len(reads) == 1 and reads[0]["Action"] == "ssm:GetParameters"
    assert "parameter/pennflow/pennflow/slots/*" in json.dumps(reads[0]["Resource"])
    for role in compute.task_roles:  # the processors themselves cannot read another slot's token
        assert not _statements_with(node, role, "ssm:")
    writes = _statements_with(node, node.stack.functions.roles["runs_manager"], "ssm:PutParameter")
    assert len(writes) == 1 and "parameter/pennflow/pennflow/slots/*" in json.dumps(writes[0]["Resource"])
