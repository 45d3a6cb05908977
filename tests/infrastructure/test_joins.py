"""The join function and table: least privilege, TTL, and the wiring the compiled joins need."""

from __future__ import annotations

from stacks import constants as C
from tests.infrastructure.conftest import as_list

TABLE_ACTIONS = ("dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:BatchGetItem")


def join_function(node) -> dict:
    name = C.function_name(node.stack.settings.node_name, "join")
    found = [
        r["Properties"]
        for r in node.resources("AWS::Lambda::Function").values()
        if r["Properties"].get("FunctionName") == name
    ]
    assert len(found) == 1, f"one function {name}"
    return found[0]


def test_the_join_table_is_keyed_by_run_and_item_and_expires(node):
    table = node.json["Resources"][node.logical_id(node.stack.joins.table)]["Properties"]
    assert [k["AttributeName"] for k in table["KeySchema"]] == ["runId", "item"]
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expiresAt", "Enabled": True}
    assert table["BillingMode"] == "PAY_PER_REQUEST"


def test_the_join_function_reads_its_table_from_the_environment(node):
    environment = join_function(node)["Environment"]["Variables"]
    assert environment[C.ENV["joins_table"]] == {"Ref": node.logical_id(node.stack.joins.table)}
    assert join_function(node)["Handler"] == "lambdas.join.handler"


def test_the_join_role_may_only_touch_its_table_and_release_the_nodes_state_machines(node):
    role = node.stack.functions.roles["join"]
    table_id = node.logical_id(node.stack.joins.table)
    by_action: dict[str, list] = {}
    for statement in node.role_statements(role):
        for action in as_list(statement["Action"]):
            by_action.setdefault(action, []).extend(as_list(statement["Resource"]))
    for action in TABLE_ACTIONS:
        assert by_action[action] == [{"Fn::GetAtt": [table_id, "Arn"]}]
    assert {a for a in by_action if a.startswith("dynamodb:")} == set(TABLE_ACTIONS)
    [release] = by_action["states:SendTaskSuccess"]
    text = str(release)
    prefix = C.state_machine_prefix(node.stack.settings.node_name)
    assert f":stateMachine:{prefix}*" in text, release
    assert "states:SendTaskFailure" not in by_action and "states:*" not in by_action
    assert all(
        r != "*"
        for action, resources in by_action.items()
        if not action.startswith("xray:")
        for r in resources
    )


def test_the_state_machines_may_invoke_the_join_function(node):
    function_id = node.logical_id(node.stack.joins.function)
    statements = node.role_statements(node.stack.orchestration.role)
    invokable = [
        r
        for s in statements
        if "lambda:InvokeFunction" in as_list(s["Action"])
        for r in as_list(s["Resource"])
    ]
    assert {"Fn::GetAtt": [function_id, "Arn"]} in invokable


def test_run_starters_pass_the_join_function_to_every_run(node):
    name = C.function_name(node.stack.settings.node_name, "join")
    environments = {
        r["Properties"]["FunctionName"]: r["Properties"]["Environment"]["Variables"]
        for r in node.resources("AWS::Lambda::Function").values()
        if isinstance(r["Properties"].get("FunctionName"), str)
    }
    for starter in C.RUNS_MANAGER_LAMBDAS:
        variables = environments[C.function_name(node.stack.settings.node_name, starter)]
        assert variables[C.ENV["join_function"]] == name
